"""Rules as sums of products, so a layer's relevance can be split by (lower channel, upper channel).

Every rule kernel of ``lrpc.rules`` computes its message to the layer input as

    R_in = Σ_parts Σ_terms coef · x ⊙ f_ρᵀ(R ⊙ g),    g = 1 / stab(z_part)  (zero where the part sends nothing)

with ``x`` the layer input (or its positive/negative part, a box bound, ones) and ``ρ(W)`` the term's weight.
The kernels return only R_in; ``decompose`` reads the same constants and keyword arguments the generated
module passes to the kernel (``Probe.kernel_call``) and returns the parts, so that

- ``flows``: F[c, d] = Σ coef · Σ_k ρ(W)[d, c, k] · G[d, c, k] with G = conv2d_weight(x, s), s = R ⊙ g — all
  flows of a layer in one weight-gradient call per term (docs/paths.md);
- ``path_messages``: the message one upper channel sends to one lower channel, batched over paths as a grouped
  transposed convolution, with no other channel computed.

tests/test_paths_flows.py checks ``message`` against every kernel, so a kernel change that is not mirrored here
fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rules
from ..contributions import positive_stabilizer
from ..errors import LrpcError
from ..linear_maps import LINEAR_MAPS
from ..stabilizers import divide
from .probe import KernelCall

Tensor = torch.Tensor
aten = torch.ops.aten


@dataclass(frozen=True)
class Term:
    coef: float
    x: Tensor          # what the message is multiplied by, shaped like the layer input
    weight: Tensor     # ρ(W) of this term


@dataclass(frozen=True)
class Part:
    g: Tensor          # 1 / stab(z) of this part, shaped like the layer output
    terms: tuple[Term, ...]


def _part(m, args, pairs, bias, stab, eps, coef=1.0, gate=None) -> tuple[Part, Tensor]:
    """One normalised group of terms: z = Σ forward(x, w) (+ bias once), g = 1 / stab(z). Returns z too."""
    z = None
    for x, w in pairs:
        zx = m.forward(x, w, bias, args)
        z, bias = (zx if z is None else z + zx), None
    g = divide(torch.ones_like(z), z, stab, eps)
    if gate is not None:
        g = g * gate
    return Part(g, tuple(Term(coef, x, w) for x, w in pairs)), z


def _signed(a, nonneg):
    return (a, None) if nonneg else (a.clamp(min=0), a.clamp(max=0))


def _epsilon(a, out, consts, kw):
    weight, bias = consts
    m = LINEAR_MAPS[kw["map"]]
    z = out if kw["use_bias"] or bias is None else m.forward(a, weight, None, kw["args"])
    return [Part(divide(torch.ones_like(z), z, kw["stab"], kw["eps"]), (Term(1.0, a, weight),))]


def _alpha_beta(a, out, consts, kw):
    w_pos, w_neg, b_pos, b_neg = consts
    m, args, nonneg = LINEAR_MAPS[kw["map"]], kw["args"], kw["nonneg"]
    if kw["ones_input"]:
        a, nonneg = torch.ones_like(a[:1]).expand_as(a), True
    a_pos, a_neg = _signed(a, nonneg)
    positive = [(a_pos, w_pos)] + ([] if nonneg else [(a_neg, w_neg)])
    negative = [(a_pos, w_neg)] + ([] if nonneg else [(a_neg, w_pos)])
    stab, eps, alpha = kw["stab"], kw["eps"], kw["alpha"]
    pos_eps, pos_stab, _ = positive_stabilizer(m, eps, stab, kw["eps_in_bias"])
    part, z_pos = _part(m, args, positive, b_pos, pos_stab, pos_eps, alpha)
    parts = [part]
    orphans = z_pos == 0
    if kw.get("fallback", False) and bool(orphans.any()):
        # outputs without any positive contribution pass their relevance through the negative ones, and where
        # there are none either (an all-zero window), evenly over the window
        through_negative, z_neg = _part(m, args, negative, None, stab, eps, alpha, gate=orphans.to(z_pos.dtype))
        parts.append(through_negative)
        empty = orphans & (z_neg == 0)
        if bool(empty.any()):
            ones = torch.ones_like(w_pos)
            count = m.forward(torch.ones_like(a[:1]), ones, None, args)
            parts.append(Part(empty.to(z_pos.dtype) / count, (Term(alpha, torch.ones_like(a), ones),)))
    if kw["beta"] != 0.0:
        parts.append(_part(m, args, negative, b_neg, stab, eps, -kw["beta"])[0])
    return parts


def _gamma(a, out, consts, kw):
    weight, w_up, w_down, b_up, b_down = consts
    m, args, stab, eps = LINEAR_MAPS[kw["map"]], kw["args"], kw["stab"], kw["eps"]
    if not kw["generalized"]:
        return [_part(m, args, [(a, w_up)], b_up, stab, eps)[0]]
    a_pos, a_neg = _signed(a, kw["nonneg"])
    up = [(a_pos, w_up)] + ([] if a_neg is None else [(a_neg, w_down)])
    down = [(a_pos, w_down)] + ([] if a_neg is None else [(a_neg, w_up)])
    return [_part(m, args, up, b_up, stab, eps, gate=(out > 0).to(out.dtype))[0],
            _part(m, args, down, b_down, stab, eps, gate=(out < 0).to(out.dtype))[0]]


def _zbox(a, out, consts, kw):
    weight, w_pos, w_neg, low, high = consts
    m, args = LINEAR_MAPS[kw["map"]], kw["args"]
    shape = (1, -1) + (1,) * (a.dim() - 2)
    low, high = low.view(shape).expand_as(a), high.view(shape).expand_as(a)
    z = m.forward(a, weight, None, args) - m.forward(low, w_pos, None, args) - m.forward(high, w_neg, None, args)
    g = divide(torch.ones_like(z), z, kw["stab"], kw["eps"])
    return [Part(g, (Term(1.0, a, weight), Term(-1.0, low, w_pos), Term(-1.0, high, w_neg)))]


def _uniform(a, out, consts, kw):
    weight, bias = consts
    ones = torch.ones_like(a[:1])
    return [_part(LINEAR_MAPS[kw["map"]], kw["args"], [(ones, weight)], bias, kw["stab"], kw["eps"])[0]]


DECOMPOSITIONS = {rules.epsilon_kernel: _epsilon, rules.alpha_beta_kernel: _alpha_beta,
                  rules.gamma_kernel: _gamma, rules.zbox_kernel: _zbox, rules.uniform_kernel: _uniform,
                  rules.flat_kernel: _uniform}


def decompose(call: KernelCall, a: Tensor, out: Tensor, layer: str) -> list[Part]:
    """The parts of ``layer``'s rule at input ``a`` and output ``out`` (batch 1)."""
    handler = DECOMPOSITIONS.get(call.fn)
    if handler is None:
        supported = ", ".join(sorted(fn.__name__ for fn in DECOMPOSITIONS))
        raise LrpcError(f"layer {layer!r}: rule kernel {getattr(call.fn, '__name__', call.fn)} has no channel "
                        f"decomposition for path analysis (supported: {supported})")
    return handler(a, out, call.constants, call.kwargs)


