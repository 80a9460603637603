"""LRP rules for linear maps (conv, linear, pools, means) as small objects (docs/rules.md).

A rule has two halves:
- ``constants(weight, bias)``: the modified parameters (W⁺, W⁻, w + γw⁺, …), computed ONCE at compile time and
  stored as buffers of the generated module — the user's parameters are never touched;
- ``kernel``: a module-level function the generated code calls with the layer input ``a``, the forward output
  ``out``, the upper relevance ``r`` and those constants. Kernels are plain tensor code, so the whole relevance
  pass is visible to ``torch.compile``.

Every kernel takes ``map`` (a key of ``LINEAR_MAPS``), ``args`` (the map's plain arguments) and ``nonneg``
(the compiler proved ``a >= 0``, so the a⁻ terms vanish and are skipped). Which rule each layer gets is a rule
set's choice: ``lrpc.rule_set.Rules``.
"""
from __future__ import annotations

import ast
import functools
import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Sequence

import torch

from .errors import LrpcError
from .kernels import in_place
from .linear_maps import LINEAR_MAPS
from .stabilizers import MODES, divide, may_be_zero

Tensor = torch.Tensor


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


class _RenamedStabilizer(type):
    """Rules take ``stabilizer=`` as ``stabilizer_mode=`` for one release (renamed: zennit and lrpc's presets
    call the ε amount ``stabilizer``; here it is the mode, lrpc.stabilizers.MODES)."""

    def __call__(cls, *args, **kwargs):
        if "stabilizer" in kwargs and "stabilizer_mode" in getattr(cls, "__dataclass_fields__", {}):
            if "stabilizer_mode" in kwargs:
                raise TypeError(f"{cls.__name__}: pass stabilizer_mode= only (stabilizer= is its old name)")
            warnings.warn(f"{cls.__name__}(stabilizer=...) is deprecated: use stabilizer_mode=... (the mode: "
                          f"one of {MODES}); stabilizer= will be removed in the next release",
                          DeprecationWarning, stacklevel=2)
            kwargs["stabilizer_mode"] = kwargs.pop("stabilizer")
        return super().__call__(*args, **kwargs)


class Rule(metaclass=_RenamedStabilizer):
    """Base of the rules for linear maps. Subclasses are frozen dataclasses holding their parameters."""

    name: ClassVar[str]
    kernel: ClassVar[Callable[..., Tensor]]
    needs_weights: ClassVar[bool] = False
    # whether the kernel reads the layer's forward output ``out``; when not, the generated module passes None,
    # so the output is freed as soon as the forward is done with it (a conv's output lives on only for its BN)
    reads_output: ClassVar[bool] = True

    def constants(self, weight: Tensor | None, bias: Tensor | None, *,
                  nonneg_input: bool = False) -> dict[str, Tensor | None]:
        """The kernel's constants by name; ``nonneg_input``: the compiler proved the layer input >= 0, so a
        constant only negative inputs read may be None (VGG-16's W⁻ alone is 550 MB)."""
        raise NotImplementedError

    def kernel_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        params = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
        return f"{self.name}({params})"

    @property
    def stabilizer(self) -> str:
        """Deprecated name of ``stabilizer_mode``."""
        warnings.warn(f"{type(self).__name__}.stabilizer is deprecated: read stabilizer_mode; stabilizer will be "
                      "removed in the next release", DeprecationWarning, stacklevel=2)
        return self.stabilizer_mode

    def __post_init__(self):
        mode = getattr(self, "stabilizer_mode", "none")
        if mode not in MODES:
            raise LrpcError(f"{self.name}: unknown stabilizer_mode {mode!r}; choose one of {MODES}")
        if getattr(self, "epsilon", 0.0) < 0:
            raise LrpcError(f"{self.name}: epsilon must be >= 0, got {self.epsilon}")


