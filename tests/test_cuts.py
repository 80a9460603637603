"""A reported cut is a cut, over the model zoos.

For every model, at a batch of three different samples in float64 and under several presets, each entry of
``exp.layer_sums`` must equal the relevance crossing the graph cut after that node as the definition computes
it, one sample at a time (``tests/cut_reference.py``: every message the relevance pass sends, summed by hand),
which is the start relevance minus what the nodes after the cut absorb; ``node_sums`` and ``absorbed`` must
equal what each node receives and takes out. Under a conserving rule set every cut carries the start and
nothing but constants absorbs. A rule that does create or lose relevance shows in ``exp.leaks()`` at its node.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lrpc
from lrpc.debug.accounting import absorber
from lrpc.rules import AlphaBeta, ZPlus

import modality_zoo
from cut_reference import flows
from zoo import HF_MODELS

BATCH = 3
CONSERVING = {"default"}


def _mismatch(what: str, names: list[str], got: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor,
              rtol: float) -> str | None:
    """None, or the first node (graph order) whose value is off, with the numbers."""
    bad = (got - expected).abs() > rtol * scale
    if not bool(bad.any()):
        return None
    sample, k = (int(i) for i in bad.nonzero()[bad.nonzero()[:, 1].argmin()])
    return (f"{what}: {int(bad.any(0).sum())} of {len(names)} nodes off, first {names[k]!r} sample {sample}: "
            f"{float(got[sample, k]):.12g} vs {float(expected[sample, k]):.12g} (start "
            f"{float(scale[sample, 0]):.6g})")


def check_cuts(model: nn.Module, example: torch.Tensor, preset: str, rtol: float = 1e-8):
    """Compile ``model`` (float64) under ``preset``, explain three different samples, compare every readout
    with the definition; returns the explanation."""
    model = model.double().eval()
    torch.manual_seed(1)
    x = torch.randn(BATCH, *example.shape[1:], dtype=torch.float64)
    explainer = lrpc.compile(model, preset, example_input=x[:1])
    exp = explainer(x)
    ref = flows(explainer, x, exp.target)
    names = explainer.layer_names
    scale = ref.start.abs()[:, None]
    torch.testing.assert_close(exp.start, ref.start, rtol=rtol, atol=0)
    absorbed = exp.absorbed_matrix.clone()
    if explainer.plans[names[0]].info.kind == "input":   # reported as 0: the sink takes what it receives
        absorbed[:, 0] = ref.absorbed[:, 0]
    problems = [_mismatch("layer_sums vs the definition", names, exp.layer_sum_matrix, ref.cut, scale, rtol),
                _mismatch("layer_sums vs start - later absorption", names, exp.layer_sum_matrix,
                          ref.start_minus_later_absorption(), scale, rtol),
                _mismatch("node_sums vs received", names, exp.node_sum_matrix, ref.received, scale, rtol),
                _mismatch("absorbed vs received - emitted", names, absorbed, ref.absorbed, scale, rtol)]
    if preset in CONSERVING:
        constants = [k for k, name in enumerate(names) if is_constant(explainer.plans[name])]
        conserving = ref.absorbed.clone()
        conserving[:, constants] = 0
        problems.append(_mismatch("conservation (absorbed outside constants)", names, conserving,
                                  torch.zeros_like(conserving), scale, rtol))
        if not any(is_constant(explainer.plans[name]) and explainer.plans[name].info.kind != "input" for name in names):
            problems.append(_mismatch("conservation (cut vs start)", names, exp.layer_sum_matrix,
                                      ref.start[:, None].expand_as(ref.cut), scale, rtol))
        leaks = [str(leak) for leak in exp.leaks(tol=rtol) if not is_constant(explainer.plans[leak.node])]
        problems.append(f"leaks: {leaks}" if leaks else None)
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
    return exp


def is_constant(plan) -> bool:
    """A node whose relevance ends at constants by design: a constant tensor, the input, or a pad's values."""
    return plan.info.kind in ("inert", "input") or "constant" in (absorber(plan) or "")


def _mobilevit(version: str = "", size: int = 32, **config):
    import transformers
    cfg = getattr(transformers, f"MobileViT{version}Config")(num_labels=5, image_size=size, **config)
    model = getattr(transformers, f"MobileViT{version}ForImageClassification")(cfg)
    return model.eval(), torch.randn(1, 3, size, size)


_MOBILEVIT = dict(hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_attention_heads=2)
FAST = [   # (model, preset): each kind of batch layout (folded patches, windows) and each family of presets
    ("mobilevit", "default"), ("swin", "default"), ("vit", "cp-lrp"),
    ("resnet", "otsuki2024"), ("resnet", "epsilon-plus-flat"),
]


@pytest.mark.parametrize("name,preset", FAST)
def test_every_reported_cut_is_the_cut(name, preset):
    torch.manual_seed(0)
    check_cuts(*HF_MODELS[name](), preset)


