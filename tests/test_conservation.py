"""Conservation and the LRP-0 = gradient × input identity on the real architectures (float64)."""
import pytest
import torch
import torchvision
from torch import nn

import lrpc
from lrpc.models.testing import vgg_with_narrow_classifier
from lrpc.rules import Zero
from lrpc.splitting import Splitting

from conftest import randomize_batchnorm


def _double(model):
    return randomize_batchnorm(model).double().eval()


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("resnet50", 64), ("vgg16", 32), ("vgg11_bn", 32)])
def test_default_preset_conserves_at_every_layer(arch, size):
    torch.manual_seed(0)
    # VGG's 25088x4096 classifier only costs time here: conservation does not depend on its width
    model = _double(vgg_with_narrow_classifier(arch, num_classes=10, hidden=256) if arch.startswith("vgg")
                    else torchvision.models.get_model(arch, weights=None, num_classes=10))
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    exp = lrpc.compile(model, rules="default", example_input=x[:1])(x)
    sums = exp.layer_sum_matrix
    start = exp.start[:, None]
    assert torch.all(start > 0)
    rel_err = ((sums - start).abs() / start.abs()).max()
    assert rel_err < 1e-6, f"largest relative deviation {rel_err:.3g}"
    assert len(exp.layer_sums) == sums.shape[1] and list(exp.layer_sums)[0] == "x"
    assert torch.allclose(exp.relevance.sum((1, 2, 3)), exp.start, rtol=1e-6, atol=0)


def test_start_modes():
    torch.manual_seed(0)
    model = _double(torchvision.models.resnet18(weights=None, num_classes=7))
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 3, 6])
    for mode, expected in [("one", torch.ones(3, dtype=torch.float64)),
                           ("logit", model(x).gather(1, target[:, None])[:, 0]),
                           ("softmax", model(x).softmax(1).gather(1, target[:, None])[:, 0])]:
        exp = lrpc.compile(model, rules="default", example_input=x[:1], start=mode)(x, target)
        assert torch.allclose(exp.start, expected.detach(), rtol=1e-10)
        assert torch.equal(exp.target, target)


class BiasFreeResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.proj = nn.Conv2d(6, 8, 1, stride=2, bias=False)
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x) + x)
        x = nn.functional.max_pool2d(x, 2, 1)
        x = torch.relu(self.c3(x) + self.proj(x))
        return self.fc(x.mean((2, 3)))


def test_lrp0_equals_gradient_times_input_on_bias_free_relu_network():
    torch.manual_seed(1)
    model = BiasFreeResidual().double().eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 3])
    rules = lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), splitting=Splitting("proportional"), start="logit")
    exp = lrpc.compile(model, rules=rules, example_input=x[:1].detach())(x.detach(), target)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    assert torch.allclose(exp.relevance, grad * x.detach(), rtol=1e-9, atol=1e-12)


def test_model_is_not_modified_and_calls_are_deterministic():
    torch.manual_seed(2)
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None, num_classes=5)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: getattr(m, "inplace", None) for n, m in model.named_modules()}
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=torch.randn(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    first, second = explainer(x), explainer(x)
    assert torch.equal(first.relevance, second.relevance)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {n: getattr(m, "inplace", None) for n, m in model.named_modules()}
    assert not model.training
    # the generated module shares the user's parameters and buffers instead of copying them
    shared = lrpc.compile(model, rules="default", example_input=torch.randn(1, 3, 32, 32))
    assert shared.module.get_parameter("layer1.0.conv2.weight") is model.layer1[0].conv2.weight
    assert shared.module.get_buffer("layer1.0.bn2.running_var") is model.layer1[0].bn2.running_var
