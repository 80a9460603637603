"""Elementwise ops: activations (relevance passes through unchanged), sums, differences, products, quotients.

Rules for products, written once for every spelling (``x * y``, ``torch.mul``, SE blocks, GLU-style gates, layer
scale): a constant factor passes relevance on (a diagonal linear map: every rule gives R_x = R); a gate (a
sigmoid / hard-sigmoid / softmax output) is frozen and the gated signal takes all (as for SE); a factor broadcast
over the other is frozen too (a per-channel statistic); two full signals share half-and-half (AttnLRP's rule
for products, exactly conserving). When one of two full signals comes out of an activation (the gate of SwiGLU,
GeGLU), the op says so, and a rule set may freeze it instead (CP-LRP, ``Rules.gated_product``). A quotient
freezes its divisor (normalisation statistics); ``signal - stat`` freezes a broadcast statistic, so hand-written
LayerNorms behave like ``aten.layer_norm``; a difference of two full signals is split like a sum of ``a`` and
``−b``.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from . import Context, OpInfo, Unsupported, dims_of, is_constant, packet, params, shape

aten = torch.ops.aten

GATES = {aten.sigmoid, aten.hardsigmoid, aten.softmax, aten._softmax}
# ops that move a gate's values without changing them, so their output is still a gate
GATE_CARRIERS = {aten.view, aten.reshape, aten.expand, aten.unsqueeze, aten.squeeze, aten.permute, aten.transpose,
                 aten.flatten, aten.unflatten, aten._unsafe_view, aten.dropout, aten.clone, aten.contiguous,
                 aten._to_copy, aten.to}   # a dtype cast: Hugging Face's eager attention takes a float32 softmax


# activations that make the gate of a gated linear unit (SwiGLU's silu, GeGLU's gelu, ReGLU's relu, ...)
GATING_ACTIVATIONS = {aten.silu, aten.gelu, aten.relu, aten.tanh, aten.hardswish, aten.mish, aten.softplus,
                      aten.leaky_relu, aten.elu, aten.celu, aten.selu}


def made_by(node, ops) -> bool:
    """Whether ``node``'s values come out of one of ``ops``, moved (reshaped, transposed, cast) but not changed."""
    while isinstance(node, fx.Node) and packet(node) in GATE_CARRIERS:
        node = node.args[0]
    return isinstance(node, fx.Node) and packet(node) in ops


def is_gate(node) -> bool:
    return made_by(node, GATES)


def is_activated(node) -> bool:
    return made_by(node, GATING_ACTIVATIONS)


# ops that compute each output element from the same element of their operands (constants broadcast in)
ELEMENTWISE = {aten.add, aten.sub, aten.mul, aten.div, aten.pow, aten.neg, aten.exp, aten.erf, aten.tanh,
               aten.sigmoid, aten.relu, aten.gelu, aten.silu, aten.sqrt, aten.rsqrt, aten.abs, aten.clamp,
               aten.reciprocal, aten._to_copy, aten.to, aten.type_as}


def elementwise_root(node) -> fx.Node | None:
    """The one signal that an elementwise expression is a function of: x for ``0.5·x·(1 + tanh(c·(x + a·x³)))``
    (GPT-2's spelled-out GELU) or ``x·sigmoid(x)``; the node itself where several signals meet or a non-
    elementwise op (a linear map, a reduction) made it; None for a constant."""
    if is_constant(node):
        return None
    if "lrpc_elementwise_root" not in node.meta:
        root = node
        if packet(node) in ELEMENTWISE:
            roots = {elementwise_root(i) for i in node.all_input_nodes} - {None}
            if len(roots) == 1 and shape(next(iter(roots))) == shape(node):
                root = roots.pop()
        node.meta["lrpc_elementwise_root"] = root
    return node.meta["lrpc_elementwise_root"]


def _one_signal(a, b) -> fx.Node | None:
    """The signal both operands are elementwise functions of, if they share one: then the op is part of an
    activation written out in elementwise ops, and takes the identity rule of an activation as a whole."""
    root = elementwise_root(a)
    return root if root is not None and root is elementwise_root(b) else None


def activation(nonneg: str = "never"):
    def handler(node, ctx: Context) -> OpInfo:
        return OpInfo("pass", (node.args[0],), nonneg=nonneg)
    return handler


def clamp(node, ctx: Context) -> OpInfo:
    low = params(node).get("min")
    return OpInfo("pass", (node.args[0],), nonneg="always" if isinstance(low, (int, float)) and low >= 0 else "never")


def hardtanh(node, ctx: Context) -> OpInfo:
    low = params(node).get("min_val", -1.0)
    return OpInfo("pass", (node.args[0],), nonneg="always" if low >= 0 else "never")


