"""The linear maps LRP rules act on, each as a forward and its transpose (the input-gradient of the map).

A rule is written once against this interface (``forward(x, w, b, args)``, ``transpose(s, like, w, args)``) and
then applies to convolutions of any dimension, fully connected layers, average pools, adaptive pools,
upsampling, folds and means alike; the window maps hold for 1-D, 2-D and 3-D inputs (``lrpc.windows``). ``args`` is a tuple of plain Python values so it prints in the generated code.
Weightless maps (pools, means) have ``weighted = False``; their implicit weights are all non-negative.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import windows

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


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor stored that way (CPU convs run up to 4x faster on such inputs), else the
    default: relevance tensors keep the layout of the activations they mirror."""
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _flip_kernel(w: torch.Tensor, groups: int) -> torch.Tensor:
    """The kernel of a stride-1 conv's transpose: ``w`` flipped, its channel axes swapped (per group)."""
    dims = w.dim() - 2
    out_channels, in_per_group = w.shape[:2]
    kernel = w.reshape(groups, out_channels // groups, in_per_group, *w.shape[2:]).transpose(1, 2)
    if any(k > 1 for k in w.shape[2:]):
        kernel = kernel.flip(list(range(3, 3 + dims)))
    kernel = kernel.reshape(groups * in_per_group, out_channels // groups, *w.shape[2:])
    return kernel.contiguous(memory_format=_memory_format(w))


# flipped kernels of the rule constants, made on first use: one weight copy per layer, not one per call. Keyed by
# id (tensors compare elementwise, so they make poor dict keys); an entry goes when its weight does.
_FLIPPED: dict[int, tuple[weakref.ref, int, int, torch.Tensor]] = {}


def _flipped_kernel(w: torch.Tensor, groups: int) -> torch.Tensor:
    if torch.compiler.is_compiling() or w.requires_grad or w.is_inference():
        return _flip_kernel(w, groups)
    key = id(w)
    entry = _FLIPPED.get(key)
    if entry is None or entry[0]() is not w or entry[1:3] != (w._version, groups):  # _version: in-place edits
        with torch.inference_mode(False), torch.no_grad():   # usable later where autograd records, too
            kernel = _flip_kernel(w, groups)
        entry = (weakref.ref(w, lambda _, key=key: _FLIPPED.pop(key, None)), w._version, groups, kernel)
        _FLIPPED[key] = entry
    return entry[3]


def _flipped_conv(s, w, padding, dilation, groups):
    """The transpose of a stride-1 conv as a forward conv with the flipped kernel: the forward's fast path, where
    the input-gradient kernel is up to 1.5x slower on CPU."""
    dims = w.dim() - 2
    return aten.convolution(s, _flipped_kernel(w, groups), None, [1] * dims, padding, dilation, False,
                            [0] * dims, groups)


def _strided_pointwise_transpose(s, like, w, stride, groups):
    """The transpose of an unpadded 1x1 conv with stride > 1 (a projection shortcut): the 1x1 transpose on the
    output grid, scattered onto every stride-th input position (the rest get nothing). CPU's input-gradient
    kernel takes up to 5x the forward's time for this shape; this takes about one forward."""
    dims = len(stride)
    out = torch.zeros_like(like, memory_format=_memory_format(s))
    grid = tuple(slice(0, (n - 1) * st + 1, st) for n, st in zip(s.shape[2:], stride))
    out[(slice(None), slice(None)) + grid] = _flipped_conv(s, w, [0] * dims, [1] * dims, groups)
    return out


def _conv_transpose(s, like, w, args):
    stride, padding, dilation, groups = args
    dims = len(stride)
    flipped_padding = [d * (k - 1) - p for k, p, d in zip(w.shape[2:], padding, dilation)]
    if all(st == 1 for st in stride) and min(flipped_padding) >= 0:
        return _flipped_conv(s, w, flipped_padding, dilation, groups)
    if all(k == 1 for k in w.shape[2:]) and not any(padding):
        return _strided_pointwise_transpose(s, like, w, stride, groups)
    return aten.convolution_backward(s, like, w, None, stride, padding, dilation, False, [0] * dims,
                                     groups, [True, False, False])[0]


def _conv_transpose_forward(x, w, b, args):
    stride, padding, output_padding, dilation, groups = args
    return aten.convolution(x, w, b, stride, padding, dilation, True, output_padding, groups)


def _conv_transpose_transpose(s, like, w, args):
    """A transposed convolution's own transpose is the input-gradient of it (a strided convolution)."""
    stride, padding, output_padding, dilation, groups = args
    return aten.convolution_backward(s, like, w, None, stride, padding, dilation, True, output_padding, groups,
                                     [True, False, False])[0]


def _linear_forward(x, w, b, args):
    return F.linear(x, w, b)


def _linear_transpose(s, like, w, args):
    return s @ w


def _avg_pool_forward(x, w, b, args):
    kernel, stride, padding, ceil_mode, count_include_pad, divisor_override = args
    return windows.avg_pool(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                            count_include_pad=count_include_pad, divisor_override=divisor_override)


def _avg_pool_transpose(s, like, w, args):
    kernel, stride, padding, ceil_mode, count_include_pad, divisor_override = args
    return windows.avg_pool_transpose(s, like, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                                      count_include_pad=count_include_pad, divisor_override=divisor_override)


def _adaptive_avg_pool_forward(x, w, b, args):
    return windows.adaptive_avg_pool(x, output_size=args[0])


def _adaptive_avg_pool_transpose(s, like, w, args):
    return windows.adaptive_avg_pool_transpose(s, like, output_size=args[0])


def _upsample_forward(x, w, b, args):
    mode, size, align_corners, scales = args
    return windows.upsample(x, mode=mode, size=size, align_corners=align_corners, scales=scales)


def _upsample_transpose(s, like, w, args):
    mode, size, align_corners, scales = args
    return windows.upsample_transpose(s, like, mode=mode, size=size, align_corners=align_corners, scales=scales)


def _fold_forward(x, w, b, args):
    """``nn.Fold``: patches [B, C·k, L] summed into an image, overlaps added."""
    output_size, kernel, dilation, padding, stride = args
    return aten.col2im(x, list(output_size), list(kernel), list(dilation), list(padding), list(stride))


def _fold_transpose(s, like, w, args):
    output_size, kernel, dilation, padding, stride = args
    return aten.im2col(s, list(kernel), list(dilation), list(padding), list(stride))


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
    return s / math.prod([like.shape[d] for d in dims]) if mean else s


LINEAR_MAPS: dict[str, LinearMap] = {
    m.name: m for m in (
        LinearMap("conv", True, _conv_forward, _conv_transpose),
        LinearMap("conv_transpose", True, _conv_transpose_forward, _conv_transpose_transpose),
        LinearMap("linear", True, _linear_forward, _linear_transpose),
        LinearMap("avg_pool", False, _avg_pool_forward, _avg_pool_transpose),
        LinearMap("adaptive_avg_pool", False, _adaptive_avg_pool_forward, _adaptive_avg_pool_transpose),
        LinearMap("reduce", False, _reduce_forward, _reduce_transpose),
        LinearMap("upsample", False, _upsample_forward, _upsample_transpose),
        LinearMap("fold", False, _fold_forward, _fold_transpose),
    )
}
