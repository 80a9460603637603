"""Token models (``lrpc.tokens``): Hugging Face causal LMs and text classifiers compiled from token ids, explained
at their embedding lookup. Checked against LXT 2.1's own per-family maps, closed accounting, padding (right and
left) against the same text alone, eager against SDPA attention, contrastive targets against linearity, and the
errors a caller can provoke."""
from __future__ import annotations

import functools

import pytest
import torch

import lrpc

from language_models import CAUSAL, ENCODERS, LXT_SHIPS, VOCAB, build
from lxt_reference import lxt_token_heatmap

TRANSFORMER_PRESETS = ("cp-lrp", "attnlrp")
pytest.importorskip("transformers")


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / b.abs().sum())


def right_padded(seed: int = 0, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a mask whose rows hold ``length``, 5 and 3 real tokens, then padding (id 0)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, real in enumerate((length, 5, 3)[:batch]):
        mask[row, real:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@functools.cache
def compiled(family: str, preset: str, attn_implementation: str | None = None):
    """(model, explainer) of ``build(family)``, compiled once for this module: the tests below only call them
    (none changes a model, its options or the environment before compiling), so they share them. Compiled on
    ``right_padded()``'s ids; an explainer takes any batch and length."""
    model = build(family, attn_implementation=attn_implementation)
    return model, lrpc.compile(model, lrpc.preset(preset), example_input=right_padded()[0])


def closes(exp: lrpc.Explanation) -> float:
    """Largest relative gap of input relevance + everything absorbed to the start relevance."""
    total = exp.relevance.sum((1, 2)) + sum(exp.absorbed.values())
    return float(((total - exp.start).abs() / exp.start.abs()).max())


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("family", LXT_SHIPS)
def test_matches_lxt_per_family_maps_on_a_right_padded_batch(family, preset):
    """The public API with Hugging Face's default attention against LXT's patch map for the family (eager
    attention wrapped as LXT wraps it): ≤ 1e-6 relative L1 in float64 (HF's float32 norms and eager softmax)."""
    model, explainer = compiled(family, preset)
    ids, mask = right_padded()
    exp = explainer(ids, attention_mask=mask)
    assert exp.relevance.shape == (3, 7, 16) and exp.heatmap().shape == (3, 7)
    with torch.no_grad():   # the predicted next token after each row's last real token
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert torch.equal(exp.target, logits[torch.arange(3), mask.sum(1) - 1].argmax(-1))
    reference = lxt_token_heatmap(model, ids, mask, exp.target, "cp" if preset == "cp-lrp" else "attnlrp")
    assert rel_l1(exp.heatmap(), reference) < 1e-6
    assert bool((exp.heatmap()[mask == 0] == 0).all())


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("family", CAUSAL + ENCODERS)
def test_every_family_compiles_with_closed_accounting(family, preset):
    ids, mask = right_padded(seed=1)
    exp = compiled(family, preset)[1](ids, attention_mask=mask)
    assert closes(exp) < 1e-10
    assert bool((exp.heatmap()[mask == 0] == 0).all())   # padding takes exactly nothing


@pytest.mark.parametrize("family", ("gpt2", "bert"))
def test_position_and_token_type_embeddings_are_reported_sinks(family):
    """Absolute position (and BERT's token type) embeddings enter without the ids: under cp-lrp they take
    their proportional share, reported in exp.absorbed as constant adds."""
    ids, mask = right_padded(seed=2)
    exp = compiled(family, "cp-lrp")[1](ids, attention_mask=mask)
    plans = exp.explainer.plans
    first_add = next(name for name in exp.absorbed if plans[name].transform == "constant_add")
    assert float(exp.absorbed[first_add].abs().min()) > 0
    assert closes(exp) < 1e-10


@pytest.mark.parametrize("family", ("llama", "mistral", "gemma3", "gpt2", "gpt_neox", "opt"))
def test_padded_rows_equal_the_text_alone_and_eager_equals_sdpa(family):
    """Right and left padding give each text's map alone (position ids follow the mask, as generate()
    computes them); eager attention (a float additive mask, a float32 softmax) gives SDPA's maps to float32
    rounding; grouped-query heads and sliding windows (Mistral, Gemma 3) in both."""
    ids, right = right_padded(seed=3)
    left = right.flip(1)
    left_ids = torch.stack([row.roll(int((m == 0).sum())) for row, m in zip(ids, right)])
    sdpa = compiled(family, "attnlrp")[1]
    eager = compiled(family, "attnlrp", "eager")[1]
    on_right, on_left = sdpa(ids, attention_mask=right), sdpa(left_ids, attention_mask=left)
    for row in range(3):
        real = int(right[row].sum())
        alone = sdpa(ids[row:row + 1, :real])
        assert torch.allclose(on_right.heatmap()[row, :real], alone.heatmap()[0], rtol=1e-9, atol=1e-14)
        assert torch.allclose(on_left.heatmap()[row, 7 - real:], alone.heatmap()[0], rtol=1e-9, atol=1e-14)
        assert on_right.target[row] == on_left.target[row] == alone.target[0]
    assert bool((on_left.heatmap()[left == 0] == 0).all())
    assert rel_l1(eager(ids, attention_mask=right).heatmap(), on_right.heatmap()) < 1e-6


def test_contrastive_target_is_the_difference_of_the_two_maps():
    """Relevance is linear in the start relevance, so explaining logit a − logit b gives map(a) − map(b)."""
    ids, mask = right_padded(seed=4)
    explainer = compiled("gpt2", "cp-lrp")[1]
    a, b = torch.tensor([5, 6, 7]), 9
    contrast = explainer(ids, (a, b), attention_mask=mask)
    difference = explainer(ids, a, attention_mask=mask).relevance - explainer(ids, b, attention_mask=mask).relevance
    assert contrast.target.tolist() == [[5, 9], [6, 9], [7, 9]]
    assert torch.allclose(contrast.relevance, difference, rtol=1e-9, atol=1e-14)
    rows = torch.arange(3)
    assert torch.allclose(contrast.start, contrast.logits[rows, a] - contrast.logits[rows, b])
    assert closes(contrast) < 1e-10


def test_token_ids_as_targets_match_lxt():
    ids, mask = right_padded(seed=5)
    model, explainer = compiled("llama", "cp-lrp")
    target = torch.tensor([3, 4, 5])
    exp = explainer(ids, target, attention_mask=mask)
    assert torch.equal(exp.target, target)
    assert rel_l1(exp.heatmap(), lxt_token_heatmap(model, ids, mask, target, "cp")) < 1e-6


def test_a_classifier_explains_its_predicted_class():
    ids, mask = right_padded(seed=6)
    model, explainer = compiled("bert", "cp-lrp")
    exp = explainer(ids, attention_mask=mask)
    with torch.no_grad():
        assert torch.equal(exp.target, model(input_ids=ids, attention_mask=mask).logits.argmax(1))


@pytest.fixture(scope="module")
def llama_explainer():
    return compiled("llama", "cp-lrp")[1]


@pytest.mark.parametrize("call,message", [
    (lambda e, ids, mask: e(ids.double(), attention_mask=mask), "token ids"),
    (lambda e, ids, mask: e(ids, attention_mask=mask[:, :4]), "shape of input_ids"),
    (lambda e, ids, mask: e(ids, VOCAB, attention_mask=mask), "vocabulary"),
    (lambda e, ids, mask: e(ids, (1, VOCAB + 3), attention_mask=mask), "vocabulary"),
    (lambda e, ids, mask: e(ids, attention_mask=torch.cat([mask[:2], torch.zeros_like(mask[:1])])), "all padding"),
    (lambda e, ids, mask: e(ids + VOCAB, attention_mask=mask), "outside the vocabulary"),
    (lambda e, ids, mask: e(ids, attention_mask=mask * 2), "must hold 0"),
])
def test_bad_calls_raise_clear_errors(llama_explainer, call, message):
    ids, mask = right_padded()
    with pytest.raises(lrpc.LrpcError, match=message):
        call(llama_explainer, ids, mask)


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_explain_positions_equals_each_prefix_explained_alone(family):
    """One forward for K (position, token) targets per row: row b·K + k equals explaining the prefix up to that
    position alone for that token (causal attention), and nothing reaches the tokens after it. GPT-2 flattens
    the batch with the length ([B·T, D]) in its Conv1D, so the per-row repetition follows that layout too."""
    ids, mask = right_padded(seed=7, batch=2)
    explainer = compiled(family, "attnlrp")[1]
    positions = torch.tensor([[2, 4, 6], [1, 3, 4]])
    targets = torch.randint(0, VOCAB, (2, 3), generator=torch.Generator().manual_seed(8))
    exp = explainer.explain_positions(ids, positions, targets, attention_mask=mask)
    heat = exp.heatmap().view(2, 3, 7)
    assert torch.equal(exp.target, targets.reshape(-1))
    for b in range(2):
        for k in range(3):
            end = int(positions[b, k]) + 1
            alone = explainer(ids[b:b + 1, :end], int(targets[b, k]))
            assert torch.allclose(heat[b, k, :end], alone.heatmap()[0], rtol=1e-9, atol=1e-15)
            assert bool((heat[b, k, end:] == 0).all())
    assert closes(exp) < 1e-10
    predicted = explainer.explain_positions(ids, [2, 4], attention_mask=mask)   # targets=None: the predictions
    assert torch.equal(predicted.target, predicted.logits.argmax(1))


def test_explain_targets_explains_several_next_tokens():
    ids, mask = right_padded(seed=9)
    explainer = compiled("gpt_neox", "cp-lrp")[1]
    several = explainer.explain_targets(ids, [3, 5], attention_mask=mask).heatmap().view(3, 2, 7)
    for k, token in enumerate((3, 5)):
        assert torch.allclose(several[:, k], explainer(ids, token, attention_mask=mask).heatmap(), rtol=1e-9,
                              atol=1e-15)


@pytest.mark.parametrize("positions,message", [([7], "outside the sequence"), ([[6], [6], [6]], "padding"),
                                               ([2.0], "list of ints")])
def test_bad_positions_raise_clear_errors(llama_explainer, positions, message):
    ids, mask = right_padded()
    with pytest.raises(lrpc.LrpcError, match=message):
        llama_explainer.explain_positions(ids, torch.tensor(positions) if isinstance(positions[0], list)
                                          else positions, attention_mask=mask)


@pytest.mark.parametrize("family", ENCODERS)
def test_an_encoder_explains_a_right_padded_row_as_the_text_alone(family):
    ids, mask = right_padded(seed=10)
    explainer = compiled(family, "attnlrp")[1]
    padded = explainer(ids, attention_mask=mask)
    real = int(mask[2].sum())
    alone = explainer(ids[2:, :real])
    assert torch.allclose(padded.heatmap()[2, :real], alone.heatmap()[0], rtol=1e-9, atol=1e-15)
    assert padded.target[2] == alone.target[0]


def test_token_classification_explains_any_position():
    """A per-token classifier reads its scores per position like a language model: a call explains the last
    real token's predicted class, explain_positions any token's."""
    import transformers
    from language_models import _encoder_config
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(_encoder_config(transformers.BertConfig)).double().eval()
    ids, mask = right_padded(seed=11)
    explainer = lrpc.compile(model, "cp-lrp", example_input=ids)
    exp = explainer.explain_positions(ids, [0, 2], attention_mask=mask)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(exp.target, logits[:, [0, 2]].argmax(-1).reshape(-1))
    assert closes(exp) < 1e-10


def test_a_forward_that_gives_nan_for_the_mask_is_named():
    """Gemma 2 runs eager attention only, and Hugging Face's eager Gemma 2 gives NaN for left-padded rows (a query
    whose keys are all padding): an LrpcError says so instead of returning a NaN map."""
    ids, right = right_padded(seed=12)
    left = right.flip(1)
    explainer = compiled("gemma2", "cp-lrp")[1]
    with torch.no_grad():
        scores = build("gemma2")(input_ids=ids, attention_mask=left, use_cache=False).logits
    assert not bool(torch.isfinite(scores).all())   # the model's own forward, not lrpc's
    with pytest.raises(lrpc.LrpcError, match="NaN"):
        explainer(ids, attention_mask=left)
    assert bool(torch.isfinite(explainer(ids, attention_mask=right).heatmap()).all())


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
def test_grouped_query_sdpa_equals_repeated_heads(preset, monkeypatch):
    """Hugging Face hands grouped-query heads to scaled_dot_product_attention(enable_gqa=True) where it can
    (forced here): the kernels repeat the shared key/value heads and sum their relevance back, which must equal
    the repeat_kv spelling (expand + reshape, moved back by the op table)."""
    ids, mask = right_padded(seed=13)
    repeated = compiled("qwen2", preset)[1](ids, attention_mask=mask)
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    explainer = lrpc.compile(build("qwen2"), preset, example_input=ids)
    attention = [plan for plan in explainer.plans.values() if plan.info.kind == "attention"
                 or plan.transform == "attnlrp"]
    assert attention and all(plan.node.kwargs.get("enable_gqa") for plan in attention)
    grouped = explainer(ids, attention_mask=mask)
    assert torch.allclose(grouped.heatmap(), repeated.heatmap(), rtol=1e-9, atol=1e-15)
    assert closes(grouped) < 1e-10


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("family", ("gpt2", "gemma3"))
def test_a_model_with_lxt_patched_modules_gives_the_same_maps(family, preset):
    """LXT's patch functions rewrite norms and MLPs by hand (GPT-2's LayerNorm as (x − mean)/stop_grad(σ)·w + b,
    its activation through an autograd Function, Gemma's RMSNorm with a detached rsqrt): lrpc reads those
    spellings from the graph too, and the hand-written LayerNorm's centering takes LayerNorm's own rule."""
    from lxt_reference import lxt_patched_copy
    model = build(family)
    attention = "cp" if preset == "cp-lrp" else "attnlrp"
    patched, _ = lxt_patched_copy(model, attention)
    ids, mask = right_padded(seed=14)
    exp = lrpc.compile(patched, preset, example_input=ids)(ids, attention_mask=mask)
    assert rel_l1(exp.heatmap(), lxt_token_heatmap(model, ids, mask, exp.target, attention)) < 1e-6
    assert closes(exp) < 1e-10
