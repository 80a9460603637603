"""Baselines: shapes, finiteness, and agreement with what each method is defined to satisfy."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lrpc.baselines import ATTENTION_METHODS, BASELINES, CAM_METHODS, explain_baseline
from lrpc.data import groundtruth_architecture, groundtruth_model, normalize, split_scenes
from lrpc.errors import LrpcError



@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    scenes = split_scenes("test", 3)
    return groundtruth_model(), normalize(scenes.images), torch.from_numpy(scenes.masks), torch.from_numpy(scenes.labels)


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_returns_a_finite_map_per_image(batch, name):
    """On the shipped ResNet (on the shipped ViT for the attention methods)."""
    model, images, masks, labels = batch
    if name in ATTENTION_METHODS:
        model = groundtruth_model("vit")
    options = {"masks": masks} if name == "oracle" else {}
    if name == "integrated_gradients":
        options["steps"] = 8
    if name in ("scorecam", "ablationcam"):
        options["batch_size"] = 256   # every channel of the layer in one forward pass
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


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    return model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 8])


def test_cams_on_torchvision_resnet18_match_captums_layer_attributions(resnet18):
    # Grad-CAM = ReLU(sum_k mean(dS/dA_k) A_k) (captum's LayerGradCam) and HiRes-CAM = ReLU(sum_k dS/dA_k * A_k)
    # (captum's LayerGradientXActivation summed over channels), on a layer whose gradient is not uniform.
    from captum.attr import LayerAttribution, LayerGradCam, LayerGradientXActivation

    model, images, targets = resnet18
    references = {"gradcam": LayerGradCam(model, model.layer3).attribute(images, target=targets,
                                                                          relu_attributions=True),
                  "hirescam": LayerGradientXActivation(model, model.layer3).attribute(
                      images, target=targets).sum(1, keepdim=True).clamp(min=0)}
    maps = {}
    for name, reference in references.items():
        maps[name] = explain_baseline(name, model, images, targets, layer="layer3")
        upsampled = LayerAttribution.interpolate(reference, images.shape[-2:], interpolate_mode="bilinear")[:, 0]
        torch.testing.assert_close(maps[name], upsampled.detach(), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps["gradcam"], maps["hirescam"])


@pytest.mark.parametrize("name", CAM_METHODS)
def test_normalise_gives_pytorch_grad_cams_output_which_is_our_map_min_max_normalised(batch, name):
    from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                                  XGradCAM)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images, masks, labels = batch
    images, labels = images[:1], labels[:1]
    options = {"batch_size": 256} if name in ("scorecam", "ablationcam") else {}
    ours = explain_baseline(name, model, images, labels, **options)
    normalised = explain_baseline(name, model, images, labels, normalise=True, **options)
    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "xgradcam": XGradCAM,
               "layercam": LayerCAM, "eigencam": EigenCAM, "hirescam": HiResCAM, "ablationcam": AblationCAM}
    cam = classes[name](model=model, target_layers=[model.layer4[-1]])
    if name == "scorecam":
        cam.batch_size = 256
    try:
        library = torch.from_numpy(cam(images, targets=[ClassifierOutputTarget(int(c)) for c in labels]))
    finally:
        cam.activations_and_grads.release()
    torch.testing.assert_close(normalised, library, rtol=0, atol=1e-6)
    low = ours.flatten(1).min(1).values[:, None, None]
    high = ours.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close((ours - low) / (high - low + 1e-7), library, rtol=0, atol=1e-5)


def test_cams_leave_the_model_as_they_found_it(batch):
    model, images, masks, labels = batch
    block = model.layer4[-1]
    grads = [parameter.grad for parameter in model.parameters()]
    with torch.no_grad():
        before = model(images)
    explain_baseline("gradcam", model, images, labels)   # pytorch-grad-cam runs model.zero_grad() and backward()
    explain_baseline("ablationcam", model, images[:1], labels[:1], batch_size=256)  # swaps the layer out and back
    assert all(parameter.grad is grad for parameter, grad in zip(model.parameters(), grads))
    assert model.layer4[-1] is block and not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(images), before)


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(F.relu(self.conv(x))).mean((2, 3)))


def test_cam_option_errors_are_named(batch, monkeypatch):
    model, images, masks, labels = batch
    with pytest.raises(LrpcError, match="ran 2 times"):
        explain_baseline("gradcam", SharedConv().eval(), torch.randn(1, 3, 8, 8), 0, layer="conv")
    with pytest.raises(LrpcError, match="not a submodule"):
        explain_baseline("gradcam", model, images, labels, layer="layer9")
    with pytest.raises(ValueError, match="batch_size= applies to"):
        explain_baseline("gradcam", model, images, labels, batch_size=8)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(LrpcError, match="pip install grad-cam"):
        explain_baseline("gradcam", model, images, labels)


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
    with pytest.raises(LrpcError, match="unknown baseline 'fullgrad'"):
        explain_baseline("fullgrad", model, images)
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
