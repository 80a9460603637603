"""Conditional relevance (lrpc.crp) against independent references: zennit with the relevance masked by a hook on
a conv's output, a dense LRP walk written from the equations with masks at the layers, and the path probe's
masked pass; conservation across the channels of a layer; the rule for layers that are not a cut."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import VGGCanonizer

import lrpc
from lrpc.models.testing import vgg_with_narrow_classifier
from lrpc.paths.probe import Probe
from lrpc.rules import Epsilon, ZPlus

from conftest import randomize_batchnorm
from reference import dense, lrp_dense
from test_reference import TinyResNet


# ------------------------------------------------------------------------------------------------ zennit
def zennit_conditional(model, x, target, module_name, channels, num_classes):
    """zennit's EpsilonPlusFlat (VGG canonizer) with the relevance at ``module_name``'s output multiplied by a
    one-hot channel mask: one row per (image, channel), image-major, as zennit-crp computes it."""
    rows = x.repeat_interleave(len(channels), 0).requires_grad_(True)
    module = dict(model.named_modules())[module_name]
    mask = torch.zeros(rows.shape[0], module.out_channels, 1, 1, dtype=x.dtype)
    mask[torch.arange(rows.shape[0]), torch.tensor(channels).repeat(x.shape[0])] = 1
    grad = torch.eye(num_classes, dtype=x.dtype)[target.repeat_interleave(len(channels))]
    def mask_gradient(module, inputs, output):
        output.register_hook(lambda grad: grad * mask)

    with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[VGGCanonizer()])) as attributor:
        handle = module.register_forward_hook(mask_gradient)   # after zennit's hooks: its rule reads the mask
        try:
            _, relevance = attributor(rows, grad)
        finally:
            handle.remove()
    return relevance.reshape(x.shape[0], len(channels), *x.shape[1:]).sum(2)


NARROW = [8, "M", 16, "M", 16, 16, "M", 24, 24, "M", 24, 24, "M"]   # vgg11's pattern, narrow


def vgg(arch):
    """torchvision's VGG: a named architecture, or ``narrow[_bn]`` (vgg11's layers at a fraction of the width)."""
    if arch.startswith("narrow"):
        features = torchvision.models.vgg.make_layers(NARROW, batch_norm=arch.endswith("_bn"))
        model = torchvision.models.VGG(features, num_classes=5, init_weights=True)
        model.classifier[0] = nn.Linear(24 * 7 * 7, 32)
        model.classifier[3] = nn.Linear(32, 32)
        model.classifier[6] = nn.Linear(32, 5)
        return model
    return vgg_with_narrow_classifier(arch, num_classes=5, hidden=32)


@pytest.mark.parametrize("arch,layer,channels", [
    ("narrow", "features.8", [0, 5, 13]), ("narrow_bn", "features.11", [0, 5, 13]),
    pytest.param("vgg11", "features.8", [0, 7, 100, 255], marks=pytest.mark.slow),
    pytest.param("vgg11_bn", "features.11", [0, 7, 100, 255], marks=pytest.mark.slow)])
def test_conditional_heatmaps_match_zennit(arch, layer, channels):
    torch.manual_seed(0)
    model = randomize_batchnorm(vgg(arch)).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)
            if isinstance(m, nn.BatchNorm2d):   # zennit's merge leaves x / sqrt(1 + eps) behind (test_zennit.py)
                m.eps = 1e-14
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([1, 3])
    explainer = lrpc.compile(model, rules=lrpc.preset("epsilon-plus-flat", start="one"), example_input=x[:1])
    ours = lrpc.crp.conditional_heatmaps(explainer, x, layer=layer, channels=channels, target=target)
    theirs = zennit_conditional(model, x, target, layer, channels, 5)
    assert ours.shape == (2, len(channels), 32, 32)
    scale = float(theirs.abs().max())
    assert scale > 0
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * scale), float((ours - theirs).abs().max() / scale)
    # one image alone runs the single-image module (the rules' denominators computed once for all K rows)
    alone = lrpc.crp.conditional_heatmaps(explainer, x[1:], layer=layer, channels=channels, target=3)
    assert torch.allclose(alone[0], theirs[1], rtol=0, atol=1e-7 * scale)
    # the masks matter: the channels' maps differ from each other
    assert float((theirs[:, 0] - theirs[:, 1]).abs().max()) > 1e-3 * scale


# ------------------------------------------------------------------------------------------------ dense reference
class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def dense_conditional(model: SmallCNN, x, target, rule, masks):
    """Input relevance of one sample [2, 5, 5] by a dense LRP walk (reference.py), with the relevance at the output
    of conv ``i`` (``features[2 i]``) multiplied by the channel mask ``masks[i]`` [C] before it moves on."""
    convs = [model.features[i] for i in (0, 2, 4)]
    a, inputs, outputs = x, [], []
    for conv in convs:
        inputs.append(a)
        a = F.conv2d(a, conv.weight, conv.bias, padding=1)
        outputs.append(a)
        a = a.relu()
    flat = a.reshape(-1)
    r = torch.zeros(4, dtype=torch.float64)
    r[target] = 1.0
    r = lrp_dense(rule, model.fc.weight, model.fc.bias, flat, r, eps=1e-6)   # the ReLU passes it unchanged
    for i in reversed(range(3)):
        out_shape = outputs[i].shape
        r = r.reshape(out_shape)
        if i in masks:
            r = r * masks[i][:, None, None]
        W = dense(lambda v, c=convs[i]: F.conv2d(v, c.weight, None, padding=1), inputs[i].shape)
        b = convs[i].bias[:, None, None].expand(out_shape).reshape(-1)
        r = lrp_dense(rule, W, b, inputs[i].reshape(-1), r.reshape(-1), eps=1e-6)
    return r.reshape(x.shape)


@pytest.mark.parametrize("rule,rules", [("epsilon", lrpc.Rules(conv=Epsilon(1e-6), linear=Epsilon(1e-6), start="one")),
                                        ("zplus", lrpc.Rules(conv=ZPlus(), linear=ZPlus(), start="one"))])
def test_conditions_match_dense_reference_with_nested_masks(rule, rules):
    torch.manual_seed(1)
    model = SmallCNN().double().eval().requires_grad_(False)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    explainer = lrpc.compile(model, rules=rules, example_input=x[:1])
    conditions = [{"features.2": [1]}, {"features.2": [0, 3], "y": 2}, {"features.2": [3], "features.4": [2]},
                  {"features.4": [0]}]
    result = lrpc.crp.attribute(explainer, x, conditions, target=torch.tensor([0, 3]))
    assert result.relevance.shape == (2, 4, 2, 5, 5) and result.heatmap.shape == (2, 4, 5, 5)
    in_passes = lrpc.crp.attribute(explainer, x, conditions + conditions[:2], torch.tensor([0, 3]), batch_size=1)
    assert torch.allclose(in_passes.relevance[:, :4], result.relevance, rtol=1e-12, atol=0)
    assert torch.allclose(in_passes.relevance[:, 4:], result.relevance[:, :2], rtol=1e-12, atol=0)
    one_hot = lambda channels, n: torch.zeros(n, dtype=torch.float64).index_fill_(0, torch.tensor(channels), 1.0)  # noqa: E731
    for b, default_target in enumerate([0, 3]):
        for k, condition in enumerate(conditions):
            masks = {i: one_hot(condition[f"features.{2 * i}"], model.features[2 * i].out_channels)
                     for i in (1, 2) if f"features.{2 * i}" in condition}
            target = condition.get("y", default_target)
            expected = dense_conditional(model, x[b], target, rule, masks)
            scale = float(expected.abs().max())
            assert scale > 0
            assert torch.allclose(result.relevance[b, k], expected, rtol=0, atol=1e-9 * scale), (b, k)
            assert int(result.target[b, k]) == target
    # readout: the relevance of the condition's channels at the lower layer, under the upper layer's mask
    upper = Probe.of(explainer).module(x[:1], torch.tensor([0]), {"features_2": one_hot([3], 4)})[2]
    expected = float(upper["features_4"][0, 2].sum())
    assert result.relevances["features.4"][0, 2].item() == pytest.approx(expected, rel=1e-9)
    assert torch.isnan(result.relevances["features.4"][:, :2]).all()   # conditions 0 and 1 do not name it


def test_channels_of_a_cut_sum_to_the_full_map():
    torch.manual_seed(2)
    model = SmallCNN().double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    explainer = lrpc.compile(model, rules=lrpc.Rules(conv=ZPlus(), linear=Epsilon(1e-6), start="logit"),
                             example_input=x[:1])
    full = explainer(x).heatmap()
    for layer in ("features.2", "features_3", "features"):   # a conv, its ReLU by node name, the block's output
        maps = lrpc.crp.conditional_heatmaps(explainer, x, layer, list(range(4 if layer != "features" else 3)))
        assert torch.allclose(maps.sum(1), full, rtol=0, atol=1e-12 * float(full.abs().max()))


# ------------------------------------------------------------------------------------------------ not a cut
def test_layer_inside_a_residual_block_shows_only_the_relevance_through_it():
    """Conditioned on a conv inside a residual block, a map holds the relevance that flows through that channel;
    what the skip connection carries around the conv is in no channel's map, so the maps of all channels plus the
    map of the bypassing relevance (the probe with the whole layer masked) make up the full map."""
    torch.manual_seed(3)
    model = randomize_batchnorm(TinyResNet()).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=x[:1])
    maps = lrpc.crp.conditional_heatmaps(explainer, x, "a_conv1", [0, 1, 2], target=torch.tensor([1, 4]))
    probe = Probe.of(explainer)
    for b, target in enumerate([1, 4]):
        bypass = probe.run(x[b:b + 1], target, {"a_conv1": torch.zeros(3, dtype=x.dtype)}).sum(1)[0]
        for c in range(3):
            through = probe.run(x[b:b + 1], target, {"a_conv1": torch.eye(3, dtype=x.dtype)[c]}).sum(1)[0] - bypass
            assert torch.allclose(maps[b, c], through, rtol=0, atol=1e-12 * float(through.abs().max()))
        full = explainer(x[b:b + 1], target).heatmap()[0]
        assert torch.allclose(maps[b].sum(0) + bypass, full, rtol=0, atol=1e-12 * float(full.abs().max()))
        assert float(bypass.abs().max()) > 1e-3 * float(full.abs().max())   # the skip does carry relevance


# ------------------------------------------------------------------------------------------------ errors
def test_bad_layers_and_channels_are_named():
    torch.manual_seed(4)
    model = SmallCNN().double().eval()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=x)
    with pytest.raises(lrpc.LrpcError, match=r"unknown layer 'features.9'.*features\.4.*features_4"):
        lrpc.crp.conditional_heatmaps(explainer, x, "features.9", [0])
    with pytest.raises(lrpc.LrpcError, match=r"channel\(s\) \[4\] out of range .*features.2.* 4 channels"):
        lrpc.crp.conditional_heatmaps(explainer, x, "features.2", [0, 4])
    with pytest.raises(lrpc.LrpcError, match="non-empty list"):
        lrpc.crp.conditional_heatmaps(explainer, x, "features.2", [])
    with pytest.raises(lrpc.LrpcError, match="batch_size must be None"):
        lrpc.crp.conditional_heatmaps(explainer, x, "features.2", [0], batch_size=0)
    with pytest.raises(lrpc.LrpcError, match="one class index"):
        lrpc.crp.attribute(explainer, x, [{"features.2": [0], "y": [1, 2]}])


# ------------------------------------------------------------------------------------------------ transformers
@pytest.mark.parametrize("preset", ["cp-lrp", pytest.param("attnlrp", marks=pytest.mark.slow)])
def test_vit_concepts_are_token_channels_and_mlp_units(preset):
    """On a torchvision ViT the concepts of a block are the channels of its tokens, those of an MLP its hidden
    units. Below the layer the relevance runs through attention, whose activations hold the batch merged with the
    heads: the K concepts in one pass equal each concept run alone, the channels of a block's output (a cut) sum
    to the full map, and per-condition classes equal plain explanations of those classes."""
    from vit_spellings import torchvision_vit
    model = torchvision_vit(seed=5)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    explainer = lrpc.compile(model, lrpc.preset(preset), x[:1])
    full = explainer(x).heatmap()
    scale = float(full.abs().max())
    block = "encoder.layers.encoder_layer_0"
    maps = lrpc.crp.conditional_heatmaps(explainer, x, block, list(range(32)))
    assert maps.shape == (2, 32, 32, 32)
    assert torch.allclose(maps.sum(1), full, rtol=0, atol=1e-12 * scale)
    for c in (0, 17):
        alone = lrpc.crp.conditional_heatmaps(explainer, x, block, [c])
        assert torch.allclose(maps[:, c], alone[:, 0], rtol=0, atol=1e-12 * scale)
    # the MLP is a chain: all its hidden units carry what all the channels of its output carry
    hidden = lrpc.crp.conditional_heatmaps(explainer, x, "encoder.layers.encoder_layer_1.mlp.1", list(range(64)))
    out = lrpc.crp.conditional_heatmaps(explainer, x, "encoder.layers.encoder_layer_1.mlp", list(range(32)))
    assert torch.allclose(hidden.sum(1), out.sum(1), rtol=0, atol=1e-12 * scale)
    assert float((out.sum(1) - full).abs().max()) > 1e-3 * scale   # the residual stream carries the rest
    classes = lrpc.crp.attribute(explainer, x, [{block: list(range(32)), "y": c} for c in range(5)])
    for c in range(5):
        assert torch.allclose(classes.heatmap[:, c], explainer(x, c).heatmap(), rtol=0, atol=1e-12 * scale)
    assert classes.target.tolist() == [list(range(5))] * 2


# ------------------------------------------------------------------------------------------------ ranking
def test_concept_ranking_local_and_over_batches():
    torch.manual_seed(7)
    model = SmallCNN().double().eval()
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    explainer = lrpc.compile(model, rules="default", example_input=x[:1], keep=["features_2"])
    ranking = lrpc.crp.rank_concepts(explainer, x, "features.2")
    exp = explainer(x)
    expected = exp.relevances["features_2"].sum((2, 3))
    assert ranking.layer == "features_2" and ranking.relevance.shape == (5, 4)
    assert torch.allclose(ranking.relevance, expected, rtol=1e-12, atol=0)
    assert torch.allclose(ranking.relevance.sum(1), exp.start, rtol=1e-12)   # the default preset conserves
    assert torch.equal(ranking.target, exp.target)
    assert ranking.top(2, sample=3).tolist() == expected[3].argsort(descending=True)[:2].tolist()
    loader = [(x[:2], torch.tensor([1, 1])), (x[2:], torch.tensor([1, 1, 1]))]
    over = lrpc.crp.rank_concepts(explainer, loader, "features.2")
    by_class = explainer(x, 1).relevances["features_2"].sum((2, 3))
    assert torch.allclose(over.mean(), by_class.mean(0), rtol=1e-12)
    share = by_class / by_class.abs().sum(1, keepdim=True)
    assert torch.allclose(over.mean(normalized=True), share.mean(0), rtol=1e-12)
    assert over.top(4).tolist() == by_class.mean(0).argsort(descending=True).tolist()


class WithAuxiliaryHead(SmallCNN):
    def __init__(self):
        super().__init__()
        self.aux = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        h = self.features(x)
        return {"logits": self.fc(torch.flatten(h, 1)), "aux": self.aux(h)}


def test_layers_off_the_relevance_path_and_parallel_layers_are_refused():
    torch.manual_seed(8)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    explainer = lrpc.compile(WithAuxiliaryHead().double().eval(), "epsilon-plus", x)
    with pytest.raises(lrpc.LrpcError, match=r"layer 'aux' \(Conv2d\) is not on the relevance path.*features\.4"):
        lrpc.crp.conditional_heatmaps(explainer, x, "aux", [0])
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    explainer = lrpc.compile(TinyResNet().double().eval(), "epsilon-plus", x)
    with pytest.raises(lrpc.LrpcError, match="'b_conv2' and 'b_down' of one condition are not on one path"):
        lrpc.crp.attribute(explainer, x, [{"b_conv2": [0], "b_down": [1]}])
