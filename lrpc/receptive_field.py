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
from .op_kinds import kind_of
from .op_kinds.fields import WHOLE, Axis
from .ops import shape

__all__ = ["Axis", "ReceptiveField", "receptive_field"]


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
        if kind_of(plan).is_input:
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
    return kind_of(plan).window(plan)


def _field(plan, fields: dict):
    """A node's field from its inputs' (``None``: depends on no input pixel); each kind steps through itself
    (``OpKind.receptive_field``)."""
    known = [(i, fields.get(i.name)) for i in plan.info.inputs if fields.get(i.name) is not None]
    if not known:
        return None   # a constant: depends on no input pixel
    if any(f == WHOLE for _, f in known):
        return WHOLE
    return kind_of(plan).receptive_field(plan, known)
