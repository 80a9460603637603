"""Views of a relevance map: how the exact relevance becomes the ranking a reader (or a metric) sees.

A heatmap is read in a fixed order, each step optional (``Explanation.heatmap``):

1. **channel sum** (done by ``heatmap`` before the view): the input relevance summed over channels, [B, *spatial];
2. **sign**: ``"signed"`` keeps R, ``"positive"`` keeps max(R, 0) (the evidence for the class), ``"absolute"``
   keeps |R| (how much a pixel matters, either way);
3. **smoothing**: a Gaussian blur of the (signed, positive or absolute) map, σ in pixels, or ``"auto"``: σ derived
   from the model's stem (:func:`stem_sigma`);
4. **Heat Quantization** (``lrpc.quantize.heat_quantize``) last, on the map that is finally read.

The sign comes before the blur so that the view means what its name says: the positive view blurs the
supporting evidence alone (blurring first would let nearby negative evidence cancel it before the clip), the
absolute view blurs magnitudes. Quantization comes last because it is a reading of the final map (its levels
are per-image fractions of the final range); quantizing before the blur would only be undone by it.

The blur is separable and rank-generic: one 1-D Gaussian per dimension after the batch, so the same code smooths
audio [B, T], images [B, H, W], volumes [B, D, H, W] and video [B, T, H, W]. Its kernel is truncated at 4 σ (as
scipy.ndimage's default) and normalised to sum 1; the border is *reflected* about the edge (scipy's ``reflect``:
d c b a | a b c d), so a border pixel is averaged with its own neighbourhood. A zero border would pull every map
towards 0 within 2σ of the edge and lose relevance mass out of the image, which changes the ranking near the
edges for a reason that has nothing to do with the explanation.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import LrpcError
from .op_kinds import kind_of
from .quantize import heat_quantize
from .receptive_field import window_geometry

__all__ = ["SIGNS", "gaussian_blur", "heatmap_view", "resolve_smooth", "sign_view", "stem_sigma"]

SIGNS = ("signed", "positive", "absolute")
TRUNCATE = 4.0   # kernel radius in σ, as scipy.ndimage.gaussian_filter

Smooth = float | Sequence[float] | str | None


def sign_view(heat: torch.Tensor, sign: str = "signed") -> torch.Tensor:
    """``heat`` as R (``"signed"``), max(R, 0) (``"positive"``) or |R| (``"absolute"``)."""
    if sign == "signed":
        return heat
    if sign == "positive":
        return heat.clamp(min=0)
    if sign == "absolute":
        return heat.abs()
    raise LrpcError(f"sign must be one of {SIGNS}, got {sign!r}")


def resolve_smooth(smooth: Smooth, spatial_dims: int, auto: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    """σ per trailing dimension of a map with ``spatial_dims`` dims after the batch; all zeros means no blur.

    ``None``: no blur. A number: that σ (pixels) on every dimension. A sequence: one σ per trailing dimension (e.g.
    ``(0, 2, 2)`` blurs a video's frames but not across them). ``"auto"``: ``auto()``, the stem's σ per spatial
    dimension of the model, aligned to the map's trailing dimensions (leading dimensions it does not cover, such
    as the frames of a model run per frame, get 0)."""
    if smooth is None:
        return (0.0,) * spatial_dims
    if isinstance(smooth, str):
        if smooth != "auto":
            raise LrpcError(f"smooth must be None, a σ in pixels (a number >= 0), a sequence of them or 'auto', "
                            f"got {smooth!r}")
        sigmas = tuple(auto())[-spatial_dims:] if spatial_dims else ()
        return (0.0,) * (spatial_dims - len(sigmas)) + sigmas
    if _is_number(smooth):
        sigmas = (smooth,) * spatial_dims
    elif isinstance(smooth, Sequence) and all(_is_number(s) for s in smooth):
        if len(smooth) != spatial_dims:
            raise LrpcError(f"smooth has {len(smooth)} σ values for a map with {spatial_dims} dimensions after the "
                            f"batch")
        sigmas = tuple(smooth)
    else:
        raise LrpcError(f"smooth must be None, a σ in pixels (a number >= 0), a sequence of them or 'auto', got "
                        f"{type(smooth).__name__} {smooth!r}")
    if not all(math.isfinite(s) and s >= 0 for s in sigmas):
        raise LrpcError(f"smooth: σ must be finite and >= 0 pixels, got {smooth!r}")
    return tuple(float(s) for s in sigmas)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def gaussian_blur(maps: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Blur ``maps`` [B, *spatial] with a Gaussian of standard deviation ``sigma`` (pixels; one per spatial
    dimension, or one for all), reflected border, truncated at 4 σ. σ = 0 leaves a dimension as it is."""
    spatial = maps.dim() - 1
    sigmas = (float(sigma),) * spatial if _is_number(sigma) else tuple(float(s) for s in sigma)
    if len(sigmas) != spatial:
        raise LrpcError(f"gaussian_blur: {len(sigmas)} σ values for maps {tuple(maps.shape)} with {spatial} "
                        f"dimensions after the batch")
    out = maps
    for dim, s in enumerate(sigmas, start=1):
        if s > 0:
            out = _blur_along(out, dim, s)
    return out


