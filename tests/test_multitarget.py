"""explain_targets: K classes per image with one forward pass. Checked against the gradient × input identity
(LRP-0 on a bias-free ReLU network, one autograd call per target), against one explainer call per target for
the presets, and by counting how often the model's forward runs."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import torchvision
from torch import nn

import lrpc
from lrpc.rules import Zero
from lrpc.splitting import Splitting

from conftest import randomize_batchnorm

LRP0 = lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), splitting=Splitting("proportional"), start="logit")


class SkipNet(nn.Module):
    """Bias-free and piecewise linear, with a residual add and a max-pool, so LRP-0 = gradient × input exactly."""

    def __init__(self, classes: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.body = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, classes, bias=False)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.body(x) + x)
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


def test_lrp0_per_target_equals_gradient_times_input():
    torch.manual_seed(0)
    model = SkipNet().double().eval()
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    targets = torch.tensor([[0, 3, 5], [1, 1, 2]])
    exp = lrpc.compile(model, LRP0, example_input=x[:1]).explain_targets(x, targets)
    assert exp.relevance.shape == (6, 3, 10, 10)
    for b in range(2):
        for k in range(3):
            xb = x[b:b + 1].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(xb)[0, targets[b, k]], xb)
            assert torch.allclose(exp.relevance[b * 3 + k], (grad * xb)[0], rtol=1e-9, atol=1e-13)
            assert int(exp.target[b * 3 + k]) == int(targets[b, k])


@pytest.mark.parametrize("preset", ["otsuki2024", "default", "epsilon-plus"])
def test_equals_one_call_per_target(preset):
    torch.manual_seed(1)
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None, num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    explainer = lrpc.compile(model, preset, example_input=x[:1], keep=["layer1_0_conv1"])
    classes = [7, 0, 3]
    exp = explainer.explain_targets(x, classes)
    assert exp.relevance.shape == (6, 3, 32, 32)
    for k, c in enumerate(classes):
        one = explainer(x, c)
        rows = slice(k, None, len(classes))  # image-major: row b·K + k
        scale = one.relevance.abs().max()
        assert torch.allclose(exp.relevance[rows], one.relevance, rtol=0, atol=1e-6 * scale)
        assert torch.allclose(exp.layer_sum_matrix[rows], one.layer_sum_matrix, rtol=1e-5, atol=1e-7)
        assert torch.allclose(exp.node_sum_matrix[rows], one.node_sum_matrix, rtol=1e-5, atol=1e-7)
        assert torch.allclose(exp.logits[rows], one.logits, rtol=1e-6, atol=1e-6)
        assert torch.equal(exp.target[rows], one.target)
        assert torch.allclose(exp.relevances["layer1_0_conv1"][rows], one.relevances["layer1_0_conv1"],
                              rtol=0, atol=1e-6 * scale)
        assert torch.equal(exp.activations["layer1_0_conv1"][rows], one.activations["layer1_0_conv1"])


def test_forward_runs_once():
    torch.manual_seed(2)
    model = SkipNet().eval()
    explainer = lrpc.compile(model, "otsuki2024", example_input=torch.rand(1, 3, 10, 10))
    stem = model.stem.weight.data_ptr()

    class StemCalls(TorchDispatchMode):   # the batch of every convolution that reads the stem's weight
        def __init__(self):
            super().__init__()
            self.batches = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default) \
                    and args[1].data_ptr() == stem:
                self.batches.append(args[0].shape[0])
            return func(*args, **(kwargs or {}))

    with StemCalls() as calls:
        exp = explainer.explain_targets(torch.rand(2, 3, 10, 10), [0, 1, 2, 3])
    assert calls.batches == [2]              # one forward, on the two images
    assert exp.relevance.shape[0] == 8       # four relevance rows per image


@pytest.mark.parametrize("targets, message", [
    ([], "non-empty list"),
    ([1, 2.5], "non-empty list"),
    ([True], "non-empty list"),
    ("3", "list of ints"),
    (torch.tensor([1.0]), "integer tensor"),
    (torch.tensor([[1, 2]]), "B = 2"),
    (torch.zeros(2, 0, dtype=torch.long), "K >= 1"),
    ([0, 6], "out of range"),
])
def test_bad_targets_are_named(targets, message):
    explainer = lrpc.compile(SkipNet().eval(), "otsuki2024", example_input=torch.rand(1, 3, 10, 10))
    with pytest.raises(lrpc.LrpcError, match=message):
        explainer.explain_targets(torch.rand(2, 3, 10, 10), targets)


class BatchPermuter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.fc = nn.Linear(4, 5, bias=False)

    def forward(self, x):
        y = torch.relu(self.conv(x)).permute(1, 0, 2, 3)   # batch moved to dimension 1
        return self.fc(y.mean((2, 3)).permute(1, 0))


def test_refuses_a_graph_that_moves_the_batch():
    explainer = lrpc.compile(BatchPermuter().eval(), LRP0, example_input=torch.rand(1, 3, 8, 8))
    with pytest.raises(lrpc.LrpcError, match="batch in dimension 0"):
        explainer.explain_targets(torch.rand(2, 3, 8, 8), [0, 1])
