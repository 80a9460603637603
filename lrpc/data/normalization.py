"""Pixel space <-> model-input space. Models here take ImageNet-normalised inputs, as in the paper."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "denormalize"]



def _channel_stats(like: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
    if like.ndim < 3 or like.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(f"images of shape {tuple(like.shape)} do not have {len(mean)} channels at dim -3 "
                         f"to match mean {tuple(mean)} / std {tuple(std)}")
    shape = (len(mean), 1, 1)
    return (torch.as_tensor(mean, dtype=like.dtype, device=like.device).reshape(shape),
            torch.as_tensor(std, dtype=like.dtype, device=like.device).reshape(shape))


def normalize(images: np.ndarray | torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """[..., C, H, W] pixels in [0, 1] -> float32 model inputs (x - mean) / std."""
    images = torch.as_tensor(images, dtype=torch.float32)
    m, s = _channel_stats(images, mean, std)
    return (images - m) / s


def denormalize(inputs: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Model inputs -> pixels (x * std + mean); the inverse of :func:`normalize`."""
    m, s = _channel_stats(inputs, mean, std)
    return inputs * s + m