def _blur_along(maps: torch.Tensor, dim: int, sigma: float) -> torch.Tensor:
    radius = int(TRUNCATE * sigma + 0.5)
    if radius == 0:
        return maps
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps)
    length = maps.shape[dim]
    moved = maps.movedim(dim, -1)
    rows = moved.reshape(-1, 1, length)
    padded = rows.index_select(-1, _reflected_indices(length, radius, maps.device))
    blurred = F.conv1d(padded, kernel.view(1, 1, -1))
    return blurred.reshape(moved.shape).movedim(-1, dim)


def _reflected_indices(length: int, radius: int, device) -> torch.Tensor:
    """Indices of a row padded by ``radius`` on each side with half-sample reflection (… b a | a b … y z | z y …),
    repeated as often as a radius longer than the row needs."""
    position = torch.arange(-radius, length + radius, device=device) % (2 * length)
    return torch.where(position < length, position, 2 * length - 1 - position)


def heatmap_view(heat: torch.Tensor, *, sign: str = "signed", smooth: Smooth = None, quantize: int | None = None,
                 auto: Callable[[], tuple[float, ...]] = lambda: ()) -> torch.Tensor:
    """Steps 2-4 of the reading order on a channel-summed map ``heat`` [B, *spatial]."""
    if quantize is not None and (not isinstance(quantize, int) or isinstance(quantize, bool) or quantize < 2):
        raise LrpcError(f"quantize must be None or an int >= 2 (the number of levels), got {quantize!r}")
    sigmas = resolve_smooth(smooth, heat.dim() - 1, auto)
    view = sign_view(heat, sign)
    if any(s > 0 for s in sigmas):
        view = gaussian_blur(view, sigmas)
    if quantize is None:
        return view
    return heat_quantize(view.reshape(view.shape[0], 1, -1), quantize).view_as(view)   # per sample, any rank


# -- "auto": σ from the model's stem ---------------------------------------------------------------------------

def stem_sigma(plans: dict) -> tuple[float, ...]:
    """σ per spatial dimension of the model's *stem*, the standard deviation of its receptive field.

    The stem is the chain of layers from the input up to the first fork (the first residual block, or any branch),
    the first layer that is neither windowed (conv, pooling) nor pointwise (flatten to tokens, a linear, a global
    pool), or the first stride-1 window after a run of strided ones (VGG's second stage, a ResNet stage's first
    conv), whichever comes first. Taking each kernel as uniform, the stem's receptive field is the convolution of
    its layers' kernels, each spread by the jump J_i (the product of the strides before it) and its dilation d_i,
    so the variances add:

        σ² = Σ_i (J_i d_i)² (k_i² − 1) / 12

    torchvision's ResNets (7x7 stride 2, 3x3 max pool stride 2): σ = √(4 + 8/3) ≈ 2.58 px; VGG (two 3x3, 2x2
    pool): ≈ 1.26 px; a ViT with a 16x16 patch convolution: ≈ 4.6 px. A model without a windowed layer before its
    first fork (an MLP, a patch embedding written as reshape + linear) gets 0: no blur."""
    current = next((plan.node for plan in plans.values() if kind_of(plan).is_input), None)
    variance: list[float] | None = None
    jump: list[int] | None = None
    strided = False
    while current is not None:
        users = [user for user in current.users if user.name in plans]
        if len(users) != 1:
            break
        current = users[0]
        plan = plans[current.name]
        window = window_geometry(plan)
        if window is None:
            if kind_of(plan).pointwise:   # keeps every position where it is: the stem walks on
                continue
            break
        kernel, stride, _, dilation = window
        if strided and all(s == 1 for s in stride):
            break
        if variance is None:
            variance, jump = [0.0] * len(kernel), [1] * len(kernel)
        for d, (k, s, dil) in enumerate(zip(kernel, stride, dilation)):
            variance[d] += (jump[d] * dil) ** 2 * (k * k - 1) / 12
            jump[d] *= s
        strided = strided or any(s > 1 for s in stride)
    return () if variance is None else tuple(math.sqrt(v) for v in variance)