def activation_parts(a: Tensor, out: Tensor, weight: Tensor) -> list[Part]:
    """The plain contributions a ⊙ W to the upper channels' positive outputs: with R = 1 the 'flows' are how much
    each lower channel adds to each active upper channel (activation-based graphs)."""
    return [Part((out > 0).to(out.dtype), (Term(1.0, a, weight),))]


# ------------------------------------------------------------------------------------------------ full layer
def message(parts: list[Part], r: Tensor, map: str, args: tuple) -> Tensor:
    """R_in from the parts — equal to the kernel's output (the check that the decomposition is right)."""
    m = LINEAR_MAPS[map]
    total = None
    for part in parts:
        s = r * part.g
        for t in part.terms:
            value = t.coef * t.x * m.transpose(s, t.x, t.weight, args)
            total = value if total is None else total + value
    return total


def flows(parts: list[Part], r: Tensor, map: str, args: tuple, channels: int,
          transfer: Tensor | None = None) -> Tensor:
    """F [channels, D]: relevance upper channel d sends to lower channel c, summed over positions. ``transfer``
    (shaped like the layer input) weights each input position by the share of its relevance that reaches the
    producer (1 when the region in between conserves relevance)."""
    total = None
    for part in parts:
        s = r * part.g
        for t in part.terms:
            x = t.x if transfer is None else t.x * transfer
            f = _conv_flows(s, x, t.weight, args) if map == "conv" else _linear_flows(s, x, t.weight, channels)
            total = t.coef * f if total is None else total + t.coef * f
    return total.T


