"""lrpc.explain_generation: the one-forward generation matrix against each prefix explained alone by an
independently compiled module, closed accounting per row, and greedy decoding against Hugging Face's generate."""
from __future__ import annotations

import pytest
import torch

import lrpc

transformers = pytest.importorskip("transformers")


def small_llama(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      bos_token_id=None, eos_token_id=None)   # generate must not stop early
    return transformers.LlamaForCausalLM(config).double().eval()


def small_gpt2(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                     bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).double().eval()


@pytest.mark.parametrize("preset", ["attnlrp", pytest.param("cp-lrp", marks=pytest.mark.slow)])
def test_matrix_rows_equal_each_prefix_explained_alone(preset):
    """Row i of the one-forward matrix = the text up to generated token i explained by its own explainer call on
    its next token (the last-real-token path of lrpc.compile on token ids)."""
    model = small_llama(0)
    prompt = torch.randint(40, (2, 4), generator=torch.Generator().manual_seed(1))
    explainer = lrpc.compile(model, lrpc.preset(preset), example_input=prompt)
    generation = lrpc.explain_generation(model, prompt, max_new_tokens=3, explainer=explainer)
    assert generation.matrix.shape == (2, 3, 7) and generation.relevance.shape == (2, 3, 7, 16)
    for i in range(3):
        end = 4 + i
        alone = explainer(generation.ids[:, :end], target=generation.ids[:, end])
        torch.testing.assert_close(generation.relevance[:, i, :end], alone.relevance, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(generation.start[:, i], alone.start, rtol=1e-12, atol=0)
        assert (generation.matrix[:, i, end:] == 0).all()   # what the token could not see


@pytest.mark.parametrize("build", [small_llama, small_gpt2])
def test_rows_conserve_and_start_at_the_generated_tokens_logits(build):
    """Closed accounting per row; GPT-2's position embeddings are sinks, so absorbed is not empty there."""
    model = build(2)
    prompt = torch.randint(40, (1, 5), generator=torch.Generator().manual_seed(3))
    generation = lrpc.explain_generation(model, prompt, max_new_tokens=4)
    with torch.no_grad():
        logits = model(generation.ids).logits
    picked = logits[0, 4:-1].gather(1, generation.new_ids[0, :, None])[:, 0]
    torch.testing.assert_close(generation.start[0], picked, rtol=1e-12, atol=0)   # attnlrp starts at the logit
    accounted = generation.matrix.sum(-1) + sum(generation.absorbed.values())
    torch.testing.assert_close(accounted, generation.start, rtol=1e-10, atol=1e-14)
    if build is small_gpt2:
        assert any(value.abs().sum() > 0 for value in generation.absorbed.values())


def test_greedy_tokens_equal_hugging_face_generate():
    model = small_llama(4)
    prompt = torch.randint(40, (2, 3), generator=torch.Generator().manual_seed(5))
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(lrpc.generation.greedy_generate(model, prompt, 5), expected)


def test_bad_inputs_raise_lrpc_errors():
    model = small_llama(6)
    with pytest.raises(lrpc.LrpcError, match="LongTensor"):
        lrpc.explain_generation(model, torch.randn(1, 3), max_new_tokens=2)
    with pytest.raises(lrpc.LrpcError, match="outside the vocabulary"):
        lrpc.explain_generation(model, torch.tensor([[1, 40]]), max_new_tokens=2)
    with pytest.raises(lrpc.LrpcError, match="max_new_tokens"):
        lrpc.explain_generation(model, torch.tensor([[1, 2]]), max_new_tokens=0)
    with pytest.raises(lrpc.LrpcError, match="causal language model"):
        lrpc.explain_generation(torch.nn.Linear(2, 2), torch.tensor([[1, 2]]), max_new_tokens=1)
