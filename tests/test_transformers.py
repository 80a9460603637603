"""Transformer presets ``cp-lrp`` and ``attnlrp`` (DESIGN.md §9): the kernels against LXT's explicit functions and
the dense reference, whole-model maps against LXT 2.1 itself on torchvision's ViT, the same weights in every
attention spelling, every sink reported, batches equal to single samples."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import lrpc
from lrpc import transformer_rules
from lrpc.kernels import matmul_product

from lxt_reference import lxt_heatmap
from reference import bilinear_dense, layernorm_dense, softmax_dense

TRANSFORMER_PRESETS = ("cp-lrp", "attnlrp")
DIM, HEADS, LAYERS = 32, 2, 2


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


# --------------------------------------------------------------------------------------------------------- models
def torchvision_vit(seed: int = 0, constants: bool = True) -> torch.nn.Module:
    """A tiny torchvision ViT in float64 with every parameter random (its head, cls token, biases and LayerNorm
    offsets are zero at init); ``constants=False`` zeroes biases, β, cls token and positional embedding."""
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=LAYERS, num_heads=HEADS,
                                                 hidden_dim=DIM, mlp_dim=2 * DIM, num_classes=5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            constant = p.dim() == 1 and not name.endswith(("ln_1.weight", "ln_2.weight", "ln.weight"))
            constant = constant or "token" in name or "pos_embedding" in name
            if constant and not constants:
                p.zero_()
            elif constant or "head" in name:
                p.normal_(0, 0.5 if constant else 0.3)
    return model.double().eval()


def timm_vit(source: torch.nn.Module, fused: bool = True) -> torch.nn.Module:
    """timm's ViT (qkv linear + F.scaled_dot_product_attention, or with ``fused=False`` its explicit
    q·kᵀ → softmax → ·v) holding ``source``'s weights."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=DIM,
                              depth=LAYERS, num_heads=HEADS, mlp_ratio=2, num_classes=5).double().eval()
    enc = source.encoder
    pairs = [(model.patch_embed.proj, source.conv_proj), (model.norm, enc.ln), (model.head, source.heads.head)]
    for block, layer in zip(model.blocks, enc.layers):
        pairs += [(block.norm1, layer.ln_1), (block.norm2, layer.ln_2), (block.attn.proj, layer.self_attention.out_proj),
                  (block.mlp.fc1, layer.mlp[0]), (block.mlp.fc2, layer.mlp[3])]
        block.attn.fused_attn = fused
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        for block, layer in zip(model.blocks, enc.layers):
            block.attn.qkv.weight.copy_(layer.self_attention.in_proj_weight)
            block.attn.qkv.bias.copy_(layer.self_attention.in_proj_bias)
        model.cls_token.copy_(source.class_token)
        model.pos_embed.copy_(enc.pos_embedding)
    return model


def hf_eager_vit(source: torch.nn.Module) -> torch.nn.Module:
    """Hugging Face's ViT with eager attention (separate q, k, v linears, matmul → softmax → matmul)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    intermediate_size=2 * DIM, image_size=32, patch_size=8, num_labels=5,
                                    layer_norm_eps=1e-6, hidden_act="gelu")
    model = transformers.ViTForImageClassification._from_config(config, attn_implementation="eager").double().eval()
    enc = source.encoder
    weights = {"vit.embeddings.cls_token": source.class_token, "vit.embeddings.position_embeddings": enc.pos_embedding,
               "vit.embeddings.patch_embeddings.projection.weight": source.conv_proj.weight,
               "vit.embeddings.patch_embeddings.projection.bias": source.conv_proj.bias,
               "vit.layernorm.weight": enc.ln.weight, "vit.layernorm.bias": enc.ln.bias,
               "classifier.weight": source.heads.head.weight, "classifier.bias": source.heads.head.bias}
    for i, layer in enumerate(enc.layers):
        mha, at = layer.self_attention, f"vit.layers.{i}."
        for part, w, b in zip("qkv", mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)):
            weights.update({f"{at}attention.{part}_proj.weight": w, f"{at}attention.{part}_proj.bias": b})
        for mine, theirs in (("attention.o_proj", mha.out_proj), ("layernorm_before", layer.ln_1),
                             ("layernorm_after", layer.ln_2), ("mlp.fc1", layer.mlp[0]), ("mlp.fc2", layer.mlp[3])):
            weights.update({f"{at}{mine}.weight": theirs.weight, f"{at}{mine}.bias": theirs.bias})
    missing = set(model.state_dict()) ^ set(weights)
    assert not missing, f"the Hugging Face ViT's parameter names changed: {sorted(missing)}"
    model.load_state_dict({k: v.detach() for k, v in weights.items()})
    return model


@pytest.fixture(scope="module")
def vit():
    return torchvision_vit()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(10)
    return torch.randn(3, 3, 32, 32, dtype=torch.float64)


GAMMAS = [(None, None), (0.25, None), (None, 0.05), (0.1, 0.0), (100.0, 1.0)]


@pytest.mark.parametrize("preset", TRANSFORMER_PRESETS)
@pytest.mark.parametrize("conv_gamma,linear_gamma", GAMMAS)
def test_presets_match_lxt_on_torchvision_vit(vit, images, preset, conv_gamma, linear_gamma):
    explanation = lrpc.compile(vit, lrpc.preset(preset, conv_gamma=conv_gamma, linear_gamma=linear_gamma),
                               images)(images)
    reference = lxt_heatmap(vit, images, explanation.target.clone(), "cp" if preset == "cp-lrp" else "attnlrp",
                            conv_gamma, linear_gamma)
    # LXT's identity rule and zennit hook divide by x + 1e-10: the maps agree to ~1e-9, not to rounding
    assert rel_l1(explanation.heatmap(), reference) < 1e-6


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
