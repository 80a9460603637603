"""Kinds a rule set chooses for an op instead of the op's own (``OpKind.under_rules``; docs/transformers.md):
they emit and absorb their own way, and to every analysis of the forward graph they are their ``base`` op."""
from __future__ import annotations

from .. import transformer_rules
from .base import OpKind, lookup, register, send_one, send_parts, tag


class RuleSetKind(OpKind):
    base: str = ""   # the kind of the op in the forward graph

    @property
    def op(self) -> OpKind:
        return lookup(self.base)

    # the forward op, to the analyses and the other modules' questions
    @property
    def pointwise(self):
        return self.op.pointwise

    @property
    def attention(self):
        return self.op.attention

    @property
    def residual_join(self):
        return self.op.residual_join

    @property
    def applies_rule(self):
        return self.op.applies_rule

    @property
    def zero_padding(self):
        return self.op.zero_padding

    def deconvnet_step(self, plan, s, like, acts, module):
        return self.op.deconvnet_step(plan, s, like, acts, module)

    def channel_problem(self, plan):
        return self.op.channel_problem(plan)

    def receptive_field(self, plan, known):
        return self.op.receptive_field(plan, known)

    def window(self, plan):
        return self.op.window(plan)

    def moves_batch(self, plan):
        return self.op.moves_batch(plan)

    def carries_value(self, node):
        return self.op.carries_value(node)

    def edge_role(self, plan, source):
        return self.op.edge_role(plan, source)


@register
class AttnLRP(RuleSetKind):
    """Scaled dot-product attention under AttnLRP: relevance to queries, keys and values."""

    name, base = "attnlrp", "attention"

    def emit(self, rp, plan, r, total) -> None:
        extra = plan.info.extra
        q, k, v, mask = (None if o is None else rp.env[o] for o in extra["operands"])
        parts = rp.call(transformer_rules.attnlrp_attention, (r, q, k, v, mask, rp.env[plan.node]),
                        {"is_causal": extra["is_causal"], "scale": extra["scale"]}, name=tag(plan))
        send_parts(rp, plan, parts)

    def absorbs(self, plan):
        return ("softmax",)


@register
class LayerNormFrozenStd(RuleSetKind):
    """LayerNorm with σ frozen (``Rules.layernorm='frozen_std'``); its shift absorbs."""

    name, base = "layernorm_frozen_std", "pass"

    def emit(self, rp, plan, r, total) -> None:
        norm = plan.info.extra["layernorm"]
        weight = None if norm["weight"] is None else rp.env[norm["weight"]]
        send_one(rp, plan, transformer_rules.layernorm_frozen_std,
                 (r, rp.env[plan.info.inputs[0]], rp.env[plan.node], weight),
                 {"normalized_shape": norm["normalized_shape"], "eps": norm["eps"]})

    def absorbs(self, plan):
        return ("bias",)


@register
class Centering(RuleSetKind):
    """A hand-written LayerNorm's ``x − mean(x)`` under ``Rules.layernorm='frozen_std'``: its z-rule conserves."""

    name, base = "centering", "pass"

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, transformer_rules.centering_relevance, (r, rp.env[plan.info.inputs[0]], rp.env[plan.node]),
                 {"dims": plan.info.extra["centering"]})


@register
class BatchNormAffine(RuleSetKind):
    """Eval BatchNorm as its affine map's z-rule (``Rules.batchnorm='affine'``); its shift absorbs."""

    name, base = "batchnorm_affine", "batchnorm"

    def emit(self, rp, plan, r, total) -> None:
        norm = plan.info.extra["batchnorm"]
        weight = None if norm["weight"] is None else rp.env[norm["weight"]]
        send_one(rp, plan, transformer_rules.batchnorm_share,
                 (r, rp.env[plan.info.inputs[0]], rp.env[plan.node], rp.env[norm["running_var"]], weight),
                 {"eps": norm["eps"]})

    def absorbs(self, plan):
        return ("bias",)


@register
class ConstantAdd(RuleSetKind):
    """``x + c`` with c a constant, proportionally (``Rules.constant_add='proportional'``): c absorbs its share."""

    name, base = "constant_add", "pass"

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, transformer_rules.constant_add_share, (r, rp.env[plan.info.inputs[0]], rp.env[plan.node]),
                 {"coefficient": plan.info.extra["constant_add"]})

    def absorbs(self, plan):
        return ("constant",)


@register
class Softmax(RuleSetKind):
    """Softmax under AttnLRP: R_x = x ⊙ (R − s·ΣR); the difference to ΣR is absorbed."""

    name, base = "softmax", "pass"

    def emit(self, rp, plan, r, total) -> None:
        send_one(rp, plan, transformer_rules.softmax_relevance, (r, rp.env[plan.info.inputs[0]], rp.env[plan.node]),
                 {"dim": plan.info.extra["softmax_dim"]})

    def absorbs(self, plan):
        return ("softmax",)
