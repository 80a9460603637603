"""``linear``: a rule applies (convs, linears, average pools, means, upsampling: the maps of ``linear_maps``)."""
from __future__ import annotations

from .. import kernels
from ..errors import LrpcError
from ..linear_maps import LINEAR_MAPS
from ..ops import describe_target, packet, shape
from ..rules import Pass
from . import fields
from .base import OpKind, forward_inputs, kind_of, register, tag


@register
class Linear(OpKind):
    name = "linear"
    colour = "#cfe2f3"
    applies_rule = True

    def emit(self, rp, plan, r, total) -> None:
        n, info, rule = plan.node, plan.info, plan.rule
        ins = forward_inputs(rp, plan)
        nonneg = rp.plans[info.inputs[0]].nonneg
        consts = rp.constants(n, rule, info.weight, info.bias, nonneg)
        kwargs = {"map": info.map, "args": info.args, "nonneg": nonneg, **rule.kernel_kwargs()}
        source = rp.plans[info.inputs[0]]
        if getattr(rule, "fallback", False) and kind_of(source).zero_padding:
            # an even spread over a window must not hand relevance to the zeros an explicit pad added (the
            # asymmetric remainder of TF "same" padding): they are cropped away, and it would be lost
            kwargs["valid"] = rp.call(kernels.pad_mask, (rp.env[source.info.inputs[0]],), {"pad": source.info.args},
                                      name=f"valid_{n.name}")
        out = rp.env[n] if rule.reads_output else None
        message = rp.call(rule.kernel, (ins[0], out, r, *consts), kwargs, name=tag(plan))
        rp.send(info.inputs[0], n, message)

    def absorbs(self, plan) -> tuple[str, ...]:
        rule, parts = plan.rule, []
        if getattr(rule, "bias", False) and plan.info.bias is not None:
            parts.append("bias")
        if getattr(rule, "epsilon", 0.0) > 0 or getattr(rule, "stabilizer_mode", None) == "rms":
            parts.append("stabiliser")
        return tuple(parts)

    def deconvnet_step(self, plan, s, like, acts, module):
        info = plan.info
        return [(info.inputs[0].name, LINEAR_MAPS[info.map].transpose(s, like[0], info.weight, info.args))]

    def channel_problem(self, plan) -> str | None:
        # average pools and means (conv/linear layers are producers, not region ops)
        info = plan.info
        if info.map == "reduce" and any(d % len(shape(info.inputs[0])) == 1 for d in info.args[0]):
            return "reduces over channels"
        return None

    def receptive_field(self, plan, known):
        source, field = fields.single(known)
        info, name = plan.info, plan.node.name
        geometry = self.window(plan)
        if geometry is not None or info.map == "adaptive_avg_pool":
            return fields.pooled(name, field, geometry, shape(source)[2:], info.args[0])
        if info.map == "reduce":
            dims, keepdim, _ = info.args
            return field if set(dims) <= {1} and keepdim else fields.WHOLE
        if info.map == "linear":
            return () if len(shape(plan.node)) == 2 else fields.WHOLE
        raise LrpcError(f"no receptive field through node {name!r} ({info.map}, module {plan.module or '-'}): its "
                        "output positions do not sit on a regular grid of input intervals")

    def window(self, plan):
        info = plan.info
        if info.map == "conv":
            stride, padding, dilation, _ = info.args
            return tuple(info.weight.shape[2:]), stride, padding, dilation
        if info.map == "avg_pool":
            kernel, stride, padding = info.args[:3]
            return kernel, stride, padding, (1,) * len(kernel)
        return None

    def dump_choice(self, plan) -> dict:
        return {"map": plan.info.map, "rule": plan.rule.describe()}

    def weighted(self, info) -> bool:
        return LINEAR_MAPS[info.map].weighted

    def configure(self, plan, rules, scope) -> None:
        plan.node.meta["lrpc_weighted"] = LINEAR_MAPS[plan.info.map].weighted
        plan.layer = scope.layer_context(plan)
        plan.rule = rules.rule_for(plan.layer)
        check_rule(plan, scope.gm)


def check_rule(plan, gm) -> None:
    """Refuse a rule the layer it lands on cannot take (z^B needs weights, pass needs equal shapes…)."""
    rule, info, n = plan.rule, plan.info, plan.node
    problem = None
    if rule.needs_weights and not LINEAR_MAPS[info.map].weighted:
        problem = f"rule {rule.name} needs weights but {getattr(packet(n), '__name__', info.map)} has none"
    elif isinstance(rule, Pass) and shape(info.inputs[0]) != shape(n):
        problem = f"rule pass needs equal input and output shapes, got {shape(info.inputs[0])} -> {shape(n)}"
    elif rule.name == "zbox" and info.map == "conv" and info.args[3] != 1:
        problem = "rule zbox on a grouped conv"
    elif rule.name == "zbox" and info.map == "conv_transpose":
        problem = "rule zbox on a transposed conv"
    if problem:
        raise LrpcError(f"node {n.name!r} ({describe_target(n, gm)}): {problem}")
