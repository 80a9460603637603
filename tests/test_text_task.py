"""The text ground-truth task and its shipped Llama: the answer recomputed from the words, the model accurate on a
fresh split, its answer moved by the keys and by nothing else; the token baselines against autograd and
integrated gradients' completeness; lrpc's token API on the shipped model with closed accounting."""
from __future__ import annotations

import pytest
import torch

import lrpc
from lrpc.data import GROUNDTRUTH_CHECKPOINTS, groundtruth_model
from lrpc.data.text_task import ANSWERS, DISTRACTORS, FILLERS, KEYS, QUERY, VOCABULARY, make_texts, split_texts

pytest.importorskip("transformers")


def test_every_answer_follows_from_the_order_of_its_two_keys():
    texts = make_texts(300, seed=7)
    assert texts.ids.shape == (300, 16) and texts.deciding.sum(1).eq(2).all()
    for row in range(300):
        words = texts.words(row)
        keys = [w for w in words if w in KEYS]
        assert words[-1] == QUERY and len(keys) == 2 and keys[0] != keys[1]
        assert [i for i, w in enumerate(words) if w in KEYS] == texts.deciding[row].nonzero().flatten().tolist()
        assert sum(w in DISTRACTORS for w in words) == 2
        assert sum(w in FILLERS for w in words) == 11
        assert VOCABULARY[texts.answers[row]] == ("yes" if keys[0] < keys[1] else "no")
    assert set(VOCABULARY[a] for a in texts.answers.tolist()) == set(ANSWERS)
    assert abs(float((texts.answers == VOCABULARY.index("yes")).float().mean()) - 0.5) < 0.01
    assert torch.equal(make_texts(300, seed=7).ids, texts.ids)   # seeded, deterministic


def test_shipped_model_is_small_and_accurate_on_a_fresh_split():
    assert GROUNDTRUTH_CHECKPOINTS["text"].stat().st_size < 1_000_000
    model = groundtruth_model("text")
    assert not model.training and model.config.num_key_value_heads < model.config.num_attention_heads
    texts = make_texts(3000, seed=424242)        # neither the train seeds nor val/test
    with torch.no_grad():
        predicted = model(texts.ids).logits[:, -1].argmax(-1)
    assert float((predicted == texts.answers).float().mean()) >= 0.99


def test_the_answer_moves_with_the_keys_only():
    model = groundtruth_model("text")
    texts = split_texts("test", 500)
    rows = torch.arange(500)
    positions = texts.deciding.nonzero()[:, 1].view(-1, 2)
    swapped = texts.ids.clone()
    swapped[rows, positions[:, 0]], swapped[rows, positions[:, 1]] = texts.ids[rows, positions[:, 1]], \
        texts.ids[rows, positions[:, 0]]
    refilled = texts.ids.clone()   # every non-key context token replaced by another filler
    others = ~texts.deciding
    others[:, -1] = False
    refilled[others] = torch.randint(len(FILLERS), (int(others.sum()),), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        answer = lambda ids: model(ids).logits[:, -1].argmax(-1)
        assert float((answer(swapped) != texts.answers).float().mean()) >= 0.99
        assert float((answer(refilled) == texts.answers).float().mean()) >= 0.99


def test_lrpc_explains_the_shipped_model_from_token_ids():
    model = groundtruth_model("text").double()
    texts = split_texts("test", 8)
    explanation = lrpc.compile(model, lrpc.preset("attnlrp"), example_input=texts.ids[:1])(texts.ids)
    assert torch.equal(explanation.target, texts.answers)
    heat = explanation.heatmap()
    assert heat.shape == (8, 16)
    total = heat.sum(1) + sum(explanation.absorbed.values(), torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(total, explanation.start, rtol=1e-6, atol=1e-9)


def _answer_gradient(model, texts):
    embeddings = model.get_input_embeddings()(texts.ids).detach().requires_grad_(True)
    logit = model(inputs_embeds=embeddings).logits[:, -1].gather(1, texts.answers[:, None])
    gradient, = torch.autograd.grad(logit.sum(), embeddings)
    return embeddings.detach(), gradient, logit.detach()[:, 0]


def test_input_x_gradient_equals_autograd():
    from lrpc.baselines.text_methods import token_baseline
    model = groundtruth_model("text").double()
    texts = split_texts("val", 3)
    embeddings, gradient, _ = _answer_gradient(model, texts)
    torch.testing.assert_close(token_baseline("input_x_gradient", model, texts.ids, texts.answers),
                               (embeddings * gradient).sum(-1))


@pytest.mark.slow
def test_integrated_gradients_add_up_to_the_logit_difference():
    from lrpc.baselines.text_methods import integrated_gradients_tokens   # imported by nothing else in the run
    model = groundtruth_model("text").double()
    texts = split_texts("val", 3)
    embeddings, _, at_input = _answer_gradient(model, texts)
    # the trained model's logit jumps within a short stretch of the path: many steps are needed to integrate it
    integrated = integrated_gradients_tokens(model, texts.ids, texts.answers, steps=512)
    baseline = model.get_input_embeddings().weight.detach().mean(0).expand_as(embeddings)
    with torch.no_grad():   # completeness: the attributions add up to f(input) − f(baseline)
        at_baseline = model(inputs_embeds=baseline).logits[:, -1].gather(1, texts.answers[:, None])[:, 0]
    difference = at_input - at_baseline
    assert float(((integrated.sum(1) - difference).abs() / difference.abs()).max()) < 0.02


def test_attention_rollout_needs_probabilities_and_is_a_causal_distribution():
    from lrpc.baselines.text_methods import token_baseline
    texts = split_texts("val", 4)
    with pytest.raises(lrpc.LrpcError, match="eager"):
        token_baseline("attention_rollout", groundtruth_model("text"), texts.ids, texts.answers)
    eager = groundtruth_model("text")
    eager.set_attn_implementation("eager")
    rollout = token_baseline("attention_rollout", eager, texts.ids, texts.answers)
    torch.testing.assert_close(rollout.sum(1), torch.ones(4))   # the last token's row of a row-stochastic product
    assert (rollout >= 0).all()
    with pytest.raises(lrpc.LrpcError, match="unknown token baseline"):
        token_baseline("saliency", eager, texts.ids, texts.answers)