# ----------------------------------------------------------------------------------------------- epsilon / LRP-0
def epsilon_kernel(a, out, r, weight, bias, *, map, args, nonneg, eps, stab, use_bias):
    m = LINEAR_MAPS[map]
    z = out if use_bias or bias is None else m.forward(a, weight, None, args)
    s = divide(r, z, stab, eps)
    return _times_input(m.transpose(s, _batch_like(a, s.shape[0]), weight, args), a, m.weighted)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε: R_i = a_i Σ_j w_ij R_j / stab(z_j), z_j = Σ_i a_i w_ij (+ b_j). ``stabilizer_mode`` says how ε
    enters stab (``lrpc.stabilizers``); epsilon=0 with stabilizer_mode 'none' is LRP-0."""

    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    bias: bool = True
    name: ClassVar[str] = "epsilon"
    kernel: ClassVar = staticmethod(epsilon_kernel)

    def constants(self, weight, bias, *, nonneg_input=False):
        return {"weight": weight, "bias": bias}

    def kernel_kwargs(self):
        return {"eps": float(self.epsilon), "stab": self.stabilizer_mode, "use_bias": self.bias}


@dataclass(frozen=True)
class Zero(Epsilon):
    """LRP-0: the plain z-rule, 0/0 := 0. On a bias-free ReLU network it equals gradient × input."""

    epsilon: float = 0.0
    stabilizer_mode: str = "none"
    name: ClassVar[str] = "zero"


# -------------------------------------------------------------------------------------------- alpha-beta / z-plus
def _times_input(c: Tensor, x: Tensor, weighted: bool) -> Tensor:
    """c ⊙ x for c = a map's transpose: in place when c is fresh (a weighted map's; a sum's is a view)."""
    return c.mul_(x) if weighted and in_place() else x * c


def _batch_like(x: Tensor, batch: int) -> Tensor:
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


def _contribution_part(m, args, r, terms, bias, eps, stab, *, nonneg_z=False, zero_mask=False, z_positive=False):
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
        rx = _times_input(m.transpose(s, _batch_like(x, s.shape[0]), w, args), x, m.weighted)
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


