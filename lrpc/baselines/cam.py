"""Class activation maps on a chosen layer: Grad-CAM (Selvaraju et al., 2017) and Score-CAM (Wang et al., 2020).

Both return ReLU'd maps bilinearly upsampled to the input size (half-pixel centres, as cv2.resize in the
reference implementations). They are left unnormalised: every metric here is invariant to a positive scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LrpcError

__all__ = ["grad_cam", "last_conv_block", "resolve_layer", "score_cam"]


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


def _capture_activation(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(images)`` once and return (logits, the layer's output)."""
    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        logits = model(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise LrpcError(f"the CAM layer {type(layer).__name__} ran {len(captured)} times in one forward pass; "
                        f"pick a layer that runs exactly once")
    return logits, captured[0]


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             layer: str | nn.Module | None = None) -> torch.Tensor:
    """ReLU(sum_k w_k A_k) with w_k the spatial mean of d logit_target / d A_k; [B, H, W]."""
    layer = resolve_layer(model, layer)
    with torch.enable_grad():
        logits, activation = _capture_activation(model, layer, images.detach())
        score = logits.gather(1, targets[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, activation)
    weights = gradient.mean((2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach()).sum(1, keepdim=True))
    return _upsample(cam, images.shape[-2:])[:, 0]


@torch.no_grad()
def score_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              layer: str | nn.Module | None = None, batch_size: int = 256) -> torch.Tensor:
    """ReLU(sum_k s_k up(A_k)), s_k = softmax probability of the target on the input masked by up(A_k)
    rescaled to [0, 1]; channels that are constant over the image get weight 0. [B, H, W]."""
    layer = resolve_layer(model, layer)
    _, activation = _capture_activation(model, layer, images)
    maps = []
    for image, target, channels in zip(images, targets.tolist(), activation):
        upsampled = _upsample(channels[None], images.shape[-2:])[0]
        low = upsampled.amin((1, 2), keepdim=True)
        high = upsampled.amax((1, 2), keepdim=True)
        informative = (high > low).flatten()
        masks = (upsampled[informative] - low[informative]) / (high[informative] - low[informative])
        weights = torch.zeros(len(upsampled), dtype=images.dtype, device=images.device)
        if informative.any():
            weights[informative] = torch.cat([model(image[None] * chunk[:, None]).softmax(1)[:, target]
                                              for chunk in masks.split(batch_size)])
        maps.append(F.relu((weights[:, None, None] * upsampled).sum(0)))
    return torch.stack(maps)
