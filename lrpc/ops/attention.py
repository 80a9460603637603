"""Attention: softmax, products of two signals through ``matmul``, and ``scaled_dot_product_attention``.

Under the ``default`` rules attention weights are constants (CP-LRP, Ali et al. 2022): relevance flows through
the values only, by the z-rule of the linear map v ↦ A v (exactly conserving). A matmul of two signals where
neither is a softmax output shares half-and-half after the z-rule (AttnLRP's product rule). A matmul with a
constant operand is an ordinary linear map with that weight.
"""
from __future__ import annotations

import torch

from . import Context, OpInfo, Unsupported, is_constant, params, shape
from .elementwise import is_gate, made_by

aten = torch.ops.aten


def is_softmax_output(node) -> bool:
    """A softmax's values (possibly reshaped or transposed): attention weights."""
    return made_by(node, (aten.softmax, aten._softmax))


def softmax(node, ctx: Context) -> OpInfo:
    # as an attention weight it is frozen and receives nothing (matmul and scaled_dot_product_attention freeze
    # it), unless the rule set is AttnLRP, whose softmax rule ``extra['softmax_dim']`` enables
    return OpInfo("pass", (node.args[0],), nonneg="always", extra={"softmax_dim": node.args[1]})


def matmul(node, ctx: Context) -> OpInfo:
    a, b = node.args[:2]
    if is_constant(a) and is_constant(b):
        return OpInfo("inert")
    if is_constant(b) and len(shape(b)) == 2:  # x @ W: the linear map with weight Wᵀ
        return OpInfo("linear", (a,), map="linear", weight=ctx.constant(b, "the matmul weight").t())
    if is_constant(a) or is_constant(b):
        raise Unsupported("a matmul with a batched constant operand")
    if is_gate(a) != is_gate(b):
        frozen = 0 if is_gate(a) else 1
        return OpInfo("frozen_matmul", (b if frozen == 0 else a,), extra={"frozen": frozen, "operands": (a, b)})
    return OpInfo("matmul_product", (a, b))


def attention(node, ctx: Context) -> OpInfo:
    p = params(node)   # enable_gqa: the kernels repeat shared key/value heads themselves
    mask = p.get("attn_mask")
    if mask is not None and not is_constant(mask):   # a mask from ids and attention_mask alone is a constant
        raise Unsupported("an attention mask computed from the embeddings' values")
    return OpInfo("attention", (p["value"],),
                  extra={"operands": (p["query"], p["key"], p["value"], mask),
                         "is_causal": bool(p.get("is_causal")), "scale": p.get("scale")})


TABLE = {
    aten.softmax: softmax, aten._softmax: softmax,
    aten.matmul: matmul, aten.bmm: matmul, aten.mm: matmul,
    aten.scaled_dot_product_attention: attention,
}