def _orphan_relevance(m, args, nonneg, eps, stab, empty, a, w_pos, w_neg, valid=None):
    """The z⁺ fallback for outputs without positive evidence (``empty``: their relevance, zero elsewhere): their
    relevance goes through their negative contributions, and where the window is all zero, evenly over it —
    over its real inputs only when ``valid`` (1 on real positions, 0 on an explicit zero pad) is given."""
    negative = _sign_terms(m, a, nonneg, w_pos, w_neg)[1]
    out = None
    if negative:
        out, zero_neg = _contribution_part(m, args, empty, negative, None, eps, stab, zero_mask=True)
        if zero_neg is None:
            return out
        empty = empty * zero_neg
        if not _nonzero(empty):
            return out
    like = _batch_like(a, empty.shape[0])
    if m.name in ("conv", "linear"):
        spread = _uniform_spread(m, args, empty, like, torch.ones_like(w_pos[:1, :1]), "none", 0.0, valid)
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
    outputs without positive evidence (zero elsewhere), ``args`` the map's arguments as their ``repr``.

    One opaque op, so that a compiled graph stays ONE graph and still runs the fallback only where some output
    with relevance is an orphan, as eager code does: written branch-free, the fallback costs a W⁻ map and its
    transpose in every layer (ResNet-50 under ``default``: 7.0 forward passes against 3.9 eagerly), and inductor
    on CPU rejects ``torch.cond``'s branches under its channels-last layout optimisation. Any layout will do
    (``flexible_layout``), so inductor passes its own without copies."""
    if _nonzero(empty):
        m = LINEAR_MAPS[map]
        relevance.add_(_orphan_relevance(m, _map_args(args), nonneg, eps, stab, empty, a, w_pos, w_neg, valid))


@add_zplus_orphans_.register_fake
def _add_zplus_orphans_shape(relevance, empty, a, w_pos, w_neg, valid, map, args, nonneg, eps, stab) -> None:
    return None


def _nonzero(t: Tensor) -> bool:
    """Whether some entry of ``t`` is not zero (NaN included), in one read-only pass over its storage order (a
    compiled graph hands over channels-last tensors, which a reduction would first copy; ``any`` on a float
    tensor casts it to bool first: another pass)."""
    storage_order = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d))).reshape(-1)
    low, high = torch.aminmax(storage_order)
    return not bool((low == 0) & (high == 0))


@functools.lru_cache(maxsize=None)
def _map_args(text: str) -> tuple:
    return ast.literal_eval(text)


def _uniform_spread(m, args, r, a, taps, stab, eps, valid=None):
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


def _sign_terms(m, a, nonneg, w_pos, w_neg):
    """(positive, negative) contributions as (input part, weight part) pairs: a⁺w⁺ + a⁻w⁻ and a⁺w⁻ + a⁻w⁺."""
    a_pos = a if nonneg else a.clamp(min=0)
    a_neg = None if nonneg else a.clamp(max=0)
    if m.weighted:
        return ([(a_pos, w_pos)] + ([] if nonneg else [(a_neg, w_neg)]),
                [(a_pos, w_neg)] + ([] if nonneg else [(a_neg, w_pos)]))
    return [(a_pos, None)], ([] if nonneg else [(a_neg, None)])   # the implicit weights of a pool are >= 0


def alpha_beta_kernel(a, out, r, w_pos, w_neg, b_pos, b_neg, *, map, args, nonneg, alpha, beta, eps, stab,
                      ones_input, fallback, eps_in_bias, valid=None):
    m = LINEAR_MAPS[map]
    if ones_input:  # one all-ones sample stands for the batch: z is the same for every sample
        a, nonneg = torch.ones_like(a[:1]), True
    positive, negative = _sign_terms(m, a, nonneg, w_pos, w_neg)
    pos_eps, pos_stab, z_positive = positive_stabilizer(m, eps, stab, eps_in_bias)
    relevance, zero_pos = _contribution_part(m, args, r, positive, b_pos, pos_eps, pos_stab, nonneg_z=True,
                                             zero_mask=fallback, z_positive=z_positive)
    if fallback and zero_pos is not None:
        # an output with relevance but no positive contribution would lose it under z⁺: route it through its
        # negative contributions, and where the input window is all zero, evenly over the window
        empty = r * zero_pos
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():   # autograd records: plain tensor code
            if _nonzero(empty):
                relevance = relevance + _orphan_relevance(m, args, nonneg, eps, stab, empty, a, w_pos, w_neg, valid)
        else:
            add_zplus_orphans_(relevance, empty, a, w_pos, w_neg, valid, map, repr(args), nonneg, eps, stab)
    if alpha != 1.0:
        relevance = alpha * relevance
    if beta != 0.0 and negative:
        relevance = relevance - beta * _contribution_part(m, args, r, negative, b_neg, eps, stab)[0]
    return relevance


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ (α − β = 1) in the form that also holds for negative inputs: positive contributions are
    a⁺w⁺ + a⁻w⁻, negative ones a⁺w⁻ + a⁻w⁺ (zennit's convention; ``bias=True`` adds b⁺ / b⁻ to the parts)."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    bias: bool = True
    ones_input: bool = False
    fallback: bool = False
    name: ClassVar[str] = "alpha_beta"
    kernel: ClassVar = staticmethod(alpha_beta_kernel)
    reads_output: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise LrpcError(f"{self.name}: need alpha >= 0, beta >= 0 and alpha - beta = 1, got "
                            f"alpha={self.alpha}, beta={self.beta}")
        if self.fallback and self.beta != 0.0:
            raise LrpcError(f"{self.name}: fallback=True is for z+ (beta=0) only")

    @property
    def eps_in_bias(self) -> bool:
        """Whether b⁺ carries ε (see ``positive_stabilizer``); the fallback reads the unstabilised z, so not then."""
        return self.epsilon > 0 and self.stabilizer_mode in ("sign", "add") and not self.fallback

    def constants(self, weight, bias, *, nonneg_input=False):
        bias = bias if self.bias else None
        b_pos = _pos(bias)
        if self.eps_in_bias and weight is not None:   # sign(z⁺) = +1: both stabilisers add ε
            b_pos = (weight.new_zeros(weight.shape[0]) if b_pos is None else b_pos) + self.epsilon
        negative_read = not (nonneg_input or self.ones_input) or self.beta != 0 or self.fallback
        return {"w_pos": _pos(weight), "w_neg": _neg(weight) if negative_read else None, "b_pos": b_pos,
                "b_neg": _neg(bias) if self.beta else None}

    def kernel_kwargs(self):
        return {"alpha": float(self.alpha), "beta": float(self.beta), "eps": float(self.epsilon),
                "stab": self.stabilizer_mode, "ones_input": self.ones_input, "fallback": self.fallback,
                "eps_in_bias": self.eps_in_bias}


@dataclass(frozen=True)
class ZPlus(AlphaBeta):
    """LRP-z⁺ (= α1β0). ``ones_input=True`` replaces the layer input by ones (the Otsuki et al. first layer);
    ``fallback=True`` sends the relevance of an output with no positive contribution through its negative ones
    (plain z⁺ loses it) and that of an output whose input window is all zero evenly over the window, which makes
    the rule conserve exactly."""

    alpha: float = 1.0
    beta: float = 0.0
    name: ClassVar[str] = "zplus"


# --------------------------------------------------------------------------------------------------------- gamma
def gamma_kernel(a, out, r, weight, w_up, w_down, b_up, b_down, *, map, args, nonneg, eps, stab, generalized):
    m = LINEAR_MAPS[map]
    if not generalized:  # Montavon et al.: rho(w) = w + γw⁺ for inputs >= 0
        return _contribution_part(m, args, r, [(a, w_up)], b_up, eps, stab)[0]
    # zennit's generalisation: outputs with z > 0 use (w + γw⁺) on a⁺ and (w + γw⁻) on a⁻, outputs with z < 0
    # the other way round; an output with z == 0 passes nothing.
    a_pos = a if nonneg else a.clamp(min=0)
    a_neg = None if nonneg else a.clamp(max=0)
    r_up = r * (out > 0)
    r_down = r * (out < 0)
    up = [(a_pos, w_up)] + ([] if nonneg else [(a_neg, w_down)])
    down = [(a_pos, w_down)] + ([] if nonneg else [(a_neg, w_up)])
    return (_contribution_part(m, args, r_up, up, b_up, eps, stab)[0]
            + _contribution_part(m, args, r_down, down, b_down, eps, stab)[0])


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-γ: ρ(w) = w + γw⁺. ``generalized=True`` is zennit's sign-aware form, ``False`` Montavon's original."""

    gamma: float = 0.25
    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    bias: bool = True
    generalized: bool = True
    name: ClassVar[str] = "gamma"
    kernel: ClassVar = staticmethod(gamma_kernel)
    needs_weights: ClassVar[bool] = True

    def constants(self, weight, bias, *, nonneg_input=False):
        g = self.gamma
        bias = bias if self.bias else None
        return {"weight": weight, "w_up": weight + g * weight.clamp(min=0), "w_down": weight + g * weight.clamp(max=0),
                "b_up": None if bias is None else bias + g * bias.clamp(min=0),
                "b_down": None if bias is None else bias + g * bias.clamp(max=0)}

    def kernel_kwargs(self):
        return {"eps": float(self.epsilon), "stab": self.stabilizer_mode, "generalized": self.generalized}


