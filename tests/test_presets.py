"""Rules reach the right layers: by module type, by name glob, by position, by predicate."""
import torch
import torchvision
from torch import nn

import lrpc
from lrpc.rules import Epsilon, Flat, Gamma, ZBox, Zero, ZPlus


def rule_names(explainer):
    return {name: type(plan.rule).__name__ for name, plan in explainer.plans.items() if plan.rule is not None}


def test_selectors_by_type_name_position_and_predicate():
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    rules = lrpc.Rules(conv=ZPlus(), linear=Epsilon(), pool=Zero(),
                       layers=(("first", Flat()), ("last", Zero()), ("layer4.1.*", Gamma()),
                               ("layer3.0.downsample.0", Epsilon(0.1)),
                               (lambda c: c.map == "conv" and c.adds_before >= 6, Gamma(0.1))))
    names = rule_names(lrpc.compile(model, rules=rules, example_input=torch.randn(1, 3, 32, 32)))
    assert names["conv1"] == "Flat" and names["fc"] == "Zero"
    assert names["layer4_1_conv1"] == names["layer4_1_conv2"] == "Gamma"
    assert names["layer3_0_downsample_0"] == "Epsilon"
    assert names["layer4_0_conv1"] == "Gamma"           # predicate: 6 adds precede layer4.0
    assert names["layer1_0_conv1"] == "ZPlus" and names["avgpool"] == "Zero"


def test_selector_by_module_type():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 6, 6))
    rules = lrpc.Rules(layers=((nn.LazyLinear, Zero()), (nn.Linear, Epsilon())))
    names = rule_names(lrpc.compile(model.eval(), rules=rules, example_input=torch.randn(1, 3, 6, 6)))
    assert names == {"_0": "ZPlus", "_2": "ZPlus", "_4": "Epsilon"}  # a LazyLinear becomes a Linear once built


def test_presets_are_listed_and_built():
    names = lrpc.presets()
    assert {"otsuki2024", "otsuki2024-i", "otsuki2024-ii", "otsuki2024-iii", "otsuki2024-mixture", "default",
            "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "montavon-vgg16", "cp-lrp", "attnlrp"} == set(names)
    for name in names:
        kwargs = {"low": -1.0, "high": 1.0} if name == "epsilon-gamma-box" else {}
        rules = lrpc.preset(name, **kwargs)
        assert rules.name == name and rules.description
    box = lrpc.preset("epsilon-gamma-box", low=lrpc.IMAGENET_LOW, high=lrpc.IMAGENET_HIGH)
    assert isinstance(box.layers[0][1], ZBox) and box.batchnorm == "fold"
    assert lrpc.preset("otsuki2024", start="logit").start == "logit"


def test_mixture_switches_rules_after_the_eighth_block():
    model = torchvision.models.resnet50(weights=None, num_classes=4).eval()
    names = rule_names(lrpc.compile(model, rules="otsuki2024-mixture", example_input=torch.randn(1, 3, 32, 32)))
    assert names["layer3_0_conv3"] == "ZPlus"       # inside block 8
    assert names["layer3_1_conv1"] == "Epsilon"     # block 9
    assert names["fc"] == "Epsilon" and names["layer1_0_conv1"] == "ZPlus"


def test_type_selectors_still_match_convs_with_folded_batchnorm():
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    rules = lrpc.preset("epsilon-plus").replace(layers=((nn.Conv2d, Zero()),))
    names = rule_names(lrpc.compile(model, rules=rules, example_input=torch.randn(1, 3, 32, 32)))
    assert all(rule == "Zero" for name, rule in names.items() if name not in ("fc", "avgpool"))


def test_batchnorm_without_affine_parameters_or_running_stats():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.randn(3, 3, 6, 6)
    exp = lrpc.compile(model, rules="epsilon-plus", example_input=x[:1])(x)
    with torch.no_grad():
        torch.testing.assert_close(exp.logits, model(x))
    assert torch.isfinite(exp.relevance).all()
