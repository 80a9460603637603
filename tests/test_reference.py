"""The compiled module against the naive dense reference (tests/reference.py), float64, to 1e-6.

Covers every rule, every splitting policy, identity and projection skips, the three max-pool modes, the
Table 2 presets and the Montavon VGG preset.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from lrpc.splitting import Splitting

from conftest import randomize_batchnorm
from reference import dense, lrp_dense, split

LOW = torch.tensor([-1.5, -1.0], dtype=torch.float64)
HIGH = torch.tensor([2.0, 1.5], dtype=torch.float64)


class TinyResNet(nn.Module):
    """Stem, max-pool, one identity block, one projection block, GAP, fc: every structure of ResNet."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(3)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.a_conv1, self.a_bn1 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.a_conv2, self.a_bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=True), nn.BatchNorm2d(3)
        self.b_conv1, self.b_bn1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b_conv2, self.b_bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b_down, self.b_down_bn = nn.Conv2d(3, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        out = self.a_bn2(self.a_conv2(torch.relu(self.a_bn1(self.a_conv1(x)))))
        out += x
        x = torch.relu(out)
        out = self.b_bn2(self.b_conv2(torch.relu(self.b_bn1(self.b_conv1(x)))))
        x = torch.relu(out + self.b_down_bn(self.b_down(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_dense(conv, in_shape, weight=None):
    w = conv.weight if weight is None else weight
    return dense(lambda v: F.conv2d(v, w, None, conv.stride, conv.padding, conv.dilation, conv.groups), in_shape)


def conv_bias(conv, out_shape):
    b = conv.bias if conv.bias is not None else torch.zeros(out_shape[0], dtype=torch.float64)
    return b[:, None, None].expand(out_shape).reshape(-1)


def reference_resnet(model: TinyResNet, x, target, spec):
    """Relevance of every input pixel for one sample, walking TinyResNet by hand with dense matrices."""
    m = model
    acts = {}
    with torch.no_grad():
        acts["x"] = x
        acts["stem"] = torch.relu(m.bn1(m.conv1(x[None])))[0]
        acts["pool"] = m.maxpool(acts["stem"][None])[0]
        acts["a_mid"] = torch.relu(m.a_bn1(m.a_conv1(acts["pool"][None])))[0]
        acts["a_main"] = m.a_bn2(m.a_conv2(acts["a_mid"][None]))[0]
        acts["a_out"] = torch.relu(acts["a_main"] + acts["pool"])
        acts["b_mid"] = torch.relu(m.b_bn1(m.b_conv1(acts["a_out"][None])))[0]
        acts["b_main"] = m.b_bn2(m.b_conv2(acts["b_mid"][None]))[0]
        acts["b_skip"] = m.b_down_bn(m.b_down(acts["a_out"][None]))[0]
        acts["b_out"] = torch.relu(acts["b_main"] + acts["b_skip"])
        acts["gap"] = acts["b_out"].mean((1, 2))
        logits = m.fc(acts["gap"][None])[0]

    def rule_for(layer):
        return spec.get(layer) or spec["conv" if layer not in ("fc", "gap") else ("linear" if layer == "fc" else "pool")]

    def through_conv(name, conv, a, r_out, first=False):
        rule, params = rule_for("first" if first else name)
        W = conv_dense(conv, tuple(a.shape))
        b = conv_bias(conv, tuple(r_out.shape))
        extra = dict(params)
        if rule == "flat" or params.get("fallback"):
            extra["structure"] = conv_dense(conv, tuple(a.shape), torch.ones_like(conv.weight))
        if rule == "zbox":
            extra["low"] = LOW[:, None, None].expand(a.shape).reshape(-1)
            extra["high"] = HIGH[:, None, None].expand(a.shape).reshape(-1)
        if not params.get("bias", True):
            b = torch.zeros_like(b)
        return lrp_dense(rule, W, b, a.reshape(-1), r_out.reshape(-1), **extra).reshape(a.shape)

    start_mode = spec["start"]
    onehot = F.one_hot(torch.tensor(target), 5).to(logits)
    r = onehot * {"one": 1.0, "logit": logits, "softmax": logits.softmax(0)}[start_mode]
    rule, params = rule_for("fc")
    b = m.fc.bias if params.get("bias", True) else torch.zeros_like(m.fc.bias)
    r = lrp_dense(rule, m.fc.weight, b, acts["gap"], r, **params)
    rule, params = rule_for("gap")
    G = dense(lambda v: F.adaptive_avg_pool2d(v, 1), tuple(acts["b_out"].shape))
    r = lrp_dense(rule, G, torch.zeros(G.shape[0], dtype=torch.float64), acts["b_out"].reshape(-1), r,
                  **params).reshape(acts["b_out"].shape)
    mode, with_identity, eps = spec["split"]
    r_main, r_skip = split(mode, r, acts["b_main"], acts["b_skip"], False, eps)  # a projection always shares
    r_mid = through_conv("b_conv2", m.b_conv2, acts["b_mid"], r_main)
    r_a = through_conv("b_conv1", m.b_conv1, acts["a_out"], r_mid)
    r_a = r_a + through_conv("b_down", m.b_down, acts["a_out"], r_skip)
    r_main, r_skip = split(mode, r_a, acts["a_main"], acts["pool"], not with_identity, eps)
    r_mid = through_conv("a_conv2", m.a_conv2, acts["a_mid"], r_main)
    r_pool = through_conv("a_conv1", m.a_conv1, acts["pool"], r_mid) + r_skip
    stem = acts["stem"]
    if spec["maxpool"] == "winner":
        M = torch.zeros(r_pool.numel(), stem.numel(), dtype=torch.float64)
        _, idx = F.max_pool2d(stem[None], 3, 2, 1, return_indices=True)
        channel_offset = (torch.arange(stem.shape[0]) * stem[0].numel())[:, None, None]
        M[torch.arange(r_pool.numel()), (idx[0] + channel_offset).reshape(-1)] = 1.0
        r_stem = (M * r_pool.reshape(-1)[:, None]).sum(0).reshape(stem.shape)
    else:
        k, s, p, eps_pool = ((3, 2, 1, 0.0) if spec["maxpool"] == "proportional" else (2, 2, 0, 1e-5))
        P = dense(lambda v: F.avg_pool2d(v, k, s, p), tuple(stem.shape))
        r_stem = lrp_dense("zplus", P, torch.zeros(P.shape[0], dtype=torch.float64), stem.reshape(-1),
                           r_pool.reshape(-1), eps=eps_pool).reshape(stem.shape)
    return through_conv("conv1", m.conv1, x, r_stem, first=True)


def make_resnet(seed=0):
    torch.manual_seed(seed)
    model = TinyResNet()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return randomize_batchnorm(model, seed).double().eval().requires_grad_(False)


CASES = {
    "zplus-ratio": (
        {"conv": ("zplus", {"eps": 1e-9}), "linear": ("zplus", {"eps": 1e-9}), "pool": ("zplus", {"eps": 1e-9}),
         "split": ("ratio", True, 0.0), "maxpool": "winner", "start": "softmax"},
        lrpc.Rules(conv=ZPlus(epsilon=1e-9), linear=ZPlus(epsilon=1e-9), pool=ZPlus(epsilon=1e-9))),
    "epsilon-symmetric": (
        {"conv": ("epsilon", {"eps": 1e-3}), "linear": ("epsilon", {"eps": 1e-3}), "pool": ("epsilon", {"eps": 1e-3}),
         "split": ("symmetric", True, 0.0), "maxpool": "winner", "start": "logit"},
        lrpc.Rules(conv=Epsilon(1e-3), linear=Epsilon(1e-3), pool=Epsilon(1e-3), splitting=Splitting("symmetric"),
                   start="logit")),
    "zero-proportional": (
        {"conv": ("zero", {}), "linear": ("zero", {}), "pool": ("zero", {}),
         "split": ("proportional", True, 0.0), "maxpool": "winner", "start": "one"},
        lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), splitting=Splitting("proportional"), start="one")),
    "alphabeta-ratio-noidentity": (
        {"conv": ("alphabeta", {"alpha": 2.0, "beta": 1.0, "eps": 1e-6}), "linear": ("epsilon", {"eps": 1e-6}),
         "pool": ("epsilon", {"eps": 1e-6}), "split": ("ratio", False, 0.0), "maxpool": "winner", "start": "logit"},
        lrpc.Rules(conv=AlphaBeta(2.0, 1.0), linear=Epsilon(), pool=Epsilon(), splitting=Splitting("ratio", False),
                   start="logit")),
    "gamma-zbox-proportional-pool": (
        {"conv": ("gamma", {"gamma": 0.25, "eps": 1e-6}), "first": ("zbox", {"eps": 1e-6}),
         "linear": ("epsilon", {"eps": 1e-6}), "pool": ("epsilon", {"eps": 1e-6}),
         "split": ("symmetric", False, 0.0), "maxpool": "proportional", "start": "logit"},
        lrpc.Rules(conv=Gamma(0.25), linear=Epsilon(), pool=Epsilon(), layers=(("first", ZBox(LOW, HIGH)),),
                   splitting=Splitting("symmetric", False), maxpool="proportional", start="logit")),
    "gamma-original-flat-avg2x2": (
        {"conv": ("gamma_original", {"gamma": 0.25, "eps": 1e-6}), "first": ("flat", {"eps": 1e-6}),
         "linear": ("zero", {}), "pool": ("zplus", {"eps": 1e-6}),
         "split": ("proportional", True, 1e-6), "maxpool": "avg2x2", "start": "logit"},
        lrpc.Rules(conv=Gamma(0.25, generalized=False), linear=Zero(), pool=ZPlus(),
                   layers=(("first", Flat()),), splitting=Splitting("proportional", True, 1e-6), maxpool="avg2x2",
                   start="logit")),
    "wsquare-first-zplus-bias": (
        {"conv": ("zplus", {"eps": 1e-6}), "first": ("wsquare", {"eps": 1e-6}), "linear": ("zplus", {"eps": 1e-6}),
         "pool": ("zplus", {"eps": 1e-6}), "split": ("ratio", True, 0.0), "maxpool": "winner", "start": "softmax"},
        lrpc.Rules(conv=ZPlus(), linear=ZPlus(), pool=ZPlus(), layers=(("first", WSquare()),))),
}

OTSUKI = {"conv": ("zplus", {"eps": 1e-5, "bias": False}), "linear": ("zplus", {"eps": 1e-5, "bias": False}),
          "pool": ("zplus", {"eps": 1e-5, "bias": False}), "first": ("zplus_ones", {"eps": 1e-5}),
          "maxpool": "avg2x2", "start": "softmax"}
DEFAULT = {"conv": ("zplus", {"eps": 0.0, "bias": False, "fallback": True}),
           "linear": ("zplus", {"eps": 0.0, "bias": False, "fallback": True}),
           "pool": ("zplus", {"eps": 0.0, "bias": False, "fallback": True}),
           "split": ("ratio", True, 0.0), "maxpool": "winner", "start": "softmax"}
TABLE2 = {"otsuki2024": ("ratio", True), "otsuki2024-i": ("symmetric", False), "otsuki2024-ii": ("symmetric", True),
          "otsuki2024-iii": ("ratio", False)}


def _compare(model, rules, spec, x):
    explainer = lrpc.compile(model, rules=rules, example_input=x[:1])
    exp = explainer(x)
    for s in range(x.shape[0]):
        expected = reference_resnet(model, x[s], int(exp.target[s]), spec)
        scale = expected.detach().abs().max()
        assert torch.allclose(exp.relevance[s], expected, rtol=0, atol=1e-6 * float(scale)), (
            f"max abs diff {(exp.relevance[s] - expected).abs().max():.3g} (scale {scale:.3g})")


@pytest.mark.parametrize("case", list(CASES))
def test_rules_and_splitting_match_reference(case):
    spec, rules = CASES[case]
    model = make_resnet(seed=len(case))
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    _compare(model, rules, spec, x)


@pytest.mark.parametrize("name", list(TABLE2))
def test_otsuki_presets_match_reference(name):
    mode, with_identity = TABLE2[name]
    spec = {**OTSUKI, "split": (mode, with_identity, 0.0)}
    model = make_resnet(seed=3)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    _compare(model, name, spec, x)


def test_default_preset_matches_reference_and_conserves():
    model = make_resnet(seed=9)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _compare(model, "default", DEFAULT, x)
    exp = lrpc.compile(model, rules="default", example_input=x[:1])(x)
    assert float(exp.conservation_error().max()) < 1e-12


class EightConvVGG(nn.Module):
    """VGG's pattern with 8 convs, so every rule range of the montavon-vgg16 preset is exercised."""

    def __init__(self):
        super().__init__()
        layers, c = [], 2
        for width, pool in [(3, False), (3, True), (4, False), (4, True), (4, False), (4, False), (3, False),
                            (3, True)]:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2, 2)] if pool else []
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(6, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_montavon_preset_matches_reference():
    """z^B on conv 1, γ (original) on convs 2–7, ε·RMS on conv 8, LRP-0 classifier, 2x2-average max-pools."""
    torch.manual_seed(5)
    model = EightConvVGG().double().eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exp = lrpc.compile(model, rules=lrpc.preset("montavon-vgg16", low=LOW, high=HIGH), example_input=x[:1])(x)
    for s in range(2):
        with torch.no_grad():
            acts, a = [], x[s][None]
            for layer in model.features:        # the input of every layer, in order
                acts.append(a[0])
                a = layer(a)
            h = torch.relu(model.classifier[0](a.reshape(1, -1)))[0]
            logits = model.classifier[3](h[None])[0]
        t = int(exp.target[s])
        r = torch.zeros(5, dtype=torch.float64)
        r[t] = logits[t]
        r = lrp_dense("zero", model.classifier[3].weight, model.classifier[3].bias, h, r)
        r = lrp_dense("zero", model.classifier[0].weight, model.classifier[0].bias, a.reshape(-1), r)
        conv_index = sum(isinstance(m, nn.Conv2d) for m in model.features)
        for layer, a_in in zip(reversed(list(model.features)), reversed(acts)):
            shape_in = tuple(a_in.shape)
            if isinstance(layer, nn.MaxPool2d):
                P = dense(lambda v: F.avg_pool2d(v, 2, 2), shape_in)
                r = lrp_dense("zplus", P, torch.zeros(P.shape[0], dtype=torch.float64), a_in.reshape(-1), r,
                              eps=1e-9)
            elif isinstance(layer, nn.Conv2d):
                conv_index -= 1
                W, b = conv_dense(layer, shape_in), conv_bias(layer, (layer.out_channels, *shape_in[1:]))
                if conv_index == 0:
                    r = lrp_dense("zbox", W, b, a_in.reshape(-1), r, eps=1e-9,
                                  low=LOW[:, None, None].expand(shape_in).reshape(-1),
                                  high=HIGH[:, None, None].expand(shape_in).reshape(-1))
                elif conv_index <= 6:
                    r = lrp_dense("gamma_original", W, b, a_in.reshape(-1), r, gamma=0.25, eps=1e-9)
                else:
                    r = lrp_dense("epsilon_rms", W, b, a_in.reshape(-1), r, eps=0.25)
        expected = r.reshape(x[s].shape)
        assert torch.allclose(exp.relevance[s], expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
