"""Normalisations with their statistics treated as constants: per element an affine map of one input, so
relevance passes through unchanged (conserving). BatchNorm may instead be folded into the conv before it
(``Rules.batchnorm='fold'``, zennit's canonizer as a graph pass)."""
from __future__ import annotations

import torch

from . import Context, OpInfo

aten = torch.ops.aten


def batchnorm(node, ctx: Context) -> OpInfo:
    return OpInfo("batchnorm", (node.args[0],))


def frozen_statistics(node, ctx: Context) -> OpInfo:
    return OpInfo("pass", (node.args[0],))


TABLE = {
    aten.batch_norm: batchnorm,
    aten.layer_norm: frozen_statistics, aten.group_norm: frozen_statistics, aten.rms_norm: frozen_statistics,
    aten.instance_norm: frozen_statistics,
}
