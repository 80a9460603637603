"""Small random Hugging Face text models, one per family, each built from its own ``*Config`` (float64, eval)."""
from __future__ import annotations

import torch

VOCAB = 60
WIDTH, LAYERS, HEADS, KV_HEADS = 16, 2, 4, 2


def _decoder_config(config_type, **extra):
    return config_type(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64,
                       **extra)


def _encoder_config(config_type, **extra):
    return config_type(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, max_position_embeddings=64, num_labels=3, **extra)


def build(family: str, seed: int = 0, attn_implementation: str | None = None):
    """The family's model with random weights (non-trivial norms and biases), in float64 and eval mode."""
    import transformers as hf
    torch.manual_seed(seed)
    causal = {
        "llama": lambda: hf.LlamaForCausalLM(_decoder_config(hf.LlamaConfig)),
        "mistral": lambda: hf.MistralForCausalLM(_decoder_config(hf.MistralConfig, sliding_window=5)),
        "qwen2": lambda: hf.Qwen2ForCausalLM(_decoder_config(hf.Qwen2Config)),
        "qwen3": lambda: hf.Qwen3ForCausalLM(_decoder_config(hf.Qwen3Config, head_dim=4)),
        "gemma2": lambda: hf.Gemma2ForCausalLM(_decoder_config(hf.Gemma2Config, head_dim=4, sliding_window=5)),
        "gemma3": lambda: hf.Gemma3ForCausalLM(_decoder_config(hf.Gemma3TextConfig, head_dim=4, sliding_window=5)),
        "phi3": lambda: hf.Phi3ForCausalLM(_decoder_config(hf.Phi3Config, pad_token_id=0)),
        "gpt2": lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=LAYERS,
                                                         n_head=HEADS, n_positions=64)),
        "gpt_neox": lambda: hf.GPTNeoXForCausalLM(hf.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=64)),
        "opt": lambda: hf.OPTForCausalLM(hf.OPTConfig(
            vocab_size=VOCAB, hidden_size=WIDTH, ffn_dim=2 * WIDTH, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=64, word_embed_proj_dim=WIDTH, pad_token_id=1)),
    }
    encoders = {
        "bert": lambda: hf.BertForSequenceClassification(_encoder_config(hf.BertConfig)),
        "roberta": lambda: hf.RobertaForSequenceClassification(_encoder_config(hf.RobertaConfig, pad_token_id=1)),
        "distilbert": lambda: hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
            vocab_size=VOCAB, dim=WIDTH, hidden_dim=2 * WIDTH, n_layers=LAYERS, n_heads=HEADS,
            max_position_embeddings=64, num_labels=3)),
        "electra": lambda: hf.ElectraForSequenceClassification(_encoder_config(hf.ElectraConfig, embedding_size=8)),
    }
    model = {**causal, **encoders}[family]()
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:   # norms away from 1, biases away from 0: their rules matter
                p.add_(torch.randn_like(p) * 0.2)
    return model.double().eval()


CAUSAL = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox", "opt")
ENCODERS = ("bert", "roberta", "distilbert", "electra")
LXT_SHIPS = ("llama", "qwen2", "qwen3", "gemma3", "gpt2")