# ---------------------------------------------------------------------------------------------------------- z^B
def zbox_kernel(a, out, r, weight, w_pos, w_neg, low, high, *, map, args, nonneg, eps, stab):
    m = LINEAR_MAPS[map]
    shape = (1, -1) + (1,) * (a.dim() - 2)
    low = low.view(shape).expand_as(a)
    high = high.view(shape).expand_as(a)
    z = m.forward(a, weight, None, args) - m.forward(low, w_pos, None, args) - m.forward(high, w_neg, None, args)
    s = divide(r, z, stab, eps)
    return (a * m.transpose(s, a, weight, args) - low * m.transpose(s, a, w_pos, args)
            - high * m.transpose(s, a, w_neg, args))


@dataclass(frozen=True)
class ZBox(Rule):
    """LRP-z^B for a box-bounded input layer: low/high are scalars or per-channel bounds of the normalised input.
    (Biases cancel out of z^B: b − b⁺ − b⁻ = 0.)"""

    low: float | Sequence[float] = 0.0
    high: float | Sequence[float] = 1.0
    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    name: ClassVar[str] = "zbox"
    kernel: ClassVar = staticmethod(zbox_kernel)
    reads_output: ClassVar[bool] = False
    needs_weights: ClassVar[bool] = True

    def constants(self, weight, bias, *, nonneg_input=False):
        channels = weight.shape[1]  # input channels of a linear layer or an ungrouped conv
        low, high = (torch.as_tensor(t, dtype=weight.dtype).flatten() for t in (self.low, self.high))
        low, high = (t.expand(channels).clone() if t.numel() == 1 else t for t in (low, high))
        if low.numel() != channels or high.numel() != channels:
            raise LrpcError(f"zbox: bounds have {low.numel()}/{high.numel()} values but the layer has "
                            f"{channels} input channels")
        if bool((low > high).any()):
            raise LrpcError(f"zbox: low {low.tolist()} must not exceed high {high.tolist()}")
        return {"weight": weight, "w_pos": weight.clamp(min=0), "w_neg": weight.clamp(max=0), "low": low, "high": high}

    def kernel_kwargs(self):
        return {"eps": float(self.epsilon), "stab": self.stabilizer_mode}



