"""Tiny tokenizers trained here on a few sentences (no downloads) and small random Hugging Face text models
saved with them by ``save_pretrained``: a GPT-2-style byte-level BPE, a SentencePiece-style BPE (``▁``) and a
BERT WordPiece tokenizer, each wrapped in ``PreTrainedTokenizerFast``."""
from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog played in the garden",
    "heat maps show which words matter", "relevance flows back through every layer",
    "the quick brown fox jumps over the lazy dog", "naïve café crème brûlée", "line one\nline two",
]


def byte_level_tokenizer():
    """GPT-2's scheme: byte-level pre-tokenizer (spaces become 'Ġ'), BPE, byte-level decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def metaspace_tokenizer():
    """SentencePiece's scheme: spaces become '▁' before BPE, the decoder turns them back (and drops the first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def wordpiece_tokenizer():
    """BERT's scheme: whitespace/punctuation split, WordPiece with '##' continuations, [CLS] … [SEP] around."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


TOKENIZERS = {"byte-level": byte_level_tokenizer, "metaspace": metaspace_tokenizer, "wordpiece": wordpiece_tokenizer}


def save_text_model(family: str, folder: Path, seed: int = 0) -> Path:
    """A small random ``family`` model ("llama", "gpt2", "bert") with its tokenizer, saved in ``folder``."""
    import transformers
    torch.manual_seed(seed)
    if family == "llama":
        tokenizer = metaspace_tokenizer()
        config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                                          eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
        model = transformers.LlamaForCausalLM(config)
    elif family == "gpt2":
        tokenizer = byte_level_tokenizer()
        config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=64,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = transformers.GPT2LMHeadModel(config)
    elif family == "bert":
        tokenizer = wordpiece_tokenizer()
        config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                         num_labels=3, pad_token_id=tokenizer.pad_token_id)
        model = transformers.BertForSequenceClassification(config)
    else:
        raise ValueError(family)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
