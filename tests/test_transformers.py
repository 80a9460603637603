"""Transformer presets ``cp-lrp`` and ``attnlrp`` (docs/transformers.md): the kernels against LXT's explicit functions and
the dense reference, whole-model maps against LXT 2.1 itself on torchvision's ViT, the same weights in every
attention spelling, every sink reported, batches equal to single samples."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lrpc
from lrpc import transformer_rules
from lrpc.kernels import matmul_product

from lxt_reference import lxt_efficient, lxt_heatmap
from reference import bilinear_dense, layernorm_dense, softmax_dense
from vit_spellings import hf_eager_vit, timm_vit, torchvision_vit

TRANSFORMER_PRESETS = ("cp-lrp", "attnlrp")


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / b.abs().sum())


# -------------------------------------------------------------------------------------------------------- kernels
def test_layernorm_frozen_std_matches_lxt_and_the_dense_reference():
    from lxt.explicit.functional import layer_norm_grad_fn
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    w, b, r = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64), torch.randn(2, 3, 8,
                                                                                                dtype=torch.float64)
    out = F.layer_norm(x, (8,), w, b, 1e-6)
    ours = transformer_rules.layernorm_frozen_std(r, x, out, w, normalized_shape=(8,), eps=1e-6)
    xl = x.clone().requires_grad_()
    layer_norm_grad_fn.apply(xl, w, b, 1e-6, 0.0).backward(r)   # LXT's explicit rule, its stabiliser set to 0
    assert torch.allclose(ours, xl.grad, rtol=1e-10, atol=1e-12)
    for i in range(2):
        for t in range(3):
            assert torch.allclose(ours[i, t], layernorm_dense(x[i, t], w, b, r[i, t], 1e-6), rtol=1e-10, atol=1e-12)
    # the bias absorbs Σ β R / y: what the relevance pass reports for the node
    assert torch.allclose(r.sum() - ours.sum(), (b * r / out).sum(), rtol=1e-10)


def test_softmax_rule_matches_lxt_and_the_dense_reference():
    from lxt.explicit.functional import softmax as lxt_softmax
    torch.manual_seed(1)
    x, r = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    ours = transformer_rules.softmax_relevance(r, x, x.softmax(-1), dim=-1)
    xl = x.clone().requires_grad_()
    lxt_softmax(xl, -1).backward(r)
    assert torch.allclose(ours, xl.grad, rtol=1e-12, atol=1e-14)
    for i in range(3):
        assert torch.allclose(ours[i], softmax_dense(x[i], r[i]), rtol=1e-10, atol=1e-12)
    masked = x.clone()
    masked[:, 0] = float("-inf")   # a masked logit takes nothing and produces no NaN
    out = transformer_rules.softmax_relevance(r * (masked.softmax(-1) > 0), masked, masked.softmax(-1), dim=-1)
    assert torch.isfinite(out).all() and (out[:, 0] == 0).all()


def test_bilinear_product_matches_lxt_and_the_dense_reference():
    from lxt.explicit.functional import matmul as lxt_matmul
    torch.manual_seed(2)
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    r = torch.randn(4, 3, dtype=torch.float64)
    ra, rb = matmul_product(r, a, b, a @ b)
    al, bl = a.clone().requires_grad_(), b.clone().requires_grad_()
    lxt_matmul(al, bl, epsilon=0.0).backward(r)
    assert torch.allclose(ra, al.grad, rtol=1e-10) and torch.allclose(rb, bl.grad, rtol=1e-10)
    da, db = bilinear_dense(a, b, r)
    assert torch.allclose(ra, da, rtol=1e-10) and torch.allclose(rb, db, rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_attnlrp_attention_equals_lxt_explicit_pieces(causal):
    """scaled_dot_product_attention under AttnLRP = LXT's explicit matmul → softmax → matmul, op by op."""
    from lxt.explicit.functional import matmul as lxt_matmul, softmax as lxt_softmax
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    r = torch.randn_like(out)
    rq, rk, rv = transformer_rules.attnlrp_attention(r, q, k, v, None, out, is_causal=causal, scale=None)
    qs = (q * 4 ** -0.5).requires_grad_()   # scaling by a constant passes relevance unchanged
    kl, vl = k.clone().requires_grad_(), v.clone().requires_grad_()
    scores = lxt_matmul(qs, kl.transpose(-1, -2), epsilon=0.0)
    if causal:   # the mask as a constant: relevance of masked scores is zero either way
        keep = torch.ones(5, 5, dtype=torch.bool).tril()
        scores = torch.where(keep, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    lxt_matmul(lxt_softmax(scores, -1), vl, epsilon=0.0).backward(r)
    assert torch.allclose(rq, qs.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(rk, kl.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(rv, vl.grad, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def vit():
    return torchvision_vit()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(10)
    return torch.randn(3, 3, 32, 32, dtype=torch.float64)


GAMMAS = [(None, None), (0.25, None), (None, 0.05), (0.1, 0.0), (100.0, 1.0)]


def assert_matches_lxt(model, images, preset, conv_gamma, linear_gamma) -> lrpc.Explanation:
    """lrpc's map of the predicted class equals LXT's to 1e-6 relative L1 (LXT's identity rule and zennit hook
    divide by x + 1e-10: the maps agree to ~1e-9, not to rounding)."""
    explanation = lrpc.compile(model, lrpc.preset(preset, conv_gamma=conv_gamma, linear_gamma=linear_gamma),
                               images[:1])(images)
    reference = lxt_heatmap(model, images, explanation.target.clone(), "cp" if preset == "cp-lrp" else "attnlrp",
                            conv_gamma, linear_gamma)
    assert rel_l1(explanation.heatmap(), reference) < 1e-6
    return explanation


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("conv_gamma,linear_gamma", GAMMAS)
def test_presets_match_lxt_on_torchvision_vit(vit, images, preset, conv_gamma, linear_gamma):
    assert_matches_lxt(vit, images, preset, conv_gamma, linear_gamma)


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("conv_gamma,linear_gamma", [(None, None), (0.25, 0.05)])
def test_presets_match_lxt_on_a_conv_stem_vit(images, preset, conv_gamma, linear_gamma):
    """torchvision's ViT with its convolutional stem (conv-BN-ReLU, as the shipped ground-truth ViT): LXT's
    gradient passes BatchNorm as an affine map, so the presets do too (``batchnorm='affine'``), also under γ."""
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer
    torch.manual_seed(1)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5, conv_stem_configs=[ConvStemConfig(8, 3, 2) for _ in range(3)])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or "token" in name or "pos_embedding" in name or "head" in name:
                p.normal_(0, 0.3)
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    explanation = assert_matches_lxt(model.double().eval(), images, preset, conv_gamma, linear_gamma)
    stem_shifts = [taken for node, taken in explanation.absorbed.items()
                   if explanation.explainer.plans[node].transform == "batchnorm_affine"]
    assert len(stem_shifts) == 3   # every BatchNorm's shift is a reported sink, and the accounting closes
    absorbed = sum(explanation.absorbed.values())
    assert torch.allclose(explanation.relevance.sum((1, 2, 3)) + absorbed, explanation.start, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("preset", ("default", *TRANSFORMER_PRESETS, "cp-lrp+gamma", "attnlrp+gamma"))
def test_attention_spellings_give_the_same_maps(vit, images, preset):
    """torchvision (nn.MultiheadAttention), timm (qkv + F.scaled_dot_product_attention), timm explicit
    (q·kᵀ → softmax → ·v): the same weights give the same maps under every rule set, γ included (γ skips the
    attention projections by the graph, in every spelling)."""
    name, _, gamma = preset.partition("+")
    rules = lrpc.preset(name, conv_gamma=0.25, linear_gamma=0.05) if gamma else lrpc.preset(name)
    maps = [lrpc.compile(model, rules, images)(images).heatmap()
            for model in (vit, timm_vit(vit, fused=True), timm_vit(vit, fused=False))]
    for other in maps[1:]:
        assert torch.allclose(other, maps[0], rtol=0, atol=1e-10 * float(maps[0].abs().max()))


@pytest.mark.parametrize("preset", ("default", *TRANSFORMER_PRESETS))
def test_hugging_face_eager_attention_gives_the_same_maps(vit, images, preset):
    """Hugging Face's eager attention computes its softmax in float32 even in a float64 model, so the maps
    agree to float32 rounding only."""
    hf = hf_eager_vit(vit)
    ours = lrpc.compile(vit, preset, images)(images).heatmap()
    theirs = lrpc.compile(hf, preset, images)(images).heatmap()
    assert rel_l1(theirs, ours) < 1e-5


@pytest.mark.parametrize("preset", ("default", *TRANSFORMER_PRESETS))
def test_every_sink_is_reported(vit, images, preset):
    explanation = lrpc.compile(vit, preset, images)(images)
    absorbed = explanation.absorbed
    total = explanation.relevance.sum((1, 2, 3)) + sum(absorbed.values())
    assert torch.allclose(total, explanation.start, rtol=1e-10, atol=1e-12)
    plans = explanation.explainer.plans
    kinds = {name: (plans[name].info.kind, plans[name].transform) for name in absorbed}
    assert ("inert", None) in kinds.values()                          # the cls token
    if preset == "default":   # attention as constant weights, constants give their share to the signal
        assert set(kinds.values()) == {("inert", None)}
    else:
        transforms = {t for _, t in kinds.values()}
        assert {"constant_add", "layernorm_frozen_std"} <= transforms    # positional embedding, LayerNorm β
        assert any(kind == "linear" for kind, _ in kinds.values())      # biases
        assert ("attnlrp" in transforms) == (preset == "attnlrp")       # the softmax


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
def test_without_constants_only_the_softmax_absorbs(images, preset):
    model = torchvision_vit(seed=1, constants=False)
    explanation = lrpc.compile(model, preset, images)(images)
    if preset == "cp-lrp":
        assert float(explanation.conservation_error().max()) < 1e-10
    else:
        plans = explanation.explainer.plans
        scale = explanation.start.abs()
        for name, value in explanation.absorbed.items():
            if plans[name].transform != "attnlrp":
                assert float((value.abs() / scale).max()) < 1e-10, name


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
def test_batch_maps_equal_per_sample_maps(vit, images, preset):
    explainer = lrpc.compile(vit, preset, images)
    batch = explainer(images).relevance
    for i in range(len(images)):
        assert torch.allclose(explainer(images[i:i + 1]).relevance[0], batch[i], rtol=1e-10, atol=1e-14)


def test_gamma_skips_attention_projections_only(vit, images):
    explainer = lrpc.compile(vit, lrpc.preset("cp-lrp", conv_gamma=0.25, linear_gamma=0.1), images)
    rules = {plan.module: plan.rule.name for plan in explainer.plans.values() if plan.rule is not None}
    assert rules["conv_proj"] == "gamma" and rules["heads.head"] == "gamma"
    assert rules["encoder.layers.encoder_layer_0.mlp.0"] == rules["encoder.layers.encoder_layer_1.mlp.3"] == "gamma"
    assert rules["encoder.layers.encoder_layer_0.self_attention"] == "zero"


def test_transformer_rule_fields_are_checked():
    with pytest.raises(lrpc.LrpcError, match="attention"):
        lrpc.preset("default", attention="rollout")


class GatedMlpBlock(torch.nn.Module):
    """A pre-norm residual block with Hugging Face's LLaMA RMSNorm and SwiGLU MLP (silu(x W_g) ⊙ x W_u) and a head."""

    def __init__(self, width: int = 8, classes: int = 3):
        super().__init__()
        llama = pytest.importorskip("transformers.models.llama.modeling_llama")
        config = llama.LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_attention_heads=2,
                                    num_key_value_heads=2, hidden_act="silu")
        self.norm, self.mlp = llama.LlamaRMSNorm(width), llama.LlamaMLP(config)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x):
        return self.head((x + self.mlp(self.norm(x))).mean(1))


@pytest.mark.parametrize("preset,lxt_forward", [("cp-lrp", "cp_gated_mlp_forward"), ("attnlrp", "gated_mlp_forward")])
def test_gated_mlp_matches_lxt(preset, lxt_forward):
    """LXT's LLaMA maps: cp-LRP stops the gradient at the gate, AttnLRP splits the product uniformly (identity
    through silu); both use the identity rule on RMSNorm. Bound to a deep copy, nothing patched process-wide."""
    import copy
    import types
    patches = lxt_efficient("patches")
    torch.manual_seed(0)
    model = GatedMlpBlock().double().eval()
    with torch.no_grad():
        model.norm.weight.normal_(1, 0.3)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    target = model(x).argmax(1)
    reference = copy.deepcopy(model)
    reference.mlp.forward = types.MethodType(getattr(patches, lxt_forward), reference.mlp)
    reference.norm.forward = types.MethodType(patches.rms_norm_forward, reference.norm)
    leaf = x.clone().requires_grad_(True)
    reference(leaf).gather(1, target[:, None]).sum().backward()
    expected = (leaf * leaf.grad).detach()
    explanation = lrpc.compile(model, preset, x[:1])(x, target=target)
    # LlamaRMSNorm normalises in float32 even in a float64 model, hence not 1e-10
    assert rel_l1(explanation.relevance, expected) < 1e-7
    other = "attnlrp" if preset == "cp-lrp" else "cp-lrp"
    assert rel_l1(lrpc.compile(model, other, x[:1])(x, target=target).relevance, expected) > 1e-3


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("conv_gamma,linear_gamma", [(None, None), (0.25, 0.05)])
def test_presets_match_lxt_on_the_shipped_vit(preset, conv_gamma, linear_gamma):
    from lrpc.data import groundtruth_model, normalize, split_scenes
    scenes = normalize(split_scenes("test", 2).images).double()
    assert_matches_lxt(groundtruth_model("vit").double(), scenes, preset, conv_gamma, linear_gamma)
