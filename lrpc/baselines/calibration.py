"""Calibration maps that bracket real methods: no information (random), image structure only (Sobel edges),
and the answer itself (the object mask)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["oracle_map", "random_map", "sobel_map"]


def random_map(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform noise [B, H, W], the same for the same seed and shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((images.shape[0], *images.shape[2:]), generator=generator, dtype=torch.float64).to(
        images.device, images.dtype)


def sobel_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of each input channel, summed over channels (edges, blind to the class)."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype,
                            device=images.device)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    channels = images.reshape(-1, 1, *images.shape[2:])
    gradients = F.conv2d(F.pad(channels, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = gradients.pow(2).sum(1).sqrt()
    return magnitude.reshape(images.shape).sum(1)


def oracle_map(masks: torch.Tensor) -> torch.Tensor:
    """The ground-truth mask as a map: 1 on the object, 0 elsewhere (two tied levels)."""
    return torch.as_tensor(masks).float()
