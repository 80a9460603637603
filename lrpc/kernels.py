"""Runtime relevance ops for the structural kinds (reshape, cat, pad, pools, start), called by generated code.

Rules for linear maps live in ``rules.py`` and splitting in ``splitting.py``; everything here moves relevance
without a rule choice, except ``maxpool_relevance`` whose three modes are the documented options.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import windows
from .errors import LrpcError
from .stabilizers import divide, guarded_divide, may_be_zero

aten = torch.ops.aten


def in_place() -> bool:
    """Whether relevance ops may update their own temporaries in place: not while autograd records (path
    analysis differentiates replayed ops), and not while torch.compile traces (inductor plans the buffers
    itself, and dynamo breaks the graph at an ``out=`` into a non-contiguous tensor: ViT's [T, B, E] residual
    splits gave 10 graphs). On CPU a fresh large tensor costs eager code more than the arithmetic on it."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def pick_scores(scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A language model's scores [B, T, V] read at K positions per row ([B, K]): [B·K, V], row-major."""
    rows = torch.arange(scores.shape[0], device=scores.device).repeat_interleave(positions.shape[1])
    return scores[rows, positions.reshape(-1)]


def pick_scores_back(r: torch.Tensor, scores: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Relevance of ``pick_scores`` back onto the scores, one row per explained (row, position): ``scores`` has
    as many rows as ``r`` (the relevance pass repeats a row's activations once per explained position)."""
    out = torch.zeros(r.shape[0], *scores.shape[1:], dtype=r.dtype, device=r.device)
    out[torch.arange(r.shape[0], device=r.device), positions.reshape(-1)] = r
    return out


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
    if target.dim() == 2:   # a contrast (a, b): the start of a minus the start of b
        return start_relevance(logits, target[:, 0], mode=mode) - start_relevance(logits, target[:, 1], mode=mode)
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
    flattened ([B·nW, ...]: outer 1; [L·B, E]: inner 1); ``rows`` is any tensor with one row per sample.
    ``inner=-1``: outer 1 and inner whatever the size holds ([B·T, D] for any sequence length T)."""
    batch = rows.shape[0]
    r = r.movedim(dim, 0)
    if inner < 0:
        return r.reshape(batch, -1).sum(1)
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
    start = 0 if start is None else start
    end = x.shape[dim] if end is None else end
    if r.shape == x.shape:   # the whole dimension (Swin's crop of an unpadded window grid): no zeros to write
        return r
    return aten.slice_backward(r, list(x.shape), dim, start, end, step)


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
    zeros = may_be_zero(out)   # eager code skips the guard and the spread's matmul where no output is zero
    s = guarded_divide(r, out) if zeros else r / out
    relevance = owned_times(a.transpose(-1, -2) @ s, b) if frozen == 0 else owned_times(s @ b.transpose(-1, -2), a)
    if zeros:
        orphans = torch.where(out.abs() < torch.finfo(out.dtype).tiny, r, 0.0)
        if frozen == 0:
            relevance = relevance + a.transpose(-1, -2) @ divide(orphans, a.sum(-1, keepdim=True), "none", 0.0)
        else:
            relevance = relevance + divide(orphans, b.sum(-2, keepdim=True), "none", 0.0) @ b.transpose(-1, -2)
    return relevance.sum_to_size(b.shape if frozen == 0 else a.shape)


def matmul_product(r, a, b, out) -> tuple[torch.Tensor, torch.Tensor]:
    """O = A B of two signals: the z-rule on each output's sum of products, then half to each factor."""
    s = _z_share(r, out)
    s = s.mul_(0.5) if in_place() else 0.5 * s
    return (owned_times((s @ b.transpose(-1, -2)).sum_to_size(a.shape), a),
            owned_times((a.transpose(-1, -2) @ s).sum_to_size(b.shape), b))


def owned_times(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """c ⊙ x for a fresh c the kernel owns: in c's storage where the shapes allow (see ``in_place``)."""
    return c.mul_(x) if in_place() and c.shape == torch.broadcast_shapes(c.shape, x.shape) else c * x


def product_relevance(r, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """y = a ⊙ b of two signals: half of each output's relevance to each factor."""
    half = 0.5 * r
    return half.sum_to_size(a.shape), half.sum_to_size(b.shape)


def attention_weights(q, k, mask, *, is_causal: bool, scale) -> tuple[torch.Tensor, float]:
    """(softmax(q kᵀ·scale + mask), scale) of ``scaled_dot_product_attention``, its default scale resolved. A
    query row whose keys are all masked (a padding row) gets weights 0, as the op's own safe softmax gives it;
    ``k`` has the heads of ``q`` (``group_heads`` repeats grouped-query keys first)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-1, -2)) * scale
    if is_causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    weights = logits.softmax(-1)
    return weights.masked_fill(torch.isneginf(logits).all(-1, keepdim=True), 0.0), scale


def group_heads(q: torch.Tensor, *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Grouped-query attention (``enable_gqa=True``): each key/value head serves ``q``'s heads in groups."""
    groups = q.shape[-3] // kv[0].shape[-3]
    return tuple(t.repeat_interleave(groups, -3) if groups > 1 else t for t in kv)


def ungroup_heads(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The relevance of repeated key/value heads summed back onto the shared head."""
    groups = r.shape[-3] // like.shape[-3]
    return r if groups == 1 else r.unflatten(-3, (like.shape[-3], groups)).sum(-3)


def attention_relevance(r, q, k, v, mask, out, *, is_causal: bool, scale) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v with the attention weights frozen: the z-rule of v ↦ A v."""
    k_heads, v_heads = group_heads(q, k, v)
    weights, _ = attention_weights(q, k_heads, mask, is_causal=is_causal, scale=scale)
    return ungroup_heads(frozen_matmul(r, weights, v_heads, out, frozen=0), v)


def split_cat(r: torch.Tensor, *inputs: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    return torch.split(r, [x.shape[dim] for x in inputs], dim)


def pad_mask(x: torch.Tensor, *, pad: tuple[int, ...]) -> torch.Tensor:
    """1 where ``F.pad(x, pad)`` holds a value of x, 0 where it holds padding (one sample, for broadcasting)."""
    return F.pad(torch.ones_like(x[:1]), list(pad))


def unpad(r: torch.Tensor, *, pad: tuple[int, ...]) -> torch.Tensor:
    if not any(pad):   # a zero pad (Swin pads its windows to a multiple that 224 px already is): no copy
        return r
    return F.pad(r, [-p for p in pad])


def pad_back(r: torch.Tensor, x: torch.Tensor, *, pad: tuple[int, ...], mode: str) -> torch.Tensor:
    """A reflect / replicate / circular pad copies input values to the border: each copy's relevance returns to
    its source. The sources are found by padding the positions 0..n-1 of one sample the same way."""
    positions = torch.arange(x[:1].numel(), dtype=torch.float64, device=x.device).view(x[:1].shape)
    sources = F.pad(positions, list(pad), mode=mode).long().flatten()
    back = r.new_zeros(r.shape[0], x[:1].numel())
    return back.index_add_(1, sources, r.flatten(1)).view(r.shape[0], *x.shape[1:])


def unfold_back(r: torch.Tensor, x: torch.Tensor, *, dim: int, size: int, step: int) -> torch.Tensor:
    """``x.unfold(dim, size, step)``: every window's relevance back to the values it copied, overlaps summed."""
    return aten.unfold_backward(r, list(x.shape), dim, size, step)


def im2col_back(r: torch.Tensor, x: torch.Tensor, *, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """``nn.Unfold``: the patches' relevance back onto the image (col2im, its adjoint); the padding's is dropped."""
    return aten.col2im(r, list(x.shape[-2:]), list(kernel_size), list(dilation), list(padding), list(stride))


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


def maxpool_relevance(a, out, r, *, mode, window, eps, indices=None):
    """Max-pools of every rank, fixed or adaptive ``window`` (``lrpc.windows``). ``winner``: all to each window's
    arg-max (the gradient of max; ``indices``: the arg-max its forward found); ``proportional``: to every input of
    the window in proportion to its activation; ``avg2x2``: the Otsuki et al. stand-in, a 2x2/stride-2 average
    pool (2x2x2 on volumes) used in the relevance pass only (does not conserve where a 2x2 block is all zero but
    its 3x3 window is not)."""
    if mode == "winner":
        if indices is None:
            indices = windows.max_pool(a, **window)[1]
        return windows.unpool(r, a, indices)
    if mode == "avg2x2":
        rank = a.dim() - 2
        window = {"kernel": (2,) * rank, "stride": (2,) * rank, "padding": (0,) * rank}
    z = windows.window_mean(a, **window)
    s = divide(r, z, "add" if mode == "avg2x2" else "none", eps)
    return a * windows.window_mean_transpose(s, a, **window)


def amax_relevance(a, out, r, *, dims, keepdim):
    """Winner-take-all over the reduced dims; tied maxima share equally."""
    if not keepdim:
        for d in sorted(d % a.dim() for d in dims):
            out, r = out.unsqueeze(d), r.unsqueeze(d)
    winners = (a == out).to(a.dtype)
    return winners * r / winners.sum(dims, keepdim=True)
