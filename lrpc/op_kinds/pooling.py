"""Maxima: ``maxpool`` (winner, proportional or the authors' 2x2 average) and ``amax`` (a max reduction)."""
from __future__ import annotations

from .. import kernels, windows
from ..errors import LrpcError
from ..ops import shape
from . import fields
from .base import OpKind, register, send_one

_COLOUR = "#f4cccc"


@register
class MaxPool(OpKind):
    name = "maxpool"
    colour = _COLOUR

    def emit(self, rp, plan, r, total) -> None:
        n = plan.node
        send_one(rp, plan, kernels.maxpool_relevance, (rp.env[plan.info.inputs[0]], rp.env[n], r),
                 {"mode": plan.maxpool, "window": plan.info.extra["window"], "eps": plan.maxpool_epsilon,
                  "indices": rp.maxpool_indices.get(n)})

    def absorbs(self, plan) -> tuple[str, ...]:
        # a 2x2 block that is all zero drops its relevance into the +eps
        return ("stabiliser",) if plan.maxpool == "avg2x2" else ()

    def deconvnet_step(self, plan, s, like, acts, module):
        source = plan.info.inputs[0].name
        switches = windows.max_pool(acts[source], **plan.info.extra["window"])[1]
        return [(source, windows.unpool(s, like[0], switches))]

    def channel_problem(self, plan) -> str | None:
        return None

    def receptive_field(self, plan, known):
        source, field = fields.single(known)
        return fields.pooled(plan.node.name, field, self.window(plan), shape(source)[2:],
                             plan.info.extra["window"].get("output_size"))

    def window(self, plan):
        window = plan.info.extra["window"]
        if "output_size" in window:   # adaptive
            return None
        return window["kernel"], window["stride"], window["padding"], window["dilation"]

    def dump_choice(self, plan) -> dict:
        return {"maxpool": plan.maxpool}

    def configure(self, plan, rules, scope) -> None:
        plan.maxpool = rules.maxpool
        plan.maxpool_epsilon = rules.maxpool_epsilon if rules.maxpool == "avg2x2" else 0.0
        n, window = plan.node, plan.info.extra["window"]
        dilation = window.get("dilation", ())
        if plan.maxpool == "proportional" and any(d != 1 for d in dilation):
            raise LrpcError(f"node {n.name!r}: proportional max-pool relevance needs dilation 1, got {dilation}")
        if plan.maxpool == "avg2x2":
            spatial = tuple(shape(plan.info.inputs[0])[2:])
            if tuple(shape(n)[2:]) != tuple(s // 2 for s in spatial):
                raise LrpcError(f"node {n.name!r}: the 2x2 average stand-in for max-pool maps {spatial} to "
                                f"{tuple(s // 2 for s in spatial)}, but the pool's output is {tuple(shape(n)[2:])}; "
                                "use maxpool='winner' or 'proportional' for this model")


@register
class Amax(OpKind):
    """A max over dimensions (``info.args``: dims, keepdim): to the maxima, tied ones sharing."""

    name = "amax"
    colour = _COLOUR

    def emit(self, rp, plan, r, total) -> None:
        dims, keepdim = plan.info.args
        send_one(rp, plan, kernels.amax_relevance, (rp.env[plan.info.inputs[0]], rp.env[plan.node], r),
                 {"dims": dims, "keepdim": keepdim})

    def deconvnet_step(self, plan, s, like, acts, module):   # the adjoint of amax
        dims, keepdim = plan.info.args
        out = acts[plan.node.name].expand(s.shape[0], *acts[plan.node.name].shape[1:])
        return [(plan.info.inputs[0].name, kernels.amax_relevance(like[0], out, s, dims=dims, keepdim=keepdim))]

    def channel_problem(self, plan) -> str | None:
        if any(d % len(shape(plan.info.inputs[0])) == 1 for d in plan.info.args[0]):
            return "reduces over channels"
        return None

    def receptive_field(self, plan, known):
        source, field = fields.single(known)
        if set(plan.info.args[0]) <= {1} and len(shape(plan.node)) == len(shape(source)):
            return field   # over channels, dimension kept
        return fields.WHOLE
