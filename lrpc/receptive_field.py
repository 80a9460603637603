"""Receptive fields read off the compiled graph: which input pixels one position of a layer can depend on.

Along every spatial axis, position ``p`` of a node sees the input interval ``[offset + jump * p, offset + jump *
p + size)``, clipped to the image. The input has ``(offset, jump, size) = (0, 1, 1)``; an op with kernel ``k``,
stride ``s``, padding ``q`` and dilation ``d`` (a convolution, an average or max pool) turns ``(o, j, n)`` into
``(o - j q, j s, n + j d (k - 1))``; zero padding shifts the offset; elementwise ops keep the field; a sum or
product of two signals (a residual add) takes the union of their fields.

The walk follows the relevance path, the inputs relevance flows back through, so the box bounds where one
position's relevance can land in the input: a frozen gate (an SE block's sigmoid) or a normalisation statistic
is not followed. Ops that mix or rearrange positions (a global pool, a flatten, attention, a reshape, a
permute) give every later position the whole image, which always holds the true support. Upsampling and
adaptive pools whose windows do not tile the input have no such interval and raise an ``LrpcError``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LrpcError
from .ops import shape

__all__ = ["Axis", "ReceptiveField", "receptive_field"]

ELEMENTWISE = ("pass", "batchnorm", "gate", "product", "add")
POSITION_MIXING = ("reshape", "stack", "move", "permute", "scatter", "attention", "frozen_matmul", "matmul_product")


@dataclass(frozen=True)
class Axis:
    """Position ``p`` along this axis sees input pixels ``[offset + jump * p, offset + jump * p + size)``."""

    offset: int
    jump: int
    size: int

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> "Axis":
        return Axis(self.offset - self.jump * padding, self.jump * stride,
                    self.size + self.jump * dilation * (kernel - 1))

    def union(self, other: "Axis") -> "Axis":
        start = min(self.offset, other.offset)
        return Axis(start, self.jump, max(self.offset + self.size, other.offset + other.size) - start)


# A node's field: one Axis per spatial dimension (dims 2.. of [B, C, ...]), None for an axis whose every position
# sees the whole input along it; WHOLE where positions were mixed or rearranged (every position sees everything).
WHOLE = "whole"


@dataclass(frozen=True)
class ReceptiveField:
    """The field of one node: ``axes`` per spatial dimension of ``grid`` (the node's spatial shape), on an input of
    spatial shape ``image``. ``None`` axes (and a node without spatial dimensions) see the whole image."""

    node: str
    grid: tuple[int, ...]
    image: tuple[int, ...]
    axes: tuple[Axis | None, ...]

    def boxes(self, positions) -> np.ndarray:
        """Flat positions in ``grid`` ([n] ints) -> their input boxes, [n, len(image), 2]: (start, stop) per axis of
        the image, clipped to it. For an image, ``box[:, 0]`` is (top, bottom) and ``box[:, 1]`` (left, right)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if self.grid and ((positions < 0) | (positions >= int(np.prod(self.grid)))).any():
            raise LrpcError(f"positions {positions.tolist()} out of the grid {self.grid} of {self.node!r}")
        coordinates = np.unravel_index(positions, self.grid) if self.grid else ()
        result = np.empty((len(positions), len(self.image), 2), np.int64)
        for dim, extent in enumerate(self.image):
            axis = self.axes[dim] if dim < len(self.axes) else None
            if axis is None:
                result[:, dim] = (0, extent)
                continue
            start = axis.offset + axis.jump * coordinates[dim]
            result[:, dim, 0] = np.clip(start, 0, extent)
            result[:, dim, 1] = np.clip(start + axis.size, 0, extent)
        return result


def receptive_field(explainer, node: str) -> ReceptiveField:
    """The receptive field of ``node`` (a name of ``explainer.layer_names``) in the explainer's input."""
    plans = explainer.plans
    if node not in plans:
        raise LrpcError(f"{node!r} is not a node of the explainer; nodes: {', '.join(list(plans)[:12])}, ...")
    fields: dict[str, tuple | str | None] = {}
    image = None
    for name in explainer.layer_names:
        plan = plans[name]
        if plan.info.kind == "input":
            image = tuple(shape(plan.node)[2:])
            fields[name] = tuple(Axis(0, 1, 1) for _ in image)
        else:
            fields[name] = _field(plan, fields)
        if name == node:
            break
    field, grid = fields[node], tuple(shape(plans[node].node)[2:])
    if field is None or image is None:
        raise LrpcError(f"{node!r} does not depend on the model input")
    if field == WHOLE:
        field = (None,) * len(grid)
    return ReceptiveField(node, grid, image, field)


def window_geometry(plan) -> tuple[tuple[int, ...], ...] | None:
    """(kernel, stride, padding, dilation), one int per spatial dimension each, of a convolution, an average pool
    or a max pool with a fixed window; None for any other node (adaptive pools included)."""
    info = plan.info
    if info.kind == "maxpool":
        window = info.extra["window"]
        if "output_size" in window:
            return None
        return window["kernel"], window["stride"], window["padding"], window["dilation"]
    if info.map == "conv":
        stride, padding, dilation, _ = info.args
        return tuple(info.weight.shape[2:]), stride, padding, dilation
    if info.map == "avg_pool":
        kernel, stride, padding = info.args[:3]
        return kernel, stride, padding, (1,) * len(kernel)
    return None


def _field(plan, fields: dict):
    info, name = plan.info, plan.node.name
    inputs = [fields.get(i.name) for i in info.inputs]
    known = [(i, f) for i, f in zip(info.inputs, inputs) if f is not None]
    if not known:
        return None   # a constant: depends on no input pixel
    if any(f == WHOLE for _, f in known):
        return WHOLE
    out = shape(plan.node)
    if info.kind in ELEMENTWISE or (info.kind == "cat" and info.args[0] == 1):
        return _union(name, [_broadcast(name, i, f, out) for i, f in known])
    (source, field), = known
    geometry = window_geometry(plan)
    if geometry is not None:
        return tuple(a.through(*g) for a, g in zip(field, zip(*geometry)))
    if info.kind == "maxpool":   # adaptive
        return _adaptive(name, field, shape(source)[2:], info.extra["window"]["output_size"])
    if info.kind == "pad":
        return _padded(name, field, info.args)
    if info.kind == "linear":
        return _linear(plan, source, field)
    if info.kind in ("amax", "cat") or info.kind in POSITION_MIXING:
        if info.kind == "amax" and set(info.args[0]) <= {1} and len(out) == len(shape(source)):
            return field   # over channels, dimension kept
        return WHOLE
    raise LrpcError(f"no receptive field through node {name!r} ({info.kind} op, module {plan.module or '-'})")


def _linear(plan, source, field):
    info, name = plan.info, plan.node.name
    if info.map == "adaptive_avg_pool":
        return _adaptive(name, field, shape(source)[2:], info.args[0])
    if info.map == "reduce":
        dims, keepdim, _ = info.args
        if set(dims) <= {1} and keepdim:
            return field
        return WHOLE
    if info.map == "linear":
        return () if len(shape(plan.node)) == 2 else WHOLE
    raise LrpcError(f"no receptive field through node {name!r} ({info.map}, module {plan.module or '-'}): its "
                    "output positions do not sit on a regular grid of input intervals")


def _adaptive(name: str, field: tuple, sizes: tuple, output_size: tuple) -> tuple:
    result = []
    for a, n, o in zip(field, sizes, output_size):
        if n % o:
            raise LrpcError(f"no receptive field through node {name!r}: an adaptive pool from {n} to {o} "
                            "positions has windows of unequal size")
        result.append(a.through(n // o, n // o, 0, 1))
    return tuple(result)


def _padded(name: str, field: tuple, pads: tuple) -> tuple:
    axes = list(field)
    for k in range(len(pads) // 2):   # F.pad's order: last dimension first, (before, after) each
        dim = len(axes) - 1 - k
        if dim < 0:
            raise LrpcError(f"no receptive field through node {name!r}: it pads the channel or batch dimension")
        if axes[dim] is not None:
            axes[dim] = Axis(axes[dim].offset - axes[dim].jump * pads[2 * k], axes[dim].jump, axes[dim].size)
    return tuple(axes)


def _broadcast(name: str, source, field: tuple, out: tuple) -> tuple:
    """The field of an input as seen from the output's positions. An axis of length 1 broadcast over many
    positions gives each the same interval, which no grid field expresses: it is widened to the whole input."""
    if len(shape(source)) != len(out):
        return (None,) * (len(out) - 2) if field == () else _refuse_broadcast(name)
    axes = []
    for axis, n_in, n_out in zip(field, shape(source)[2:], out[2:]):
        axes.append(None if n_in == 1 and n_out != 1 else axis)
    return tuple(axes)


def _refuse_broadcast(name: str):
    raise LrpcError(f"no receptive field through node {name!r}: its inputs have different spatial ranks")


def _union(name: str, fields: list[tuple]) -> tuple:
    result = list(fields[0])
    for field in fields[1:]:
        for dim, axis in enumerate(field):
            mine = result[dim]
            if mine is None or axis is None:
                result[dim] = None
            elif mine.jump != axis.jump:
                raise LrpcError(f"no receptive field through node {name!r}: it joins inputs on different grids "
                                f"(jumps {mine.jump} and {axis.jump} input pixels)")
            else:
                result[dim] = mine.union(axis)
    return tuple(result)