def _operands(node) -> tuple:
    p = params(node)
    return p.get("self", p.get("input")), p.get("other")


def add(node, ctx: Context) -> OpInfo:
    a, b = _operands(node)
    if params(node).get("alpha", 1) != 1 and not is_constant(b):
        raise Unsupported("torch.add with alpha != 1 on a signal")
    if is_constant(a) and is_constant(b):
        return OpInfo("inert")
    if is_constant(a) or is_constant(b):  # a bias-like constant: relevance stays with the signal (default rules)
        alpha = params(node).get("alpha", 1)
        signal, coefficient = (b, alpha) if is_constant(a) else (a, 1)
        return OpInfo("pass", (signal,), extra={"constant_add": coefficient})
    if _one_signal(a, b) is not None:
        return OpInfo("pass", (_one_signal(a, b),))
    return OpInfo("add", (a, b), nonneg="inputs")


def _broadcast_statistic(a, b, node) -> bool:
    """``b`` is broadcast over ``a`` (a per-row mean, a per-channel scale): frozen, not a second signal."""
    return shape(a) == shape(node) and shape(b) != shape(node)


def sub(node, ctx: Context) -> OpInfo:
    a, b = _operands(node)
    if is_constant(b):  # x - mean: a shift, like a bias; relevance stays with x
        return OpInfo("pass", (a,), extra={"constant_add": 1})
    if is_constant(a):  # c - x: a reflected signal; each output still has one contribution
        return OpInfo("pass", (b,), extra={"constant_add": -params(node).get("alpha", 1)})
    if _one_signal(a, b) is not None:
        return OpInfo("pass", (_one_signal(a, b),))
    if packet(b) is aten.mean and b.args[0] is a and params(b).get("keepdim"):
        # x − mean(x), a hand-written LayerNorm's centering: the mean frozen (a pass), or under
        # ``Rules.layernorm='frozen_std'`` the z-rule of the centering map, as for ``aten.layer_norm``
        return OpInfo("pass", (a,), extra={"centering": dims_of(params(b)["dim"], len(shape(a)))})
    if _broadcast_statistic(a, b, node):
        return OpInfo("pass", (a,))
    # a + (−b): Relevance Splitting between a and the contribution −b (PoolFormer's pool(x) − x)
    return OpInfo("add", (a, b), extra={"negated": True})


def mul(node, ctx: Context) -> OpInfo:
    a, b = _operands(node)
    if is_constant(a) and is_constant(b):
        return OpInfo("inert")
    if is_constant(a) or is_constant(b):  # scaling by a constant: relevance passes
        return OpInfo("pass", (b if is_constant(a) else a,))
    if _one_signal(a, b) is not None:
        return OpInfo("pass", (_one_signal(a, b),))
    if is_gate(a) != is_gate(b):
        signal = b if is_gate(a) else a
    elif _broadcast_statistic(a, b, node) or _broadcast_statistic(b, a, node):
        signal = a if shape(a) == shape(node) else b
    elif is_activated(a) != is_activated(b):   # act(x W) * (x V): a rule set may freeze the activated factor
        return OpInfo("product", (a, b), extra={"activated": a if is_activated(a) else b})
    else:
        return OpInfo("product", (a, b))
    return OpInfo("gate", (signal,), extra={"gate": b if signal is a else a})


def div(node, ctx: Context) -> OpInfo:
    a, b = _operands(node)
    if is_constant(a):
        raise Unsupported("a constant divided by a signal")
    return OpInfo("pass", (a,)) if is_constant(b) else OpInfo("gate", (a,), extra={"gate": b})


def addcmul(node, ctx: Context) -> OpInfo:
    """self + value · t1 · t2 (timm's affine layers): one signal among constants keeps all its relevance."""
    signals = [v for v in node.args[:3] if not is_constant(v)]
    if len(signals) != 1:
        raise Unsupported("addcmul with more than one signal operand")
    return OpInfo("pass", (signals[0],))


TABLE = {
    aten.addcmul: addcmul,
    aten.relu: activation("always"), aten.sigmoid: activation("always"), aten.hardsigmoid: activation("always"),
    aten.gelu: activation(), aten.silu: activation(), aten.tanh: activation(), aten.hardswish: activation(),
    aten.leaky_relu: activation(), aten.elu: activation(), aten.celu: activation(), aten.selu: activation(),
    aten.mish: activation(), aten.softplus: activation(), aten.neg: activation(), aten.pow: activation(),
    aten.hardtanh: hardtanh, aten.clamp: clamp, aten.clamp_min: clamp,
    aten.to: activation("inputs"), aten._to_copy: activation("inputs"), aten.type_as: activation("inputs"),
    aten.add: add, aten.sub: sub, aten.mul: mul, aten.div: div,
}