# --------------------------------------------------------------------------------------------------- flat / w²
def uniform_kernel(a, out, r, weight, bias, *, map, args, nonneg, eps, stab):
    """Flat and w²: the input activation is replaced by ones, so relevance spreads by ``weight`` alone."""
    m = LINEAR_MAPS[map]
    ones = torch.ones_like(a[:1])
    z = m.forward(ones, weight, bias, args)
    s = divide(r, z, stab, eps)
    return m.transpose(s, _batch_like(a, s.shape[0]), weight, args)


def flat_kernel(a, out, r, weight, bias, *, map, args, nonneg, eps, stab):
    """Flat: an even share for every input of an output's window; on conv and linear layers on one channel
    (``_uniform_spread``), on pools through their own map."""
    m = LINEAR_MAPS[map]
    if map not in ("conv", "linear"):
        return uniform_kernel(a, out, r, weight, bias, map=map, args=args, nonneg=nonneg, eps=eps, stab=stab)
    return _uniform_spread(m, args, r, a, weight[:1, :1], stab, eps)


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat: every input in the receptive field gets an equal share (weights and inputs set to one, no bias)."""

    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    name: ClassVar[str] = "flat"
    kernel: ClassVar = staticmethod(flat_kernel)
    reads_output: ClassVar[bool] = False

    def constants(self, weight, bias, *, nonneg_input=False):
        return {"weight": None if weight is None else torch.ones_like(weight), "bias": None}

    def kernel_kwargs(self):
        return {"eps": float(self.epsilon), "stab": self.stabilizer_mode}


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w²: shares ∝ w_ij² (zennit squares the bias too when ``bias=True``)."""

    epsilon: float = 1e-6
    stabilizer_mode: str = "sign"
    bias: bool = True
    name: ClassVar[str] = "wsquare"
    kernel: ClassVar = staticmethod(uniform_kernel)
    reads_output: ClassVar[bool] = False
    needs_weights: ClassVar[bool] = True

    def constants(self, weight, bias, *, nonneg_input=False):
        return {"weight": weight.square(), "bias": None if bias is None or not self.bias else bias.square()}

    def kernel_kwargs(self):
        return {"eps": float(self.epsilon), "stab": self.stabilizer_mode}


def pass_kernel(a, out, r, *, map, args, nonneg):
    return r


@dataclass(frozen=True)
class Pass(Rule):
    """Relevance passes unchanged, for a layer whose output has its input's shape (e.g. a depthwise 1x1 conv a
    user wants to treat like BatchNorm). Elementwise ops (ReLU, BatchNorm, dropout) pass by default anyway."""

    name: ClassVar[str] = "pass"
    kernel: ClassVar = staticmethod(pass_kernel)
    reads_output: ClassVar[bool] = False

    def constants(self, weight, bias, *, nonneg_input=False):
        return {}

    def kernel_kwargs(self):
        return {}

