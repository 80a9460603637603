"""Structural kinds: relevance goes back to where each value came from (views, copies, padding, concatenation,
stacking, writes into a region)."""
from __future__ import annotations

import math

import torch.fx as fx

from .. import kernels
from ..ops import shape
from . import fields
from .base import OpKind, forward_inputs, register, send_one, send_parts, tag

_MIXES = ("channel_problem",)   # the analyses' refusal: it mixes or reorders channels


class PositionMixing(OpKind):
    """Moves values to other positions: every later position may see the whole input."""

    def receptive_field(self, plan, known):
        return fields.WHOLE

    def carries_value(self, node) -> bool:
        return True


@register
class Move(PositionMixing):
    """A copy op (slice, select, expand, repeat, unfold…): relevance goes back along the op's transpose, the
    kernel ``extra['back']`` with the tensors ``extra['tensors']`` and keyword arguments ``extra['kwargs']``."""

    name = "move"
    unsupported = ("deconvnet_step", *_MIXES)

    def emit(self, rp, plan, r, total) -> None:
        extra = plan.info.extra
        tensors = [rp.env[t] for t in extra["tensors"]]
        kwargs = fx.node.map_arg(extra["kwargs"], rp.env.__getitem__)   # a symbolic size (``x[:B]``)
        send_one(rp, plan, extra["back"], (r, rp.env[plan.info.inputs[0]], *tensors), kwargs, total)


@register
class Reshape(PositionMixing):
    name = "reshape"

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, kernels.reshape_back, (r, rp.env[plan.info.inputs[0]]), total=total)

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(plan.info.inputs[0].name, s.reshape(like[0].shape))]

    def channel_problem(self, plan) -> str | None:
        before, after = shape(plan.info.inputs[0]), shape(plan.node)
        if after != (before[0], math.prod(before[1:])):
            return f"reshapes {before} -> {after}; only a flatten [B, C, ...] -> [B, C*...] keeps channels"
        return None


@register
class Permute(PositionMixing):
    name = "permute"
    unsupported = _MIXES

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, kernels.permute_back, (r,), {"dims": plan.info.args}, total)

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(plan.info.inputs[0].name, kernels.permute_back(s, dims=plan.info.args))]

    def moves_batch(self, plan) -> bool:
        return plan.info.args[0] % len(plan.info.args) != 0


@register
class Pad(OpKind):
    """Zero padding (``info.args``: F.pad's pads): relevance of the pad's zeros is cropped away."""

    name = "pad"
    pointwise = True
    zero_padding = True

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, kernels.unpad, (r,), {"pad": plan.info.args})

    def absorbs(self, plan) -> tuple[str, ...]:
        # the pad's values are constants: relevance a rule hands them (a Swin window's padded tokens, whose only
        # input is the zeros) ends there, as at a bias, and is reported in ``exp.absorbed``
        return ("constant",)

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(plan.info.inputs[0].name, kernels.unpad(s, pad=plan.info.args))]

    def channel_problem(self, plan) -> str | None:
        if len(plan.info.args) > 2 * (len(shape(plan.node)) - 2):
            return "pads the channel dimension"
        return None

    def receptive_field(self, plan, known):
        _, field = fields.single(known)
        return fields.padded(plan.node.name, field, plan.info.args)


@register
class Cat(PositionMixing):
    name = "cat"
    colour = "#d9ead3"
    unsupported = _MIXES

    def emit(self, rp, plan, r, total) -> None:
        parts = rp.call(kernels.split_cat, (r, *forward_inputs(rp, plan)), {"dim": plan.info.args[0]},
                        name=tag(plan))
        send_parts(rp, plan, parts)

    def deconvnet_step(self, plan, s, like, acts, module):
        inputs = [i.name for i in plan.info.inputs]
        return list(zip(inputs, kernels.split_cat(s, *like, dim=plan.info.args[0])))

    def receptive_field(self, plan, known):
        if plan.info.args[0] == 1:   # channels side by side: every position keeps its place
            return fields.elementwise(plan, known)
        return fields.WHOLE


@register
class Stack(PositionMixing):
    name = "stack"
    unsupported = ("deconvnet_step", *_MIXES)

    def emit(self, rp, plan, r, total) -> None:
        parts = rp.call(kernels.split_stack, (r, *forward_inputs(rp, plan)), {"dim": plan.info.args[0]},
                        name=tag(plan))
        send_parts(rp, plan, parts)


@register
class Scatter(PositionMixing):
    """A write into a region of a tensor: the region's relevance to the source, the rest to the target."""

    name = "scatter"
    unsupported = ("deconvnet_step", *_MIXES)

    def emit(self, rp, plan, r, total) -> None:
        parts = rp.call(kernels.scatter_back, (r, *forward_inputs(rp, plan)),
                        fx.node.map_arg(plan.info.extra, rp.env.__getitem__), name=tag(plan))
        send_parts(rp, plan, parts)

    def carries_value(self, node) -> bool:
        return False
