"""The z⁺ fallback: the relevance of outputs without positive evidence ("orphans"), which plain z⁺ loses, goes
through their negative contributions, and where a window is all zero, evenly over it; so the rule conserves.

It runs as one opaque op (``add_zplus_orphans_``), so that a compiled graph stays ONE graph and still runs the
fallback only where some output with relevance is an orphan, as eager code does: written branch-free it costs
a W⁻ map and its transpose in every layer (ResNet-50 under ``default``: 7.0 forward passes against 3.9 eagerly),
and inductor on CPU rejects ``torch.cond``'s branches under its channels-last layout optimisation."""
from __future__ import annotations

import ast
import functools

import torch

from .contributions import batch_like, contribution_part, sign_terms, uniform_spread
from .linear_maps import LINEAR_MAPS
from .stabilizers import divide

Tensor = torch.Tensor


def with_orphans(relevance: Tensor, empty: Tensor, a: Tensor, w_pos, w_neg, valid, *, map: str, args: tuple,
                 nonneg: bool, eps: float, stab: str) -> Tensor:
    """``relevance`` (a layer input's, which the caller owns) plus the fallback's for ``empty``, the relevance of
    the outputs without positive evidence (zero elsewhere). Where autograd records, plain tensor code (the op has
    no gradient formula, and the path analyses differentiate the relevance pass); else the op, in place."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        if nonzero(empty):
            relevance = relevance + _orphan_relevance(LINEAR_MAPS[map], args, nonneg, eps, stab, empty, a, w_pos,
                                                      w_neg, valid)
        return relevance
    add_zplus_orphans_(relevance, empty, a, w_pos, w_neg, valid, map, repr(args), nonneg, eps, stab)
    return relevance


def _orphan_relevance(m, args, nonneg, eps, stab, empty, a, w_pos, w_neg, valid=None):
    """The z⁺ fallback for outputs without positive evidence (``empty``: their relevance, zero elsewhere): their
    relevance goes through their negative contributions, and where the window is all zero, evenly over it —
    over its real inputs only when ``valid`` (1 on real positions, 0 on an explicit zero pad) is given."""
    negative = sign_terms(m, a, nonneg, w_pos, w_neg)[1]
    out = None
    if negative:
        out, zero_neg = contribution_part(m, args, empty, negative, None, eps, stab, zero_mask=True)
        if zero_neg is None:
            return out
        empty = empty * zero_neg
        if not nonzero(empty):
            return out
    like = batch_like(a, empty.shape[0])
    if m.name in ("conv", "linear"):
        spread = uniform_spread(m, args, empty, like, torch.ones_like(w_pos[:1, :1]), "none", 0.0, valid)
    else:   # a pool: its implicit weights are the window's
        count = m.forward(torch.ones_like(a[:1]) if valid is None else valid, None, None, args)
        spread = m.transpose(divide(empty, count, "none", 0.0), like, None, args)
        spread = spread if valid is None else spread * valid
    return spread if out is None else out + spread


@torch.library.custom_op("lrpc::add_zplus_orphans_", mutates_args=("relevance",), tags=torch.Tag.flexible_layout,
                         schema="(Tensor(a!) relevance, Tensor empty, Tensor a, Tensor? w_pos, Tensor? w_neg, "
                                "Tensor? valid, str map, str args, bool nonneg, float eps, str stab) -> ()")
def add_zplus_orphans_(relevance, empty, a, w_pos, w_neg, valid, map, args, nonneg, eps, stab) -> None:
    """The z⁺ fallback, added to ``relevance`` (the layer input's) in place: ``empty`` is the relevance of the
    outputs without positive evidence (zero elsewhere), ``args`` the map's arguments as their ``repr``. Any
    layout will do (``flexible_layout``), so inductor passes its own without copies."""
    if nonzero(empty):
        m = LINEAR_MAPS[map]
        relevance.add_(_orphan_relevance(m, _map_args(args), nonneg, eps, stab, empty, a, w_pos, w_neg, valid))


@add_zplus_orphans_.register_fake
def _add_zplus_orphans_shape(relevance, empty, a, w_pos, w_neg, valid, map, args, nonneg, eps, stab) -> None:
    return None


def nonzero(t: Tensor) -> bool:
    """Whether some entry of ``t`` is not zero (NaN included), in one read-only pass over its storage order (a
    compiled graph hands over channels-last tensors, which a reduction would first copy; ``any`` on a float
    tensor casts it to bool first: another pass)."""
    if t.numel() == 0:
        return False
    storage_order = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d))).reshape(-1)
    low, high = torch.aminmax(storage_order)
    return not bool((low == 0) & (high == 0))


@functools.lru_cache(maxsize=None)
def _map_args(text: str) -> tuple:
    return ast.literal_eval(text)
