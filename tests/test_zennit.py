"""The zennit-compatible presets give zennit's maps on torchvision's ResNets and VGGs (zennit with its own
torchvision canonizers is the reference)."""
import pytest
import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

import lrpc
from lrpc.models.testing import vgg_with_narrow_classifier

from conftest import randomize_batchnorm

LOW, HIGH = -2.5, 2.5
COMPOSITES = {
    "epsilon-plus": lambda canonizers: EpsilonPlus(canonizers=canonizers),
    "epsilon-plus-flat": lambda canonizers: EpsilonPlusFlat(canonizers=canonizers),
    "epsilon-gamma-box": lambda canonizers: EpsilonGammaBox(low=LOW, high=HIGH, canonizers=canonizers),
}


def _zennit_relevance(model, x, target, name, canonizer):
    composite = COMPOSITES[name]([canonizer])
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, torch.eye(model_classes(model), dtype=x.dtype)[target])
    return relevance


def model_classes(model):
    return model.fc.out_features if hasattr(model, "fc") else model.classifier[-1].out_features


CASES = [(name, "resnet18", 32, ResNetCanonizer) for name in COMPOSITES] + [
    (name, "vgg11_bn", 32, VGGCanonizer) for name in COMPOSITES] + [
    ("epsilon-plus", "resnet50", 32, ResNetCanonizer)]


@pytest.mark.parametrize("name,arch,size,canonizer", CASES)
def test_presets_match_zennit(name, arch, size, canonizer):
    torch.manual_seed(0)
    model = (vgg_with_narrow_classifier(arch, num_classes=6, hidden=64) if arch.startswith("vgg")
             else torchvision.models.get_model(arch, weights=None, num_classes=6))
    model = randomize_batchnorm(model).double().eval()
    # zennit's BN merge leaves the BN module in place as x / sqrt(1 + eps) instead of the identity, which
    # perturbs its maps by ~eps per block; with a negligible eps the two foldings agree exactly
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-14
    x = torch.randn(2, 3, size, size, dtype=torch.float64).clamp(LOW, HIGH)
    target = torch.tensor([1, 4])
    kwargs = {"low": LOW, "high": HIGH} if name == "epsilon-gamma-box" else {}
    rules = lrpc.preset(name, start="one", **kwargs)
    ours = lrpc.compile(model, rules=rules, example_input=x[:1])(x, target).relevance
    before = {k: v.clone() for k, v in model.state_dict().items()}
    theirs = _zennit_relevance(model, x, target, name, canonizer())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # zennit restored the model
    scale = float(theirs.abs().max())
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * scale), float((ours - theirs).abs().max() / scale)