def _conv_flows(s, x, w, args):
    stride, padding, dilation, groups = args
    grad = aten.convolution_backward(s, x, w, None, stride, padding, dilation, False, [0] * len(stride), groups,
                                     [False, True, False])[1]
    return (w * grad).flatten(2).sum(2)                                   # [D, C]


def _linear_flows(s, x, w, channels):
    """Σ over each channel's block of inputs of w ⊙ x, a few rows of w at a time (no weight-sized temporary)."""
    d = w.shape[0]
    x_blocks = x.reshape(1, channels, -1)
    out = torch.empty(d, channels, dtype=w.dtype)
    step = max(1, (1 << 22) // w.shape[1])
    for first in range(0, d, step):
        out[first:first + step] = (w[first:first + step].view(-1, channels, x_blocks.shape[2]) * x_blocks).sum(2)
    return out * s.reshape(d, 1)


# --------------------------------------------------------------------------------------------- single paths
def path_messages(parts: list[Part], r: Tensor, upper: Tensor, lower: Tensor | None, map: str, args: tuple,
                  channels: int) -> Tensor:
    """Messages of B paths at once: path b carries ``r[b]`` (its single upper channel ``upper[b]``, shaped
    [B, 1, *spatial] for a conv, [B, 1] for a linear layer) to lower channel ``lower[b]``.

    Returns [B, 1, *input spatial] (conv) or [B, group] (linear: the channel's block of the flattened input);
    with ``lower=None`` every lower channel receives: [B, C, *input spatial] or [B, C * group].
    """
    total = None
    for part in parts:
        s = r * part.g[0, upper].unsqueeze(1)
        for t in part.terms:
            if map == "conv":
                value = _conv_path(s, t.x, t.weight, upper, lower, args)
            else:
                value = _linear_path(s, t.x, t.weight, upper, lower, channels)
            total = t.coef * value if total is None else total + t.coef * value
    return total


def _conv_path(s, x, w, upper, lower, args):
    stride, padding, dilation, _ = args
    b = s.shape[0]
    if lower is None:
        x_sel, w_sel = x.expand(b, *x.shape[1:]), w[upper]                   # [B, C, ...], [B, C, k...]
    else:
        x_sel, w_sel = x[0, lower].unsqueeze(1), w[upper, lower].unsqueeze(1)  # [B, 1, ...], [B, 1, k...]
    like = x_sel.reshape(1, -1, *x_sel.shape[2:])
    spread = aten.convolution_backward(s.reshape(1, b, *s.shape[2:]), like, w_sel, None, stride, padding, dilation,
                                       False, [0] * len(stride), b, [True, False, False])[0]
    return x_sel * spread.reshape(x_sel.shape)


def _linear_path(s, x, w, upper, lower, channels):
    x_groups = x.reshape(channels, -1)
    w_groups = w.view(w.shape[0], channels, -1)
    if lower is None:
        return (x_groups * w_groups[upper] * s.unsqueeze(2)).reshape(s.shape[0], -1)
    return x_groups[lower] * w_groups[upper, lower] * s
