"""Window ops of any rank — 1-D signals, 2-D images, 3-D volumes and videos — as forwards and transposes.

Pools, adaptive pools and upsampling exist in ATen once per rank (``avg_pool1d/2d/3d`` ...), with input-gradient
kernels for some ranks only. Here each family is one function taking the window (``kernel``, ``stride`` ... or
``output_size``) whose length is the rank; a 1-D op without its own kernel runs as the 2-D one on a height-1
image. The op table, the linear maps and the max-pool relevance all go through these, so a family is added once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _lifted(fn, *tensors, **window):
    """``fn`` of 1-D windows run as the 2-D op on height-1 images (ATen has no 1-D kernel for it)."""
    lift = {"kernel": 1, "stride": 1, "padding": 0, "dilation": 1, "output_size": 1}
    window = {k: ((lift[k], *v) if k in lift else v) for k, v in window.items()}
    return fn(*(t.unsqueeze(-2) for t in tensors), **window).squeeze(-2)


def avg_pool(x, *, kernel, stride, padding, ceil_mode=False, count_include_pad=True, divisor_override=None):
    window = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    if len(kernel) == 1:
        return _lifted(avg_pool, x, **window)
    pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
    return pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool_transpose(s, like, *, kernel, stride, padding, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    window = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    if len(kernel) == 1:
        return _lifted(avg_pool_transpose, s, like, **window)
    backward = aten.avg_pool2d_backward if len(kernel) == 2 else aten.avg_pool3d_backward
    return backward(s, like, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool(x, *, output_size):
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(output_size) - 1]
    return pool(x, output_size)


def adaptive_avg_pool_transpose(s, like, *, output_size):
    if len(output_size) == 1:
        return _lifted(adaptive_avg_pool_transpose, s, like, output_size=output_size)
    backward = aten._adaptive_avg_pool2d_backward if len(output_size) == 2 else aten._adaptive_avg_pool3d_backward
    return backward(s, like)


def max_pool(x, *, kernel=None, stride=None, padding=None, dilation=None, ceil_mode=False, output_size=None):
    """(maxima, arg-max indices) of a max-pool window: fixed (``kernel``...) or adaptive (``output_size``)."""
    if output_size is not None:
        pool = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[len(output_size) - 1]
        return pool(x, output_size, return_indices=True)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1]
    return pool(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)


def unpool(s, like, indices):
    """The transpose of a max-pool at its arg-max (its gradient): each output's value returns to the input
    position its index names (ATen's indices are flat over the spatial dims of every rank)."""
    spatial = like.shape[2:].numel()
    out = s.new_zeros(*s.shape[:2], spatial)
    out.scatter_add_(2, indices.expand(*s.shape[:2], *indices.shape[2:]).flatten(2), s.flatten(2))
    return out.view(*s.shape[:2], *like.shape[2:])


def window_mean(x, *, kernel=None, stride=None, padding=None, dilation=None, ceil_mode=False, output_size=None):
    """The mean over each max-pool window (padding counted as zeros), for relevance in proportion to the inputs."""
    if output_size is not None:
        return adaptive_avg_pool(x, output_size=output_size)
    return avg_pool(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)


def window_mean_transpose(s, like, *, kernel=None, stride=None, padding=None, dilation=None, ceil_mode=False,
                          output_size=None):
    if output_size is not None:
        return adaptive_avg_pool_transpose(s, like, output_size=output_size)
    return avg_pool_transpose(s, like, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)


# (mode, rank) -> (forward, its input-gradient, whether it takes align_corners)
UPSAMPLING = {
    ("nearest", 1): (aten.upsample_nearest1d.default, aten.upsample_nearest1d_backward.default, False),
    ("nearest", 2): (aten.upsample_nearest2d.default, aten.upsample_nearest2d_backward.default, False),
    ("nearest", 3): (aten.upsample_nearest3d.default, aten.upsample_nearest3d_backward.default, False),
    ("nearest-exact", 1): (aten._upsample_nearest_exact1d.default, aten._upsample_nearest_exact1d_backward.default,
                           False),
    ("nearest-exact", 2): (aten._upsample_nearest_exact2d.default, aten._upsample_nearest_exact2d_backward.default,
                           False),
    ("nearest-exact", 3): (aten._upsample_nearest_exact3d.default, aten._upsample_nearest_exact3d_backward.default,
                           False),
    ("linear", 1): (aten.upsample_linear1d.default, aten.upsample_linear1d_backward.default, True),
    ("linear", 2): (aten.upsample_bilinear2d.default, aten.upsample_bilinear2d_backward.default, True),
    ("linear", 3): (aten.upsample_trilinear3d.default, aten.upsample_trilinear3d_backward.default, True),
}


def upsample(x, *, mode, size, align_corners, scales):
    forward, _, aligned = UPSAMPLING[mode, len(size)]
    return forward(x, list(size), *((align_corners,) if aligned else ()), *scales)


def upsample_transpose(s, like, *, mode, size, align_corners, scales):
    _, backward, aligned = UPSAMPLING[mode, len(size)]
    return backward(s, list(size), list(like.shape), *((align_corners,) if aligned else ()), *scales)
