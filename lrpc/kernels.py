"""Runtime relevance ops for the structural kinds (reshape, cat, pad, pools, start), called by generated code.

Rules for linear maps live in ``rules.py`` and splitting in ``splitting.py``; everything here moves relevance
without a rule choice, except ``maxpool_relevance`` whose three modes are the documented options.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LrpcError
from .stabilizers import divide, may_be_zero

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
                        "probability sigmoid(score) of a binary classifier); lrpc explain: --start score")


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


def sample_sums(r: torch.Tensor, rows: torch.Tensor, *, dim: int, inner: int) -> torch.Tensor:
    """Per-sample totals of a tensor whose samples sit in dimension ``dim`` laid out as [outer, B, inner]
    flattened ([B·nW, ...]: outer 1; [L·B, E]: inner 1); ``rows`` is any tensor with one row per sample."""
    batch = rows.shape[0]
    r = r.movedim(dim, 0)
    return r.reshape(-1, batch, inner, *r.shape[1:]).transpose(0, 1).reshape(batch, -1).sum(1)


def reshape_back(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return r.reshape(like.shape)


def permute_back(r: torch.Tensor, *, dims: tuple[int, ...]) -> torch.Tensor:
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return r.permute(inverse)


def transpose_back(r: torch.Tensor, x: torch.Tensor, *, dims: tuple[int, int]) -> torch.Tensor:
    return r.transpose(*dims)


def sum_back(r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A broadcast copies each value to many places: each copy's relevance returns to it."""
    return r.sum_to_size(x.shape)


def repeat_back(r: torch.Tensor, x: torch.Tensor, *, repeats: tuple[int, ...]) -> torch.Tensor:
    """``x.repeat(repeats)`` tiles x: every tile's relevance returns to the value it copies."""
    lead = len(repeats) - x.dim()
    shape = [n for k, rep in enumerate(repeats) for n in (rep, (x.shape[k - lead] if k >= lead else 1))]
    return r.reshape(shape).sum(tuple(range(0, 2 * len(repeats), 2))).reshape(x.shape)


def slice_back(r: torch.Tensor, x: torch.Tensor, *, dim: int, start, end, step: int) -> torch.Tensor:
    return aten.slice_backward(r, list(x.shape), dim, start if start is not None else 0,
                               end if end is not None else x.shape[dim], step)


def select_back(r: torch.Tensor, x: torch.Tensor, *, dim: int, index: int) -> torch.Tensor:
    return aten.select_backward(r, list(x.shape), dim, index)


def index_back(r: torch.Tensor, x: torch.Tensor, *indices: torch.Tensor, present: tuple[bool, ...]) -> torch.Tensor:
    """A gather may read a value several times: all its readers' relevance returns to it (accumulated)."""
    it = iter(indices)
    full = [next(it) if here else None for here in present]
    return aten.index_put(torch.zeros_like(x), full, r, True)   # the ATen op takes None for unindexed dims


def roll_back(r: torch.Tensor, x: torch.Tensor, *, shifts: tuple[int, ...], dims: tuple[int, ...]) -> torch.Tensor:
    return r.roll([-s for s in shifts], list(dims)) if dims else r.flatten().roll(-shifts[0]).view(r.shape)


def flip_back(r: torch.Tensor, x: torch.Tensor, *, dims: tuple[int, ...]) -> torch.Tensor:
    return r.flip(list(dims))


def pixel_shuffle_back(r: torch.Tensor, x: torch.Tensor, *, factor: int) -> torch.Tensor:
    return F.pixel_unshuffle(r, factor)


def scatter_back(r: torch.Tensor, base: torch.Tensor, src: torch.Tensor, *, dim: int, start=None, end=None,
                 step: int = 1, index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``slice_scatter`` / ``select_scatter`` (a write into a region of ``base``): the region's relevance to the
    written ``src``, the rest to ``base``."""
    region = (slice(None),) * (dim % r.dim()) + ((index,) if index is not None else (slice(start, end, step),))
    to_base = r.clone()
    to_base[region] = 0
    return to_base, r[region]


def split_stack(r: torch.Tensor, *inputs: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    return r.unbind(dim)


def gate_relevance(r: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """All of a gated product's relevance to its signal (summed back where the signal was broadcast)."""
    return r.sum_to_size(signal.shape)


def _z_share(r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """r / out with 0/0 := 0: the z-rule's per-output factor for a product without bias."""
    return divide(r, out, "none", 0.0)


def frozen_matmul(r, a, b, out, *, frozen: int) -> torch.Tensor:
    """O = A B with one factor frozen (an attention matrix, ≥ 0): the z-rule of the linear map on the other
    factor. An output whose contributions are all zero sends its relevance in proportion to the frozen weights
    alone (as z⁺'s fallback spreads over a window), so nothing is lost."""
    s = _z_share(r, out)
    relevance = b * (a.transpose(-1, -2) @ s) if frozen == 0 else a * (s @ b.transpose(-1, -2))
    if may_be_zero(out):   # eager code skips the spread's matmul where no output is zero (nearly always)
        orphans = torch.where(out.abs() < torch.finfo(out.dtype).tiny, r, 0.0)
        if frozen == 0:
            relevance = relevance + a.transpose(-1, -2) @ divide(orphans, a.sum(-1, keepdim=True), "none", 0.0)
        else:
            relevance = relevance + divide(orphans, b.sum(-2, keepdim=True), "none", 0.0) @ b.transpose(-1, -2)
    return relevance.sum_to_size(b.shape if frozen == 0 else a.shape)


def matmul_product(r, a, b, out) -> tuple[torch.Tensor, torch.Tensor]:
    """O = A B of two signals: the z-rule on each output's sum of products, then half to each factor."""
    s = 0.5 * _z_share(r, out)
    return (a * (s @ b.transpose(-1, -2)).sum_to_size(a.shape),
            b * (a.transpose(-1, -2) @ s).sum_to_size(b.shape))


def product_relevance(r, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """y = a ⊙ b of two signals: half of each output's relevance to each factor."""
    half = 0.5 * r
    return half.sum_to_size(a.shape), half.sum_to_size(b.shape)


def attention_weights(q, k, mask, *, is_causal: bool, scale) -> tuple[torch.Tensor, float]:
    """(softmax(q kᵀ·scale + mask), scale) of ``scaled_dot_product_attention``, its default scale resolved."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-1, -2)) * scale
    if is_causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(-1), scale


def attention_relevance(r, q, k, v, mask, out, *, is_causal: bool, scale) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v with the attention weights frozen: the z-rule of v ↦ A v."""
    weights, _ = attention_weights(q, k, mask, is_causal=is_causal, scale=scale)
    return frozen_matmul(r, weights, v, out, frozen=0)


def split_cat(r: torch.Tensor, *inputs: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    return torch.split(r, [x.shape[dim] for x in inputs], dim)


def pad_mask(x: torch.Tensor, *, pad: tuple[int, ...]) -> torch.Tensor:
    """1 where ``F.pad(x, pad)`` holds a value of x, 0 where it holds padding (one sample, for broadcasting)."""
    return F.pad(torch.ones_like(x[:1]), list(pad))


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
