"""The class-activation-map family, computed by pytorch-grad-cam (``pip install grad-cam``), the library the field
uses: Grad-CAM, Grad-CAM++, Score-CAM, XGrad-CAM, Layer-CAM, Eigen-CAM, HiRes-CAM and Ablation-CAM.

lrpc only picks the layer, passes the targets and reads the result; the weights and the CAM are the library's.

**Normalisation.** pytorch-grad-cam returns every map min-max normalised to [0, 1] per image. Rank-based metrics
(insertion/deletion, relevance rank accuracy, pointing game) do not change under that, but relevance mass
accuracy does: it shares out the positive values, and subtracting the map's minimum removes the floor that a
CAM of a small layer nearly always has (on the ground-truth benchmark 99 of 100 Grad-CAM maps are > 0 everywhere).
So by default we return the method's own map, unnormalised like every other baseline and like lrpc's relevance:
the library's coarse CAM (what its ``get_cam_image`` computes) after its ReLU, upsampled bilinearly with
half-pixel centres (what its ``cv2.resize`` does). ``normalise=True`` returns exactly the library's output,
which equals the default map min-max normalised (``(m - min) / (max - min + 1e-7)``; tested).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LrpcError

__all__ = ["CAM_METHODS", "class_activation_map", "last_conv_block", "resolve_layer"]

# Our name -> pytorch-grad-cam's class.
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "hirescam": "HiResCAM",
    "ablationcam": "AblationCAM",
}
# Methods that run the model once per channel of the layer; batch_size= sets how many channels per forward pass.
_PER_CHANNEL = ("scorecam", "ablationcam")


def last_conv_block(model: nn.Module) -> nn.Module:
    """The layer CAMs read by default: the last block of ``layer4`` for ResNets, else the last Conv2d."""
    stage = getattr(model, "layer4", None)
    if isinstance(stage, nn.Sequential) and len(stage) > 0:
        return stage[-1]
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise LrpcError(f"{type(model).__name__} has no Conv2d layer for a CAM; pass layer= explicitly")
    return convs[-1]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    if layer is None:
        return last_conv_block(model)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError as exc:
        raise LrpcError(f"layer {layer!r} is not a submodule of {type(model).__name__}") from exc


def _library():
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.ablation_layer import AblationLayer
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        raise LrpcError("the CAM baselines need pytorch-grad-cam (an optional extra of lrpc): "
                        "pip install grad-cam") from exc
    return pytorch_grad_cam, AblationLayer, ClassifierOutputTarget


def _check_runs_once(model: nn.Module, layer: nn.Module, image: torch.Tensor) -> None:
    """The library keeps one activation per call of the layer; a layer that runs twice would mix them up."""
    calls = []
    handle = layer.register_forward_hook(lambda module, inputs, output: calls.append(None))
    try:
        with torch.no_grad():
            model(image)
    finally:
        handle.remove()
    if len(calls) != 1:
        raise LrpcError(f"the CAM layer {type(layer).__name__} ran {len(calls)} times in one forward pass; "
                        f"pick a layer that runs exactly once")


@contextmanager
def _parameter_grads_kept(model: nn.Module):
    """The library calls ``model.zero_grad()`` and ``backward()``; leave the caller's ``.grad`` as it was."""
    parameters = list(model.parameters())
    saved = [p.grad for p in parameters]
    try:
        yield
    finally:
        for parameter, grad in zip(parameters, saved):
            parameter.grad = grad


def class_activation_map(method: str, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                         layer: str | nn.Module | None = None, normalise: bool = False,
                         batch_size: int | None = None) -> torch.Tensor:
    """pytorch-grad-cam's ``method`` (a key of ``CAM_METHODS``) on ``layer`` for ``targets``' logits; [B, H, W].

    ``normalise``: see the module docstring. ``batch_size``: channels per forward pass for scorecam and
    ablationcam (the library's defaults, 16 and 32, when None).
    """
    library, ablation_layer, classifier_target = _library()
    if batch_size is not None and method not in _PER_CHANNEL:
        raise ValueError(f"batch_size= applies to {list(_PER_CHANNEL)} only, not {method!r}")
    layer = resolve_layer(model, layer)
    _check_runs_once(model, layer, images[:1])
    options = {}
    if method == "ablationcam":
        # A fresh ablation layer: the library's default argument is one instance shared by every call.
        options["ablation_layer"] = ablation_layer()
        if batch_size is not None:
            options["batch_size"] = batch_size
    cam = getattr(library, CAM_METHODS[method])(model=model, target_layers=[layer], **options)
    if method == "scorecam" and batch_size is not None:
        cam.batch_size = batch_size  # read by ScoreCAM.get_cam_weights; not a constructor argument
    coarse = []
    library_cam_image = cam.get_cam_image

    def keep_coarse_cam(*args, **kwargs):
        coarse.append(library_cam_image(*args, **kwargs))
        return coarse[-1]

    cam.get_cam_image = keep_coarse_cam
    try:
        with _parameter_grads_kept(model):
            normalised = cam(images, targets=[classifier_target(c) for c in targets.tolist()])
    finally:
        cam.activations_and_grads.release()
    if normalise:
        return torch.from_numpy(normalised).to(device=images.device, dtype=images.dtype)
    relu = torch.from_numpy(np.maximum(coarse[0], 0))[:, None]
    upsampled = F.interpolate(relu, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return upsampled.to(device=images.device, dtype=images.dtype)
