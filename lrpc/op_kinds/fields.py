"""Receptive-field geometry the kinds step through (``lrpc.receptive_field`` walks the graph with it).

Along every spatial axis, position ``p`` of a node sees the input interval ``[offset + jump * p, offset + jump *
p + size)``. A node's field is one ``Axis`` per spatial dimension (dims 2.. of [B, C, ...]), ``None`` for an axis
whose every position sees the whole input along it, or ``WHOLE`` where positions were mixed or rearranged.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LrpcError
from ..ops import shape

WHOLE = "whole"


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


def single(known: list) -> tuple:
    """(input, field) of an op with one relevance input."""
    (source, field), = known
    return source, field


def through_window(field: tuple, geometry: tuple) -> tuple:
    return tuple(a.through(*g) for a, g in zip(field, zip(*geometry)))


def elementwise(plan, known: list) -> tuple:
    """An elementwise op of one or more signals: the union of its inputs' fields, broadcast to its output."""
    name, out = plan.node.name, shape(plan.node)
    return _union(name, [_broadcast(name, i, f, out) for i, f in known])


def pooled(name: str, field: tuple, geometry: tuple | None, sizes: tuple, output_size: tuple) -> tuple:
    """A pool's field: through its fixed window (``geometry``), else through its adaptive windows from ``sizes``
    to ``output_size`` positions."""
    return through_window(field, geometry) if geometry is not None else adaptive(name, field, sizes, output_size)


def adaptive(name: str, field: tuple, sizes: tuple, output_size: tuple) -> tuple:
    result = []
    for a, n, o in zip(field, sizes, output_size):
        if n % o:
            raise LrpcError(f"no receptive field through node {name!r}: an adaptive pool from {n} to {o} "
                            "positions has windows of unequal size")
        result.append(a.through(n // o, n // o, 0, 1))
    return tuple(result)


def padded(name: str, field: tuple, pads: tuple) -> tuple:
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
        if field == ():
            return (None,) * (len(out) - 2)
        raise LrpcError(f"no receptive field through node {name!r}: its inputs have different spatial ranks")
    axes = []
    for axis, n_in, n_out in zip(field, shape(source)[2:], out[2:]):
        axes.append(None if n_in == 1 and n_out != 1 else axis)
    return tuple(axes)


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
