"""Elementwise kinds: ``pass`` (relevance unchanged), ``batchnorm``, ``gate`` (all to the gated signal), ``add``
(Relevance Splitting) and ``product`` (two signals, a z-rule share each)."""
from __future__ import annotations

import operator

import torch

from .. import kernels
from ..ops import OpInfo, packet, shape
from ..splitting import classify_add, split_add
from . import fields
from .base import OpKind, forward_inputs, register, send_parts, tag

aten = torch.ops.aten
# ops that carry a value unchanged up to a constant scaling (attention's q, k, v between projection and attention)
_SCALINGS = {aten.mul, aten.div, aten.clone, aten.contiguous, aten.dropout, aten.alias, aten._to_copy}
_RELU = (aten.relu,)
_ADDITIVE = (aten.add, aten.sub)   # a constant added (a bias): no deconvnet effect


class Pointwise(OpKind):
    """One signal in, the same positions and channels out."""

    pointwise = True

    def channel_problem(self, plan) -> str | None:
        return None

    def receptive_field(self, plan, known):
        return fields.elementwise(plan, known)


@register
class PassThrough(Pointwise):
    """Relevance unchanged: activations, a bias or a constant added (the rule set may choose otherwise for
    normalisations, softmax and constant adds: ``under_rules``)."""

    name = "pass"

    def emit(self, rp, plan, r, total) -> None:
        source = plan.info.inputs[0]
        if shape(source) != shape(plan.node):   # broadcast (a signal times a wider constant): its copies add up
            r = rp.call(kernels.gate_relevance, (r, rp.env[source]), name=f"rel_{plan.node.name}")
        rp.send(source, plan.node, r, total)

    def deconvnet_step(self, plan, s, like, acts, module):
        node, source = plan.node, plan.info.inputs[0].name
        if packet(node) in _RELU:
            return [(source, s.clamp(min=0))]
        if packet(node) in _ADDITIVE:
            return [(source, s)]
        raise self.refusal(plan, "deconvnet has rules for ReLU networks only")

    def carries_value(self, node) -> bool:
        return packet(node) in _SCALINGS

    def under_rules(self, info, rules):
        extra = info.extra
        if "layernorm" in extra and rules.layernorm == "frozen_std":
            return info, "layernorm_frozen_std"
        if "centering" in extra and rules.layernorm == "frozen_std":
            return info, "centering"
        if "constant_add" in extra and rules.constant_add == "proportional":
            return info, "constant_add"
        if "softmax_dim" in extra and rules.attention == "attnlrp":
            return info, "softmax"
        return info, None


@register
class BatchNorm(Pointwise):
    """BatchNorm in eval mode: relevance unchanged (or folded into the conv before it, or its affine map's
    z-rule under ``batchnorm="affine"``)."""

    name = "batchnorm"

    def emit(self, rp, plan, r, total) -> None:
        rp.send(plan.info.inputs[0], plan.node, r, total)

    def deconvnet_step(self, plan, s, like, acts, module):
        _, weight, _, _, running_var, _, _, eps, _ = plan.node.args
        weight = 1.0 if weight is None else operator.attrgetter(weight.target)(module)
        scale = weight / (operator.attrgetter(running_var.target)(module) + eps).sqrt()
        return [(plan.info.inputs[0].name, s * scale.reshape(1, -1, *([1] * (s.dim() - 2))))]

    def under_rules(self, info, rules):
        if "batchnorm" in info.extra and rules.batchnorm == "affine":
            return info, "batchnorm_affine"
        return info, None


@register
class Gate(Pointwise):
    """``signal * gate`` where the gate is an activation of another signal: all relevance to the signal."""

    name = "gate"

    def emit(self, rp, plan, r, total) -> None:
        n, info = plan.node, plan.info
        message = r if shape(info.inputs[0]) == shape(n) else \
            rp.call(kernels.gate_relevance, (r, rp.env[info.inputs[0]]), name=tag(plan))
        rp.send(info.inputs[0], n, message, total)

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(plan.info.inputs[0].name, s * acts[plan.info.extra["gate"].name])]

    def edge_role(self, plan, source) -> dict:
        return {"role": "gate"} if source is plan.info.extra.get("gate") else {}


@register
class Add(OpKind):
    """A sum of two signals: Relevance Splitting between the operands (``splitting.split_add``)."""

    name = "add"
    colour = "#fce5cd"
    residual_join = True

    def emit(self, rp, plan, r, total) -> None:
        n, info = plan.node, plan.info
        ins = forward_inputs(rp, plan)
        policy, add_kind = plan.splitting, plan.add_kind
        silent = add_kind.skip if (add_kind.kind == "identity" and not policy.identity) else -1
        nonneg = tuple(i in rp.plans and rp.plans[i].nonneg for i in info.inputs)
        if info.extra.get("negated"):   # a − b: split between a and the contribution −b
            ins[1] = rp.call(torch.neg, (ins[1],), name=f"neg_{n.name}")
            nonneg = (nonneg[0], False)
        parts = rp.call(split_add, (r, *ins), {"mode": policy.mode, "eps": policy.epsilon, "silent": silent,
                                               "nonneg": nonneg}, name=tag(plan))
        send_parts(rp, plan, parts)

    def absorbs(self, plan) -> tuple[str, ...]:
        splitting = plan.splitting
        return ("stabiliser",) if splitting.mode == "proportional" and splitting.epsilon > 0 else ()

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(i.name, s.sum_to_size(l.shape)) for i, l in zip(plan.info.inputs, like)]

    def channel_problem(self, plan) -> str | None:
        return None

    def receptive_field(self, plan, known):
        return fields.elementwise(plan, known)

    def dump_choice(self, plan) -> dict:
        a, b = (i.name for i in plan.info.inputs)
        skip = plan.add_kind.skip
        choice = {"splitting": plan.splitting.describe(), "skip_kind": plan.add_kind.kind}
        if skip is not None:
            choice.update(skip_operand=skip, skip_input=(a, b)[skip], main_input=(a, b)[1 - skip])
        return choice

    def edge_role(self, plan, source) -> dict:
        if source not in plan.info.inputs:
            return {}
        index = plan.info.inputs.index(source)
        skip = plan.add_kind.skip
        return {"operand": index, "role": "operand" if skip is None else ("skip" if index == skip else "main")}

    def configure(self, plan, rules, scope) -> None:
        plan.splitting = rules.splitting
        plan.add_kind = classify_add(plan.node, plan.info.inputs, scope.order)


@register
class Product(OpKind):
    """A product of two signals: a z-rule share each (``kernels.product_relevance``)."""

    name = "product"
    unsupported = ("deconvnet_step", "channel_problem")

    def emit(self, rp, plan, r, total) -> None:
        parts = rp.call(kernels.product_relevance, (r, *forward_inputs(rp, plan)), name=tag(plan))
        send_parts(rp, plan, parts)

    def receptive_field(self, plan, known):
        return fields.elementwise(plan, known)

    def under_rules(self, info, rules):
        if "activated" in info.extra and rules.gated_product == "frozen_gate":
            gate = info.extra["activated"]
            signal = next(i for i in info.inputs if i is not gate)
            return OpInfo("gate", (signal,), extra={"gate": gate}), None
        return info, None
