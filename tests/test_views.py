"""Views of a heatmap (lrpc.views): sign, Gaussian smoothing (against scipy's dense filter), the stem rule of
smooth="auto" (against values computed by hand from the architecture), and the errors naming the argument."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from scipy.ndimage import gaussian_filter
from torch import nn

import lrpc
from lrpc.views import gaussian_blur, sign_view


def scipy_blur(maps: torch.Tensor, sigma) -> torch.Tensor:
    """The reference: scipy's dense Gaussian filter, reflected border, 4 σ truncation, no blur over the batch."""
    sigmas = (sigma,) * (maps.dim() - 1) if np.isscalar(sigma) else tuple(sigma)
    return torch.from_numpy(gaussian_filter(maps.double().numpy(), (0, *sigmas), mode="reflect", truncate=4.0))


@pytest.mark.parametrize("shape, sigma", [((3, 50), 2.0),                 # audio [B, T]
                                          ((2, 17, 23), 2.5),             # image [B, H, W]
                                          ((2, 9, 11), 7.0),              # σ wider than the map: repeated reflection
                                          ((2, 5, 8, 9), (0.0, 1.5, 3.0)),  # video [B, T, H, W], frames apart
                                          ((1, 6, 7, 8), 1.2)])           # volume [B, D, H, W]
def test_blur_equals_scipys_dense_gaussian_filter(shape, sigma):
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(maps, sigma), scipy_blur(maps, sigma), rtol=1e-10, atol=1e-12)


def test_blur_keeps_a_constant_map_and_zero_sigma_is_the_identity():
    maps = torch.full((2, 8, 8), 3.0, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(maps, 2.0), maps)
    noise = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gaussian_blur(noise, 0.0), noise)


def test_sign_views_follow_their_definitions():
    heat = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sign_view(heat, "signed"), heat)
    positive = sign_view(heat, "positive")
    assert torch.equal(positive, torch.where(heat > 0, heat, torch.zeros_like(heat)))
    assert torch.equal(sign_view(heat, "absolute"), torch.where(heat < 0, -heat, heat))


@pytest.fixture(scope="module")
def explanation():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=torch.randn(1, 3, 32, 32))
    return explainer(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))


def test_heatmap_reads_sign_then_blur_then_quantization_and_leaves_the_relevance_alone(explanation):
    relevance = explanation.relevance.clone()
    heat = relevance.sum(1)
    assert torch.equal(explanation.heatmap(), heat)
    for sign, clip in (("signed", heat), ("positive", heat.clamp(min=0)), ("absolute", heat.abs())):
        blurred = scipy_blur(clip, 2.0).to(heat.dtype)
        torch.testing.assert_close(explanation.heatmap(sign=sign, smooth=2.0), blurred, rtol=1e-5, atol=1e-7)
        quantized = explanation.heatmap(sign=sign, smooth=2.0, quantize=8)
        torch.testing.assert_close(quantized, lrpc.heat_quantize(explanation.heatmap(sign=sign, smooth=2.0), 8))
    auto = explanation.explainer.smoothing_sigma
    torch.testing.assert_close(explanation.heatmap(smooth="auto"), scipy_blur(heat, auto).to(heat.dtype),
                               rtol=1e-5, atol=1e-7)
    assert torch.equal(explanation.relevance, relevance)


def uniform_box_sigma(*layers: tuple[int, int, int]) -> float:
    """σ of a chain of (kernel, stride, dilation) layers, each kernel a uniform box spread by the jump so far."""
    variance, jump = 0.0, 1
    for kernel, stride, dilation in layers:
        variance += (jump * dilation) ** 2 * (kernel ** 2 - 1) / 12
        jump *= stride
    return math.sqrt(variance)


class Chain(nn.Module):
    """A stem ``features`` followed by a residual block (a fork) and a classifier."""

    def __init__(self, features: nn.Module, channels: int, dims: int = 2):
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        self.features, self.block = features, conv(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        x = self.features(x)
        x = x + torch.relu(self.block(x))
        return self.head(x.flatten(2).mean(2))


@pytest.mark.parametrize("name, features, example, expected", [
    ("torchvision stem: 7x7/2 conv, 3x3/2 max pool",
     nn.Sequential(nn.Conv2d(3, 4, 7, 2, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, 2, 1)), (3, 32, 32),
     (uniform_box_sigma((7, 2, 1), (3, 2, 1)),) * 2),
    ("VGG stage: the blur stops at the first stride-1 conv after the pool",
     nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(2),
                   nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU()), (3, 16, 16),
     (uniform_box_sigma((3, 1, 1), (3, 1, 1), (2, 2, 1)),) * 2),
    ("dilated conv, then a patch conv", nn.Sequential(nn.Conv2d(3, 4, 3, 1, 2, dilation=2), nn.Conv2d(4, 4, 4, 4)),
     (3, 16, 16), (uniform_box_sigma((3, 1, 2), (4, 4, 1)),) * 2),
    ("anisotropic 3-D stem (video or volume)", nn.Sequential(nn.Conv3d(1, 4, (3, 5, 5), (1, 2, 2), (1, 2, 2))),
     (1, 6, 12, 12), (uniform_box_sigma((3, 1, 1)), uniform_box_sigma((5, 2, 1)), uniform_box_sigma((5, 2, 1)))),
])
def test_auto_sigma_is_the_stems_receptive_field_spread(name, features, example, expected):
    torch.manual_seed(0)
    model = Chain(features, 4, dims=len(example) - 1).eval()
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=torch.randn(1, *example))
    assert explainer.smoothing_sigma == pytest.approx(expected, rel=1e-12), name


def test_auto_sigma_of_torchvision_resnet_and_a_patch_vit():
    resnet = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    explainer = lrpc.compile(resnet, rules="epsilon-plus", example_input=torch.randn(1, 3, 32, 32))
    assert explainer.smoothing_sigma == pytest.approx((math.sqrt(4 + 8 / 3),) * 2)   # ≈ 2.58 px
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                               mlp_dim=16, num_classes=3).eval()
    explainer = lrpc.compile(vit, rules="attnlrp", example_input=torch.randn(1, 3, 32, 32))
    assert explainer.smoothing_sigma == pytest.approx((math.sqrt(63 / 12),) * 2)      # the 8x8 patch


def test_a_model_without_a_windowed_stem_is_not_blurred():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    explainer = lrpc.compile(model, rules="epsilon-plus", example_input=torch.randn(1, 3, 2, 2))
    exp = explainer(torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(4)))
    assert explainer.smoothing_sigma == ()
    assert torch.equal(exp.heatmap(smooth="auto"), exp.heatmap())


@pytest.mark.parametrize("options, message", [
    ({"sign": "negative"}, "sign must be one of"),
    ({"smooth": -1.0}, "smooth: σ must be finite and >= 0"),
    ({"smooth": float("nan")}, "smooth: σ must be finite and >= 0"),
    ({"smooth": "3"}, "smooth must be None, a σ"),
    ({"smooth": True}, "smooth must be None, a σ"),
    ({"smooth": (1.0, 2.0, 3.0)}, "smooth has 3 σ values for a map with 2 dimensions"),
    ({"quantize": 1}, "quantize must be None or an int >= 2"),
])
def test_bad_view_arguments_are_named(explanation, options, message):
    with pytest.raises(lrpc.LrpcError, match=message):
        explanation.heatmap(**options)
