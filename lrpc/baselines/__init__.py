"""Baseline explanation methods behind one call, all returning channel-summed maps [B, H, W]."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from ..errors import LrpcError
from .attention import ATTENTION_METHODS
from .calibration import oracle_map, random_map, sobel_map
from .cam import CAM_METHODS, class_activation_map, last_conv_block
from .captum_methods import (captum_graph, deeplift, guided_backprop, input_x_gradient, integrated_gradients,
                             lrp_epsilon)

__all__ = ["ATTENTION_METHODS", "BASELINES", "CALIBRATION_MAPS", "CAM_METHODS", "captum_graph", "explain_baseline",
           "last_conv_block"]

_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    **{name: partial(class_activation_map, name) for name in CAM_METHODS},
    **ATTENTION_METHODS,
    "integrated_gradients": integrated_gradients,
    "input_x_gradient": input_x_gradient,
    "guided_backprop": guided_backprop,
    "deeplift": deeplift,
    "lrp_epsilon": lrp_epsilon,
}
CALIBRATION_MAPS = ("random", "sobel", "oracle")
BASELINES = (*_METHODS, *CALIBRATION_MAPS)


def explain_baseline(name: str, model: nn.Module, images: torch.Tensor,
                     targets: torch.Tensor | int | None = None, **opts) -> torch.Tensor:
    """Map [B, H, W] of baseline ``name`` for ``images`` [B, C, H, W] (normalised model inputs).

    ``targets``: the class to explain per image (an int for all; None: the predicted class). Options by
    method: ``layer=`` (the CAMs; a module or its name, default the last conv block), ``normalise=`` (the CAMs;
    True: pytorch-grad-cam's per-image min-max normalised output, False: the unnormalised map, see
    ``lrpc.baselines.cam``), ``batch_size=`` (scorecam, ablationcam), ``steps=`` / ``internal_batch_size=``
    (integrated_gradients), ``epsilon=`` (lrp_epsilon), ``channels='sum'|'first'`` (captum methods), ``seed=``
    (random), ``masks=`` (oracle, required).
    """
    if name not in BASELINES:
        raise LrpcError(f"unknown baseline {name!r}; available: {list(BASELINES)}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if model.training:
        raise ValueError("model is in training mode; call model.eval() before explaining it")
    if name == "random":
        return random_map(images, **opts)
    if name == "sobel":
        return sobel_map(images, **opts)
    if name == "oracle":
        if "masks" not in opts:
            raise ValueError("the oracle baseline needs masks= (bool [B, H, W] object masks)")
        return oracle_map(opts["masks"])
    return _METHODS[name](model, images, _resolve_targets(model, images, targets), **opts)


def _resolve_targets(model: nn.Module, images: torch.Tensor, targets) -> torch.Tensor:
    if targets is None:
        with torch.no_grad():
            return model(images).argmax(1)
    # a copy: targets read from an lrpc Explanation are inference tensors, which autograd may not save
    targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).clone()
    if targets.ndim == 0:
        targets = targets.expand(images.shape[0])
    if targets.shape != (images.shape[0],):
        raise ValueError(f"targets must be an int or [B={images.shape[0]}] classes, got shape {tuple(targets.shape)}")
    return targets
