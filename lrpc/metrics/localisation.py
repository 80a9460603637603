"""How well maps [B, H, W] point at the ground-truth object masks [B, H, W] (bool).

Ties are resolved by expectation, never by an arbitrary index: where several pixels share the deciding value
(a quantized map's top level, a constant map), the metric is its mean over all uniformly random tie-breaks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"]


def _check(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    maps, masks = torch.as_tensor(maps), torch.as_tensor(masks)
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"maps and masks must both be [B, H, W] of the same shape, got maps "
                         f"{tuple(maps.shape)} and masks {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {masks.dtype}")
    if not masks.flatten(1).any(1).all():
        raise ValueError("every mask needs at least one pixel; empty masks: "
                         f"{torch.nonzero(~masks.flatten(1).any(1)).flatten().tolist()[:10]}")
    return maps.detach().double().cpu(), masks.cpu()


def relevance_mass_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the positive relevance that lies inside the mask (Arras et al., 2022); NaN without any."""
    maps, masks = _check(maps, masks)
    positive = maps.clamp(min=0).flatten(1)
    total = positive.sum(1)
    inside = (positive * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.nan)


def relevance_rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the K highest-ranked pixels that lie inside the mask, K = mask size (Arras et al., 2022).

    Pixels tied with the K-th value fill the remaining top-K slots at random: they count with the share of
    the tie that lies inside the mask.
    """
    maps, masks = _check(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    k = inside.sum(1)
    kth_value = flat.sort(1, descending=True).values.gather(1, (k - 1)[:, None])
    above = flat > kth_value
    tied = flat == kth_value
    open_slots = (k - above.sum(1)).double()
    tied_inside = (tied & inside).sum(1).double() / tied.sum(1).double()
    return ((above & inside).sum(1).double() + open_slots * tied_inside) / k.double()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 15 / 224) -> torch.Tensor:
    """Hit (1) if the map's maximum lies within ``tolerance`` x side of the mask (Zhang et al., 2018: 15 px
    on 224 px images), else 0; with a tied maximum, the share of maximal pixels that hit.

    The side is sqrt(H * W) (the side length of a square image).
    """
    maps, masks = _check(maps, masks)
    _, height, width = maps.shape
    radius = tolerance * math.sqrt(height * width)
    reach = int(math.floor(radius))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2).double()[None, None]
    near_mask = F.conv2d(masks[:, None].double(), disk, padding=reach)[:, 0] > 0.5
    at_max = maps == maps.flatten(1).max(1).values[:, None, None]
    return (at_max & near_mask).flatten(1).sum(1).double() / at_max.flatten(1).sum(1).double()
