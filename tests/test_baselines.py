"""Baselines: shapes, finiteness, and agreement with what each method is defined to satisfy."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrpc.baselines import BASELINES, explain_baseline
from lrpc.data import groundtruth_architecture, groundtruth_model, normalize, split_scenes
from lrpc.errors import LrpcError



@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    scenes = split_scenes("test", 3)
    return groundtruth_model(), normalize(scenes.images), torch.from_numpy(scenes.masks), torch.from_numpy(scenes.labels)


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_returns_a_finite_map_per_image(batch, name):
    model, images, masks, labels = batch
    options = {"masks": masks} if name == "oracle" else {}
    if name == "integrated_gradients":
        options["steps"] = 8
    maps = explain_baseline(name, model, images, labels, **options)
    assert maps.shape == (3, 64, 64)
    assert torch.isfinite(maps).all()
    assert maps.flatten(1).std(1).min() > 0  # not a constant map


def test_gradcam_matches_captum_layer_gradcam(batch):
    from captum.attr import LayerAttribution, LayerGradCam

    model, images, masks, labels = batch
    ours = explain_baseline("gradcam", model, images, labels)
    coarse = LayerGradCam(model, model.layer4[-1]).attribute(images, target=labels, relu_attributions=True)
    reference = LayerAttribution.interpolate(coarse, (64, 64), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_is_complete_from_the_zero_input(batch):
    model, images, masks, labels = batch
    maps = explain_baseline("integrated_gradients", model, images, labels)
    with torch.no_grad():
        gaps = model(images) - model(torch.zeros_like(images))
    # Completeness: the map sums to f_target(x) - f_target(0), up to the error of 50 quadrature steps; and to
    # that class's gap, not another's.
    sums = maps.flatten(1).sum(1)
    own_gap = gaps.gather(1, labels[:, None])[:, 0]
    assert ((sums - own_gap).abs() <= 0.1 * own_gap.abs() + 0.05).all()
    assert ((sums[:, None] - gaps).abs().argmin(1) == labels).all()


def test_lrp_epsilon_conserves_relevance_through_residual_adds():
    # Fresh batch norms and a zero fc bias leave no bias anywhere, so LRP-epsilon (tiny epsilon) must return
    # exactly the logit; passing the full relevance to both summands of each of the 8 adds would not.
    torch.manual_seed(0)
    model = groundtruth_architecture().eval()
    with torch.no_grad():
        model.fc.bias.zero_()
    images = torch.randn(2, 3, 64, 64)
    targets = torch.tensor([0, 3])
    maps = explain_baseline("lrp_epsilon", model, images, targets, epsilon=1e-9)
    with torch.no_grad():
        logits = model(images).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(maps.flatten(1).sum(1), logits, rtol=1e-3, atol=1e-5)


def test_targets_default_to_the_predicted_class(batch):
    model, images, masks, labels = batch
    with torch.no_grad():
        predicted = model(images).argmax(1)
    torch.testing.assert_close(explain_baseline("gradcam", model, images),
                               explain_baseline("gradcam", model, images, predicted))


def test_channels_first_keeps_channel_zero_as_the_authors_scored_it(batch):
    model, images, masks, labels = batch
    summed = explain_baseline("guided_backprop", model, images, labels)
    first = explain_baseline("guided_backprop", model, images, labels, channels="first")
    assert first.shape == summed.shape and not torch.allclose(first, summed)


def test_random_map_depends_only_on_the_seed(batch):
    model, images, masks, labels = batch
    torch.testing.assert_close(explain_baseline("random", model, images, seed=3),
                               explain_baseline("random", model, images, seed=3))
    assert not torch.equal(explain_baseline("random", model, images, seed=3),
                           explain_baseline("random", model, images, seed=4))


def test_oracle_is_the_mask(batch):
    model, images, masks, labels = batch
    assert torch.equal(explain_baseline("oracle", model, images, masks=masks), masks.float())
    with pytest.raises(ValueError, match="masks="):
        explain_baseline("oracle", model, images)


def test_unknown_baseline_and_bad_targets_are_named(batch):
    model, images, masks, labels = batch
    with pytest.raises(LrpcError, match="unknown baseline 'gradcam\\+\\+'"):
        explain_baseline("gradcam++", model, images)
    with pytest.raises(ValueError, match="targets must be"):
        explain_baseline("gradcam", model, images, torch.tensor([0, 1]))


class DataDependentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        if x.mean() > 0:  # fx cannot trace a branch on a tensor value
            x = x * 2
        return self.fc(x.mean((2, 3)))


def test_lrp_epsilon_refuses_a_model_fx_cannot_trace():
    with pytest.raises(LrpcError, match="torch.fx-traceable"):
        explain_baseline("lrp_epsilon", DataDependentBranch().eval(), torch.randn(1, 3, 8, 8), 0)


def test_a_missing_captum_is_named(batch, monkeypatch):
    model, images, masks, labels = batch
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(LrpcError, match="pip install captum"):
        explain_baseline("integrated_gradients", model, images, labels)
