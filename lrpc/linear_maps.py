"""The linear maps LRP rules act on, each as a forward and its transpose (the input-gradient of the map).

A rule is written once against this interface (``forward(x, w, b, args)``, ``transpose(s, like, w, args)``) and
then applies to convolutions of any dimension, fully connected layers, average pools, adaptive pools and
means alike. ``args`` is a tuple of plain Python values so it prints in the generated code.
Weightless maps (pools, means) have ``weighted = False``; their implicit weights are all non-negative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

aten = torch.ops.aten


@dataclass(frozen=True)
class LinearMap:
    name: str
    weighted: bool
    forward: Callable[..., torch.Tensor]
    transpose: Callable[..., torch.Tensor]


def _conv_forward(x, w, b, args):
    stride, padding, dilation, groups = args
    return aten.convolution(x, w, b, stride, padding, dilation, False, [0] * len(stride), groups)


def _flipped_conv(s, w, padding, dilation, groups):
    """The transpose of a stride-1 conv as a forward conv: the kernel flipped and its channel axes swapped (per
    group). Runs the forward's fast path, where the input-gradient kernel is up to 1.5x slower on CPU."""
    dims = w.dim() - 2
    out_channels, in_per_group = w.shape[:2]
    kernel = w.reshape(groups, out_channels // groups, in_per_group, *w.shape[2:]).transpose(1, 2)
    if any(k > 1 for k in w.shape[2:]):
        kernel = kernel.flip(list(range(3, 3 + dims)))
    kernel = kernel.reshape(groups * in_per_group, out_channels // groups, *w.shape[2:])
    return aten.convolution(s, kernel, None, [1] * dims, padding, dilation, False, [0] * dims, groups)


def _conv_transpose(s, like, w, args):
    stride, padding, dilation, groups = args
    dims = len(stride)
    flipped_padding = [d * (k - 1) - p for k, p, d in zip(w.shape[2:], padding, dilation)]
    if all(st == 1 for st in stride) and min(flipped_padding) >= 0:
        return _flipped_conv(s, w, flipped_padding, dilation, groups)
    return aten.convolution_backward(s, like, w, None, stride, padding, dilation, False, [0] * dims,
                                     groups, [True, False, False])[0]


def _linear_forward(x, w, b, args):
    return F.linear(x, w, b)


def _linear_transpose(s, like, w, args):
    return s @ w


def _avg_pool2d_forward(x, w, b, args):
    return F.avg_pool2d(x, *args)


def _avg_pool2d_transpose(s, like, w, args):
    kernel, stride, padding, ceil_mode, count_include_pad, divisor_override = args
    return aten.avg_pool2d_backward(s, like, kernel, stride, padding, ceil_mode, count_include_pad,
                                    divisor_override)


def _adaptive_avg_pool2d_forward(x, w, b, args):
    return F.adaptive_avg_pool2d(x, args[0])


def _adaptive_avg_pool2d_transpose(s, like, w, args):
    return aten._adaptive_avg_pool2d_backward(s, like)


def _reduce_forward(x, w, b, args):
    dims, keepdim, mean = args
    return x.mean(dims, keepdim=keepdim) if mean else x.sum(dims, keepdim=keepdim)


def _reduce_transpose(s, like, w, args):
    dims, keepdim, mean = args
    dims = sorted(d % like.dim() for d in dims)
    if not keepdim:
        for d in dims:
            s = s.unsqueeze(d)
    s = s.expand_as(like)
    return s / math.prod(like.shape[d] for d in dims) if mean else s


LINEAR_MAPS: dict[str, LinearMap] = {
    m.name: m for m in (
        LinearMap("conv", True, _conv_forward, _conv_transpose),
        LinearMap("linear", True, _linear_forward, _linear_transpose),
        LinearMap("avg_pool2d", False, _avg_pool2d_forward, _avg_pool2d_transpose),
        LinearMap("adaptive_avg_pool2d", False, _adaptive_avg_pool2d_forward, _adaptive_avg_pool2d_transpose),
        LinearMap("reduce", False, _reduce_forward, _reduce_transpose),
    )
}