def test_mobilevit_v2_cuts_with_folded_patches():
    """MobileViTV2 unfolds with ``F.unfold`` (im2col) and its separable attention reduces over the patches."""
    torch.manual_seed(0)
    check_cuts(*_mobilevit("V2", 64, width_multiplier=0.25, num_attention_heads=1), "default")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "otsuki2024", "epsilon-plus-flat", "cp-lrp", "attnlrp"])
@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_every_cut_of_the_hugging_face_zoo(name, preset):
    torch.manual_seed(0)
    check_cuts(*HF_MODELS[name](), preset)


KNOWN = {   # (model, preset) -> what fails that is not a cut (kept strict: it must fail until fixed)
    ("wavlm", "attnlrp"): "WavLM's gated relative position bias: a per-sample total of [B·heads] entries where "
    "the readout expects [B] (the batch layout of the gate's view is not found), after baddbmm became ops",
}


def _cases(names, presets):
    return [pytest.param(name, preset, marks=pytest.mark.xfail(reason=KNOWN[name, preset], strict=True))
            if (name, preset) in KNOWN else (name, preset) for name in names for preset in presets]


@pytest.mark.slow
@pytest.mark.parametrize("name,preset", _cases(sorted(modality_zoo.ZOO), ["default", "attnlrp"]))
def test_every_cut_of_the_modality_zoo(name, preset):
    check_cuts(*modality_zoo.build(name), preset)


TIMM = {"mobilevit_xxs": {}, "swin_tiny_patch4_window7_224": {"img_size": 56}, "convnext_atto": {},
        "levit_128s": {"img_size": 64}, "efficientnet_b0": {}, "densenet121": {}}


@pytest.mark.slow
@pytest.mark.parametrize("name,preset", _cases(sorted(TIMM), ["default"]))
def test_every_cut_of_timm_models(name, preset):
    import timm
    torch.manual_seed(0)
    options = TIMM[name]
    model = timm.create_model(name, pretrained=False, num_classes=4, **options)
    size = options.get("img_size", 64)
    check_cuts(model, torch.randn(1, 3, size, size), preset)


# ------------------------------------------------------------------------------------------------ real leaks
class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(h.mean((2, 3)))


def _chain() -> Chain:
    torch.manual_seed(0)
    model = Chain().double().eval()
    with torch.no_grad():
        model.c2.weight.abs_()   # non-negative weights on a non-negative input: no negative contributions
    return model


@pytest.mark.parametrize("head_scale", [1.0, 1e-60])
def test_a_rule_that_creates_relevance_is_the_leak_named(head_scale):
    """α2β1 on a layer without negative contributions hands on 2R: the layer creates what it receives, and
    ``exp.leaks()`` names it (and only it); every cut still reports what crosses it. Measured against the start,
    also where the scores are tiny (a randomly initialised Hugging Face MobileViT's logits are ~1e-52)."""
    model = _chain()
    with torch.no_grad():
        model.fc.weight.mul_(head_scale)
    rules = lrpc.preset("default", start="logit").replace(
        layers=(("c2", AlphaBeta(2.0, 1.0, epsilon=0.0, stabilizer_mode="none", bias=False)),))
    x = torch.randn(BATCH, 3, 8, 8, dtype=torch.float64)
    explainer = lrpc.compile(model, rules, example_input=x[:1])
    exp = explainer(x)
    ref = flows(explainer, x, exp.target)
    leaks = exp.leaks()
    assert [leak.node for leak in leaks] == ["c2"] and "creates" in str(leaks[0])
    c2 = explainer.layer_names.index("c2")
    torch.testing.assert_close(leaks[0].delta, ref.received[:, c2], rtol=1e-10, atol=0)
    torch.testing.assert_close(exp.layer_sum_matrix, ref.cut, rtol=1e-10, atol=0)
    torch.testing.assert_close(exp.relevance.sum((1, 2, 3)), 2 * exp.start, rtol=1e-10, atol=0)
    assert float(exp.conservation_error().min()) > 0.99   # the cut before c2 carries twice the start


def test_a_rule_that_loses_relevance_is_the_leak_named():
    """Plain z⁺ (no fallback) on a head whose target row is all negative over a non-negative input: no positive
    contribution, 0/0 := 0, the whole start relevance is lost at the head, and ``exp.leaks()`` says so."""
    model = _chain()
    with torch.no_grad():
        model.fc.weight.copy_(-model.fc.weight.abs())
    rules = lrpc.preset("default").replace(layers=(("fc", ZPlus(epsilon=0.0, stabilizer_mode="none", bias=False)),))
    x = torch.randn(BATCH, 3, 8, 8, dtype=torch.float64)
    explainer = lrpc.compile(model, rules, example_input=x[:1])
    exp = explainer(x)
    leaks = exp.leaks()
    assert [leak.node for leak in leaks] == ["fc"] and "loses" in str(leaks[0])
    torch.testing.assert_close(leaks[0].delta, -exp.start, rtol=1e-10, atol=0)
    torch.testing.assert_close(exp.relevance.sum((1, 2, 3)), torch.zeros(BATCH, dtype=torch.float64))
    torch.testing.assert_close(exp.layer_sum_matrix, flows(explainer, x, exp.target).cut, rtol=1e-10, atol=1e-12)
