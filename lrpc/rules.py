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

import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Sequence

import torch

from .contributions import (batch_like, contribution_part, positive_stabilizer, sign_terms, times_input,
                            uniform_spread)
from .errors import LrpcError
from .linear_maps import LINEAR_MAPS
from .stabilizers import MODES, divide
from .zplus_fallback import with_orphans

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
    return times_input(m.transpose(s, batch_like(a, s.shape[0]), weight, args), a, m.weighted)


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
def alpha_beta_kernel(a, out, r, w_pos, w_neg, b_pos, b_neg, *, map, args, nonneg, alpha, beta, eps, stab,
                      ones_input, fallback, eps_in_bias, valid=None):
    m = LINEAR_MAPS[map]
    if ones_input:  # one all-ones sample stands for the batch: z is the same for every sample
        a, nonneg = torch.ones_like(a[:1]), True
    positive, negative = sign_terms(m, a, nonneg, w_pos, w_neg)
    pos_eps, pos_stab, z_positive = positive_stabilizer(m, eps, stab, eps_in_bias)
    relevance, zero_pos = contribution_part(m, args, r, positive, b_pos, pos_eps, pos_stab, nonneg_z=True,
                                             zero_mask=fallback, z_positive=z_positive)
    if fallback and zero_pos is not None:
        # an output with relevance but no positive contribution would lose it under z⁺: route it through its
        # negative contributions, and where the input window is all zero, evenly over the window
        relevance = with_orphans(relevance, r * zero_pos, a, w_pos, w_neg, valid, map=map, args=args,
                                 nonneg=nonneg, eps=eps, stab=stab)
    if alpha != 1.0:
        relevance = alpha * relevance
    if beta != 0.0 and negative:
        relevance = relevance - beta * contribution_part(m, args, r, negative, b_neg, eps, stab)[0]
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
        return contribution_part(m, args, r, [(a, w_up)], b_up, eps, stab)[0]
    # zennit's generalisation: outputs with z > 0 use (w + γw⁺) on a⁺ and (w + γw⁻) on a⁻, outputs with z < 0
    # the other way round; an output with z == 0 passes nothing.
    a_pos = a if nonneg else a.clamp(min=0)
    a_neg = None if nonneg else a.clamp(max=0)
    r_up = r * (out > 0)
    r_down = r * (out < 0)
    up = [(a_pos, w_up)] + ([] if nonneg else [(a_neg, w_down)])
    down = [(a_pos, w_down)] + ([] if nonneg else [(a_neg, w_up)])
    return (contribution_part(m, args, r_up, up, b_up, eps, stab)[0]
            + contribution_part(m, args, r_down, down, b_down, eps, stab)[0])


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
    return m.transpose(s, batch_like(a, s.shape[0]), weight, args)


def flat_kernel(a, out, r, weight, bias, *, map, args, nonneg, eps, stab):
    """Flat: an even share for every input of an output's window; on conv and linear layers on one channel
    (``uniform_spread``), on pools through their own map."""
    m = LINEAR_MAPS[map]
    if map not in ("conv", "linear"):
        return uniform_kernel(a, out, r, weight, bias, map=map, args=args, nonneg=nonneg, eps=eps, stab=stab)
    return uniform_spread(m, args, r, a, weight[:1, :1], stab, eps)


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

