"""``explainer.compile()`` hands the generated module to torch.compile (inductor; on CPU it needs a C++
compiler): compiled and eager explanations agree to 1e-5 — input relevance, readouts, logits — including the
paths eager mode takes only when needed (0/0 guards; the z+ fallback, one opaque op that runs only where an
output is an orphan) and the multi-target module."""
import shutil
import warnings

import pytest
import torch
from torch import nn

import lrpc

from conftest import randomize_batchnorm

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None,
                                reason="inductor on CPU needs a C++ compiler")


class TinyResNet(nn.Module):
    """Stem, max-pool, one residual block with BatchNorm, global average pool and a classifier."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn0(self.stem(x))))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        x = torch.relu(x + y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _close(compiled: torch.Tensor, eager: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(((compiled - eager).abs().max() <= tol * eager.abs().max().clamp_min(1e-12)).item())


def _explainers(preset):
    torch.manual_seed(0)
    model = randomize_batchnorm(TinyResNet()).eval()
    x = torch.randn(3, 3, 16, 16)
    eager = lrpc.compile(model, preset, example_input=x[:1])
    return x, eager, lrpc.compile(model, preset, example_input=x[:1]).compile()


def _assert_same(c, e):
    assert torch.equal(c.target, e.target)
    assert _close(c.relevance, e.relevance)
    assert _close(c.layer_sum_matrix, e.layer_sum_matrix)
    assert _close(c.node_sum_matrix, e.node_sum_matrix)
    assert _close(c.logits, e.logits)


def test_compiled_equals_eager():
    x, eager, compiled = _explainers("otsuki2024")
    target = torch.tensor([2, 0, 4])
    _assert_same(compiled(x, target), eager(x, target))


@pytest.mark.slow   # a benchmark run / a ResNet through inductor: minutes on 2 cores; `make test-slow`
def test_compiled_fallback_equals_eager_where_it_matters():
    """An image with a blank patch and a stem channel with only negative weights and a positive bias give z+
    orphans of both kinds (all-zero windows, outputs with only negative evidence): the fallback changes the
    result here, and the generated module under torch.compile agrees with eager code."""
    torch.manual_seed(1)
    model = randomize_batchnorm(TinyResNet()).eval()
    with torch.no_grad():
        model.stem.weight[0] = -model.stem.weight[0].abs()
        model.stem.bias[0] = 2.0
    x = torch.randn(3, 3, 16, 16)
    x[:, :, 4:10, 4:10] = 0.0
    eager = lrpc.compile(model, "default", example_input=x[:1])
    no_fallback = lrpc.rules.ZPlus(epsilon=0.0, stabilizer_mode="none", bias=False)
    plain = lrpc.compile(model, lrpc.preset("default").replace(conv=no_fallback), example_input=x[:1])
    assert float(plain(x).conservation_error().max()) > 1e-3          # without the fallback, relevance is lost
    assert float(eager(x).conservation_error().max()) < 1e-5          # the orphans were routed
    with torch.inference_mode():
        compiled = torch.compile(eager.module)(x, None)
        want = eager.module(x, None)
    for got, expected in zip(compiled[:5], want[:5]):   # logits, target, relevance, layer and node sums
        assert _close(got, expected) if got.is_floating_point() else torch.equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["otsuki2024", "default"])
def test_compiled_equals_eager_every_entry_point(preset):
    x, eager, compiled = _explainers(preset)
    _assert_same(compiled(x), eager(x))
    _assert_same(compiled(x, 1), eager(x, 1))
    _assert_same(compiled.explain_targets(x, [0, 4]), eager.explain_targets(x, [0, 4]))


@pytest.mark.parametrize("preset", ["otsuki2024", "default", "epsilon-plus-flat"])
def test_one_graph_without_breaks(preset):
    """Dynamo traces the whole generated module as ONE graph: no data-dependent branch splits it."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    explainer = lrpc.compile(randomize_batchnorm(TinyResNet()).eval(), preset, example_input=x[:1])
    with torch.inference_mode():
        report = torch._dynamo.explain(explainer.module)(x, torch.tensor([1, 3]))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def _tiny_vit():
    from torchvision.models.vision_transformer import VisionTransformer
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.02)   # torchvision's zero head would start every preset at 0
    return model


def _tiny_swin():
    import timm   # timm's Swin averages its tokens with a mean, where torchvision's pools
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=4,
                             embed_dim=8, depths=(2,), num_heads=(2,), num_classes=5)


@pytest.mark.parametrize("preset", ["default", "cp-lrp", "attnlrp"])
@pytest.mark.parametrize("build", [_tiny_vit, _tiny_swin], ids=["vit", "swin"])
def test_transformers_trace_as_one_graph(build, preset):
    """ViT's [T, B, E] residual splits (an ``out=`` into a non-contiguous tensor) and Swin's means over the
    window grid (``math.prod`` of a generator) each split the graph before: no break now."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    explainer = lrpc.compile(build().eval(), preset, example_input=x[:1])
    with torch.inference_mode():
        report = torch._dynamo.explain(explainer.module)(x, torch.tensor([1, 3]))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


def test_compiling_a_fallback_rule_set_compiles_it():
    """``default`` (the z+ fallback) is compiled like any rule set: no warning, the compiled module runs."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer = lrpc.compile(TinyResNet().eval(), "default", example_input=x).compile()
    assert explainer._build.run is not explainer.module
