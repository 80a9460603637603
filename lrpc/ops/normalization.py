"""Normalisations with their statistics treated as constants: per element an affine map of one input, so
relevance passes through unchanged (conserving). BatchNorm may instead be folded into the conv before it
(``Rules.batchnorm='fold'``, zennit's canonizer as a graph pass) or take the z-rule of its own affine map, its
shift absorbing (``'affine'``: gradient × input, as LXT leaves it)."""
from __future__ import annotations

import torch

from . import Context, OpInfo, params

aten = torch.ops.aten


def batchnorm(node, ctx: Context) -> OpInfo:
    """Eval-mode BatchNorm, ``aten.batch_norm`` or item 0 of ``_native_batch_norm_legit_no_training``; without
    running statistics (batch statistics even in eval) it is not a fixed affine map and passes relevance on."""
    p = params(node)
    if p.get("running_var") is None:
        return OpInfo("batchnorm", (p["input"],))
    return OpInfo("batchnorm", (p["input"],), extra={"batchnorm": {
        "weight": p.get("weight"), "running_var": p["running_var"], "eps": float(p["eps"])}})


def frozen_statistics(node, ctx: Context) -> OpInfo:
    return OpInfo("pass", (node.args[0],))


def layer_norm(node, ctx: Context) -> OpInfo:
    """A pass under the default rules; ``extra['layernorm']`` lets ``Rules.layernorm='frozen_std'`` apply
    LXT's rule (σ constant, the mean still subtracted)."""
    p = params(node)
    return OpInfo("pass", (p["input"],), extra={"layernorm": {
        "weight": p.get("weight"), "normalized_shape": tuple(p["normalized_shape"]), "eps": float(p.get("eps", 1e-5))}})


TABLE = {
    aten.batch_norm: batchnorm,
    aten.layer_norm: layer_norm, aten.group_norm: frozen_statistics, aten.rms_norm: frozen_statistics,
    aten.instance_norm: frozen_statistics,
}
