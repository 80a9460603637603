"""Runtime relevance ops for the structural kinds (reshape, cat, pad, pools, start), called by generated code.

Rules for linear maps live in ``rules.py`` and splitting in ``splitting.py``; everything here moves relevance
without a rule choice, except ``maxpool_relevance`` whose three modes are the documented options.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LrpcError
from .stabilizers import divide

aten = torch.ops.aten


def in_place() -> bool:
    """Whether relevance ops may update their own temporaries in place: not while autograd records (path
    analysis differentiates replayed ops). On CPU a fresh large tensor costs more than the arithmetic on it."""
    return not torch.is_grad_enabled()


def resolve_target(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is not None:
        return target
    if logits.dim() == 1:   # a single-score head: its one output is the target
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits.argmax(1)


def check_start(mode: str, logits_shape: tuple[int, ...]) -> None:
    """Refuse a start mode that means nothing for the model's head: a softmax over one output is always 1."""
    if mode == "softmax" and (len(logits_shape) == 1 or logits_shape[1] == 1):
        raise LrpcError(f"the model returns one score per sample {list(logits_shape)}, whose softmax is always 1; "
                        "compile with start='score' (explain the raw score) or start='sigmoid' (explain the "
                        "probability sigmoid(score) of a binary classifier)")


def start_relevance(logits: torch.Tensor, target: torch.Tensor, *, mode: str) -> torch.Tensor:
    """One-hot at the target class, scaled by 1 (``one``), the logit (``logit``, or ``score`` for a single-score
    head: the same raw output), the softmax probability or the sigmoid probability. A single-score head [B]
    or [B, 1] has one class, 0."""
    if logits.dim() == 1:
        return start_relevance(logits.unsqueeze(1), target, mode=mode).squeeze(1)
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    if mode == "one":
        return onehot
    if mode in ("logit", "score"):
        return onehot * logits
    if mode == "sigmoid":
        return onehot * logits.sigmoid()
    return onehot * logits.softmax(1)


def batch_sum(r: torch.Tensor) -> torch.Tensor:
    """Per-sample total; reduces over the dims rather than a flattened view, which would copy a channels_last r."""
    return r.sum(tuple(range(1, r.dim()))) if r.dim() > 1 else r


def reshape_back(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return r.reshape(like.shape)


def permute_back(r: torch.Tensor, *, dims: tuple[int, ...]) -> torch.Tensor:
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return r.permute(inverse)


def split_cat(r: torch.Tensor, *inputs: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    return torch.split(r, [x.shape[dim] for x in inputs], dim)


def unpad(r: torch.Tensor, *, pad: tuple[int, ...]) -> torch.Tensor:
    return F.pad(r, [-p for p in pad])


def check_finite(t: torch.Tensor, *, node: str, what: str) -> torch.Tensor:
    """Debug mode (``lrpc.compile(..., debug=True)``): pass ``t`` through, or raise naming the node that made it
    if it holds NaN or Inf. The generated code checks in execution order, so the first raise is the origin."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        nan = int(torch.isnan(t).sum())
        inf = t.numel() - int(finite.sum()) - nan
        raise LrpcError(f"debug: {what} at node {node!r} has {nan} NaN and {inf} Inf among {t.numel()} values; it "
                        "is the first non-finite tensor (forward activations are checked in graph order, then "
                        "relevance messages in relevance-pass order)")
    return t


def maxpool_relevance(a, out, r, *, mode, kernel, stride, padding, dilation, ceil_mode, eps, indices=None):
    """``winner``: all to each window's arg-max (the gradient of max; ``indices``: the arg-max its forward
    found); ``proportional``: to every input of the window in proportion to its activation; ``avg2x2``: the
    Otsuki et al. stand-in, a 2x2/stride-2 average pool used in the relevance pass only (does not conserve where
    a 2x2 block is all zero but its 3x3 window is not)."""
    if mode == "winner":
        return aten.max_pool2d_with_indices_backward(r, a, kernel, stride, padding, dilation, ceil_mode, indices)
    if mode == "avg2x2":
        kernel, stride, padding, ceil_mode = (2, 2), (2, 2), (0, 0), False
    z = F.avg_pool2d(a, kernel, stride, padding, ceil_mode, True)
    s = divide(r, z, "add" if mode == "avg2x2" else "none", eps)
    return a * aten.avg_pool2d_backward(s, a, kernel, stride, padding, ceil_mode, True, None)


def amax_relevance(a, out, r, *, dims, keepdim):
    """Winner-take-all over the reduced dims; tied maxima share equally."""
    if not keepdim:
        for d in sorted(d % a.dim() for d in dims):
            out, r = out.unsqueeze(d), r.unsqueeze(d)
    winners = (a == out).to(a.dtype)
    return winners * r / winners.sum(dims, keepdim=True)
