"""Functional ops are first-class: each form in the op table on a bias-free network, checked against the
LRP-0 = gradient × input identity (exact for piecewise-linear bias-free networks), plus conservation."""
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.rules import Zero
from lrpc.splitting import Splitting

LRP0 = lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), splitting=Splitting("proportional"), start="logit")


class Zoo(nn.Module):
    """Every structural op of the issue in one bias-free piecewise-linear network."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 0, 2, 1))
        self.stem = nn.Conv2d(3, 8, 3, bias=False)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.shared = nn.Conv2d(8, 8, 1, bias=False)           # used twice
        self.relu6 = nn.ReLU6(inplace=True)
        self.drop = nn.Dropout(0.3)
        self.ident = nn.Identity()
        self.register_parameter("fweight", nn.Parameter(torch.randn(8, 16, 1, 1) * 0.3))
        self.fc = nn.Linear(24, 5, bias=False)

    def forward(self, x):
        x = F.relu(self.stem(self.pad(x)), inplace=True)
        a = torch.relu(self.grouped(x))
        b = self.relu6(self.depthwise(x))
        y = torch.cat([a, b], 1)                                  # cat
        y = F.conv2d(y, self.fweight)                              # functional conv, get_attr weight
        y = operator.add(y, x)                                     # functional add
        y = torch.add(self.shared(y), y)                           # torch.add
        y = self.shared(self.drop(self.ident(y)))                  # second use of the same module
        y.add_(x)                                                  # in-place method
        y = F.relu(y)
        y = F.max_pool2d(y, 2)
        z = F.avg_pool2d(y, 2, 1)
        pooled = F.adaptive_avg_pool2d(z, 1).view(z.size(0), -1)  # view with size()
        means = z.mean((2, 3))                                      # x.mean(dims)
        peaks = y.amax(dim=(2, 3)).reshape(-1, 8)                  # x.amax(dims), reshape
        feats = torch.cat([pooled, means, torch.flatten(peaks, 1)], dim=1)
        return self.fc(feats)


def test_zoo_lrp0_equals_gradient_times_input():
    torch.manual_seed(0)
    model = Zoo().double().eval()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 4])
    exp = lrpc.compile(model, rules=LRP0, example_input=x[:1].detach())(x.detach(), target)
    (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    assert torch.allclose(exp.relevance, grad * x.detach(), rtol=1e-8, atol=1e-12)
    assert torch.allclose(exp.relevance.sum((1, 2, 3)), exp.start, rtol=1e-9)


def test_zoo_conserves_at_every_layer_under_default_preset():
    torch.manual_seed(1)
    model = Zoo().double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    exp = lrpc.compile(model, rules="default", example_input=x[:1])(x)
    assert float(exp.conservation_error().max()) < 1e-7
    assert torch.isfinite(exp.relevance).all()


class ModuleBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def head(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InPlaceAdd(ModuleBlock):
    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x
        return self.head(self.relu(out))


class OperatorAdd(ModuleBlock):
    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.relu(x + out))


class TorchAddFunctionalConv(ModuleBlock):
    def forward(self, x):
        out = F.conv2d(x, self.conv1.weight, None, 1, 1)
        out = self.bn2(self.conv2(F.relu(self.bn1(out))))
        return self.head(F.relu(torch.add(out, x)))


@pytest.mark.parametrize("preset", ["otsuki2024", "default", "epsilon-plus", "otsuki2024-iii"])
def test_every_spelling_of_a_residual_block_explains_alike(preset):
    torch.manual_seed(2)
    reference = InPlaceAdd()
    from conftest import randomize_batchnorm
    randomize_batchnorm(reference)
    x = torch.rand(2, 4, 6, 6)
    results = []
    for cls in (InPlaceAdd, OperatorAdd, TorchAddFunctionalConv):
        model = cls()
        model.load_state_dict(reference.state_dict())
        model.eval()
        explainer = lrpc.compile(model, rules=preset, example_input=x[:1])
        kinds = {p.add_kind.kind for p in explainer.plans.values() if p.add_kind is not None}
        assert kinds == {"identity"}, cls.__name__
        results.append(explainer(x, 1).relevance)
    for other in results[1:]:
        assert torch.allclose(results[0], other, rtol=1e-5, atol=1e-7)


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1 = nn.Conv2d(6, 3, 1)
        self.fc2 = nn.Conv2d(3, 6, 1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        x = x * gate
        return self.head(x.mean((2, 3)))


def test_squeeze_excite_gate_gets_no_relevance():
    torch.manual_seed(3)
    model = SqueezeExcite().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    explainer = lrpc.compile(model, rules="default", example_input=x[:1])
    assert {"fc1", "fc2", "sigmoid"}.isdisjoint(explainer.layer_names)  # the gate branch carries nothing
    gate = next(p for p in explainer.plans.values() if p.info.kind == "gate")
    assert gate.info.inputs[0].name == "relu"
    exp = explainer(x)
    assert float(exp.conservation_error().max()) < 1e-6


def test_a_module_used_twice_shares_its_rule_constants():
    torch.manual_seed(4)
    model = Zoo().eval()
    explainer = lrpc.compile(model, rules="default", example_input=torch.rand(1, 3, 12, 12))
    buffers = [name for name, _ in explainer.module.named_buffers() if name.startswith("lrpc_const_shared")]
    assert len(buffers) == 2  # W⁺ and W⁻ of `shared`, once, although the module is called twice


class ConstantsAndBroadcasts(nn.Module):
    """A bias read through .view, an in-model normalisation, a broadcast residual operand, a cropped conv input,
    and a FrozenBatchNorm-style affine made of buffers."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.d = nn.Conv2d(3, 4, 1)
        self.register_parameter("b", nn.Parameter(torch.randn(4)))
        self.register_buffer("frozen_scale", torch.rand(4) + 0.5)
        self.register_buffer("frozen_shift", torch.randn(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = (x - self.mean) / 0.25
        y = self.conv(F.pad(x, (-1, -1, -1, -1))) + self.b.view(1, -1, 1, 1)
        y = torch.relu(y + self.d(F.pad(x, (-1,) * 4)).mean((2, 3), keepdim=True))
        y = y * self.frozen_scale.view(1, -1, 1, 1) + self.frozen_shift.reshape(1, -1, 1, 1)
        return self.fc(y.mean((2, 3)))


def test_constants_through_views_broadcast_adds_and_crops():
    torch.manual_seed(6)
    model = ConstantsAndBroadcasts().double().eval()
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    for preset in ("default", "otsuki2024-iii", "epsilon-plus"):
        explainer = lrpc.compile(model, rules=preset, example_input=x[:1])
        exp = explainer(x)
        with torch.no_grad():
            torch.testing.assert_close(exp.logits, model(x))   # the compiled forward is the model's
        assert torch.isfinite(exp.relevance).all()
    adds = [p for p in explainer.plans.values() if p.info.kind == "add"]
    assert len(adds) == 1 and adds[0].add_kind.kind in ("projection", "generic")   # the broadcast residual add
    exp = lrpc.compile(model, rules="default", example_input=x[:1])(x)
    assert float(exp.conservation_error().max()) < 1e-9
