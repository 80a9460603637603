"""The pieces the rule kernels are built from: a linear map's contributions split by sign, the relevance through
one sign part (z, the division by it, the transposed map, times the input), and an even spread over a window.
The user-facing rules (``lrpc.rules``) and the z⁺ fallback (``lrpc.zplus_fallback``) compose them."""
from __future__ import annotations

import torch

from .kernels import in_place, owned_times
from .stabilizers import divide, may_be_zero

Tensor = torch.Tensor


def times_input(c: Tensor, x: Tensor, weighted: bool) -> Tensor:
    """c ⊙ x for c = a map's transpose: in place when c is fresh (a weighted map's; a sum's is a view)."""
    return owned_times(c, x) if weighted else x * c


def batch_like(x: Tensor, batch: int) -> Tensor:
    """``x`` (batch ``batch``, or 1 for an input shared by the batch: an all-ones input, or one image whose
    relevance is conditioned K ways by ``lrpc.crp``) as a map's ``like`` argument."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch != 1 else x


def _divide_own(r: Tensor, z: Tensor, stab: str, eps: float, zero: Tensor | None) -> Tensor:
    """``divide(r, z, stab, eps)`` for a z the kernel owns, computed in z's storage outside autograd (one pass
    instead of up to six); ``zero`` is the mask of z numerically zero (|z| below the smallest normal number, where r / z
    would overflow), None where no z is."""
    if stab == "positive":   # z > 0 everywhere: nothing to stabilise or guard
        return torch.div(r, z, out=z) if in_place() and z.shape == r.shape else r / z
    if not in_place() or stab not in ("add", "none"):
        return divide(r, z, stab, eps)
    has_zero = stab == "none" and zero is not None
    if stab == "add":
        z.add_(eps)
    elif has_zero:
        z.masked_fill_(zero, 1.0)
    s = torch.div(r, z, out=z) if z.shape == r.shape else r / z
    return s.masked_fill_(zero, 0.0) if has_zero else s  # 0/0 := 0


def contribution_part(m, args, r, terms, bias, eps, stab, *, nonneg_z=False, zero_mask=False, z_positive=False):
    """Relevance through one sign part: terms are (input part, weight part) pairs whose products share a sign.
    An input part may have batch size 1 (an all-ones input): z then broadcasts over the batch.
    Returns the relevance and, with ``zero_mask``, where the part's unstabilised denominator z is zero (None
    when nowhere).
    ``nonneg_z``: every contribution is >= 0 (z⁺'s positive part), so the sign stabiliser is z + eps;
    ``z_positive``: the bias holds the stabiliser, so z > 0 and r / z is the whole division."""
    merged = _merge_sign_parts(m, args, terms)
    if merged is not None:
        terms = merged
    z = None
    for x, w in terms:
        zx = m.forward(x, w, bias, args)
        z, bias = (zx if z is None else z + zx), None
    zero = None
    if z_positive:
        stab = "positive"
    else:
        if stab in ("sign", "add") and eps == 0:
            stab = "none"   # no shift at all is LRP-0, 0/0 := 0 (as ``divide`` has it)
        if zero_mask or stab == "none":   # below the smallest normal number r / z overflows: zero
            tiny = torch.finfo(z.dtype).tiny
            zero = ((z < tiny) if nonneg_z else (z.abs() < tiny)) if may_be_zero(z) else None
    if nonneg_z and stab == "sign":
        stab = "add"  # sign(z) = +1 on z >= 0: the same value without the where
    s = _divide_own(r, z, stab, eps, zero)
    out = None
    for x, w in terms:
        rx = times_input(m.transpose(s, batch_like(x, s.shape[0]), w, args), x, m.weighted)
        out = rx if out is None else out + rx
    if merged is not None:   # the two sign parts' relevance, side by side in the channels: added (in their layout)
        out = out[:, :out.shape[1] // 2] + out[:, out.shape[1] // 2:]
    return out, zero


FEW_CHANNELS = 4


def _merge_sign_parts(m, args, terms):
    """Two sign parts of an ungrouped conv on a signed input with at most ``FEW_CHANNELS`` channels (an image:
    the first layer) as ONE part: the inputs side by side in the channels, the weights likewise. oneDNN runs a
    conv with that few input (and its transpose with that few output) channels far below its peak, so one conv
    over both parts costs about what one part alone does: on ResNet-50's stem, z 2.5 → 1.3 and the two
    transposes 4.1 → 2.3 forward convs of that layer. None where this does not apply."""
    if m.name != "conv" or len(terms) != 2 or args[3] != 1:
        return None
    (x0, w0), (x1, w1) = terms
    if x0.shape != x1.shape or x0.shape[1] > FEW_CHANNELS:
        return None
    return [(torch.cat((x0, x1), 1), torch.cat((w0, w1), 1))]


def uniform_spread(m, args, r, a, taps, stab, eps, valid=None):
    """r / stab(z) through the transpose of a conv or linear layer with all-ones weights, z that layer's output
    on an all-ones input (``valid``: 1 on real positions, 0 on an explicit zero pad, as input instead): every
    input of a window gets an even share. z is the same for all output channels (in-channels per group × valid
    taps of the window) and every input of a group receives the same sum, so the map runs on ONE channel — r
    summed over each group's output channels — instead of as wide as the layer (ResNet-50's first conv: that
    transpose costs 5x its forward). ``taps``: all-ones weights [1, 1, *kernel] ([1, 1] for a linear layer)."""
    if m.name == "linear":   # every input feature feeds every output: z = in_features
        s = divide(r.sum(-1, keepdim=True), r.new_full((), a.shape[-1]), stab, eps)
        return torch.empty_like(a).copy_(s.expand_as(a))
    groups, one_channel = args[3], (*args[:3], 1)
    batch, channels, *space = a.shape
    ones = torch.ones_like(a[:1, :1]) if valid is None else valid[:, :1]
    z = m.forward(ones, taps, None, one_channel) * (channels // groups)
    per_group = r.unflatten(1, (groups, -1)).sum(2).flatten(0, 1).unsqueeze(1)   # [B·groups, 1, *out]
    spread = m.transpose(divide(per_group, z, stab, eps), a[:1, :1].expand(len(per_group), 1, *space), taps,
                         one_channel)
    spread = spread if valid is None else spread * valid[:, :1]
    relevance = torch.empty_like(a)
    relevance.unflatten(1, (groups, -1)).copy_(spread.view(batch, groups, 1, *space))
    return relevance


def positive_stabilizer(m, eps: float, stab: str, eps_in_bias: bool) -> tuple[float, str, bool]:
    """(eps, stab, z_positive) for the positive part of αβ / z⁺. With ``eps_in_bias`` the compile-time b⁺ of a
    conv or linear layer already holds ε — the layer adds it in its own kernel, one memory pass fewer per
    layer — so z > 0 everywhere and the division needs no stabiliser and no 0/0 guard."""
    if eps_in_bias and m.weighted:
        return 0.0, "none", True
    return eps, stab, False


def sign_terms(m, a, nonneg, w_pos, w_neg):
    """(positive, negative) contributions as (input part, weight part) pairs: a⁺w⁺ + a⁻w⁻ and a⁺w⁻ + a⁻w⁺."""
    a_pos = a if nonneg else a.clamp(min=0)
    a_neg = None if nonneg else a.clamp(max=0)
    if m.weighted:
        return ([(a_pos, w_pos)] + ([] if nonneg else [(a_neg, w_neg)]),
                [(a_pos, w_neg)] + ([] if nonneg else [(a_neg, w_pos)]))
    return [(a_pos, None)], ([] if nonneg else [(a_neg, None)])   # the implicit weights of a pool are >= 0
