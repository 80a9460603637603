"""Attention kinds: ``frozen_matmul`` and ``attention`` (the attention weights frozen, relevance to the values),
``matmul_product`` (a product of two signals, under AttnLRP: a z-rule share each)."""
from __future__ import annotations

from dataclasses import replace

from .. import kernels
from ..ops import OpInfo
from ..ops.attention import is_softmax_output
from .base import forward_inputs, register, send_one, send_parts, tag
from .structural import PositionMixing

_REFUSED = ("deconvnet_step", "channel_problem")


class AttentionKind(PositionMixing):
    attention = True
    unsupported = _REFUSED

    def carries_value(self, node) -> bool:
        return False


@register
class FrozenMatmul(AttentionKind):
    """``a @ b`` with one factor (``extra['frozen']``: attention weights) a constant of the relevance."""

    name = "frozen_matmul"

    def emit(self, rp, plan, r, total) -> None:
        extra = plan.info.extra
        a, b = (rp.env[o] for o in extra["operands"])
        send_one(rp, plan, kernels.frozen_matmul, (r, a, b, rp.env[plan.node]), {"frozen": extra["frozen"]})

    def under_rules(self, info, rules):
        extra = info.extra
        if rules.attention == "attnlrp" and is_softmax_output(extra["operands"][extra["frozen"]]):
            return OpInfo("matmul_product", tuple(extra["operands"])), None
        return info, None


@register
class Attention(AttentionKind):
    """Scaled dot-product attention with its weights frozen: relevance to the values."""

    name = "attention"

    def emit(self, rp, plan, r, total) -> None:
        extra = plan.info.extra
        q, k, v, mask = (None if o is None else rp.env[o] for o in extra["operands"])
        send_one(rp, plan, kernels.attention_relevance, (r, q, k, v, mask, rp.env[plan.node]),
                 {"is_causal": extra["is_causal"], "scale": extra["scale"]})

    def under_rules(self, info, rules):
        if rules.attention == "attnlrp":   # relevance also reaches the queries and keys, through the softmax
            query, key, value, _ = info.extra["operands"]
            return replace(info, inputs=(query, key, value)), "attnlrp"
        return info, None


@register
class MatmulProduct(AttentionKind):
    """``a @ b`` of two signals: a z-rule share each."""

    name = "matmul_product"

    def emit(self, rp, plan, r, total) -> None:
        parts = rp.call(kernels.matmul_product, (r, *forward_inputs(rp, plan), rp.env[plan.node]), name=tag(plan))
        send_parts(rp, plan, parts)
