"""Denominator stabilisers shared by every rule: the choice of convention is explicit, never implied.

- ``sign``: z + eps·sign(z), sign(0) = +1 (zennit's convention)
- ``add``: z + eps regardless of sign (the Otsuki et al. code)
- ``rms``: z + eps·RMS(z) + 1e-9, RMS over all but the batch dimension (Montavon's VGG-16 epsilon)
- ``none``: z itself, with 0/0 defined as 0 (LRP-0); a denormal z counts as 0 (r / z would overflow)
"""
from __future__ import annotations

import torch

MODES = ("sign", "add", "rms", "none")


def divide(r: torch.Tensor, z: torch.Tensor, mode: str, eps: float) -> torch.Tensor:
    """r / stab(z), the one division every rule makes."""
    if mode in ("sign", "add") and eps == 0:  # no shift at all: fall back to LRP-0's 0/0 := 0 instead of NaN
        mode = "none"
    if mode == "sign":
        return r / torch.where(z >= 0, z + eps, z - eps)   # (a where of Python scalars would be float32)
    if mode == "add":
        return r / (z + eps)
    if mode == "rms":
        dims = tuple(range(1, z.dim()))
        return r / (z + eps * z.square().mean(dims, keepdim=True).sqrt() + 1e-9)
    if mode == "none":   # |z| below the smallest normal number counts as 0 (r / z is inf or NaN there: replaced)
        return guarded_divide(r, z) if may_be_zero(z) else r / z
    raise ValueError(f"unknown stabiliser mode {mode!r}; choose one of {MODES}")


def guarded_divide(r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """r / z with 0 where |z| is below the smallest normal number (LRP-0's 0/0 := 0; r / z would overflow)."""
    zero = z.abs() < torch.finfo(z.dtype).tiny
    return torch.where(zero, 0.0, r / torch.where(zero, 1.0, z))   # finite in both branches: so is the gradient


def may_be_zero(z: torch.Tensor) -> bool:
    """Whether some |z| is below the smallest normal number, where LRP-0 defines r / z as 0. Eager code asks
    for the smallest |z| (``abs`` then ``amin``: 5x faster on CPU than ``vector_norm(z, -inf)``, which reads z
    once but unvectorised) and skips the guard, whose abs, compare and where are three
    more passes over z (LRP-0's guarded divisions were 22 % of eager cp-lrp on Swin-T). Compiled graphs always
    answer True: a data-dependent branch would split the graph, and inductor fuses the guard into the division."""
    if torch.compiler.is_compiling():
        return True
    if z.numel() == 0:
        return False
    return not bool(z.abs().amin() >= torch.finfo(z.dtype).tiny)   # NaN: guarded
