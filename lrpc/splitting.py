"""Relevance Splitting at residual adds (Otsuki et al. 2024, §4.3–4.4; docs/splitting.md).

At y = h_m + h_s the upper relevance R_y is split elementwise between the two operands:
- ``symmetric``: R/2 each;
- ``ratio``: R·|h|/(|h_m| + |h_s|), 0/0 split evenly (the guard keeps conservation exact);
- ``proportional``: the signed z-rule on the add, R·h/stab(h_m + h_s) (what zennit / iNNvestigate do).
``identity=False`` gives an identity skip no relevance at all (R_s = 0, all of R_y to the residual branch);
projection shortcuts always take their share and pass it on through their conv's rule.

Which operand is the skip is read from the graph (``classify_add``), never from class names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx

from .errors import LrpcError
from .kernels import in_place
from .stabilizers import divide

SPLIT_MODES = ("ratio", "symmetric", "proportional")


@dataclass(frozen=True)
class Splitting:
    mode: str = "ratio"
    identity: bool = True
    epsilon: float = 0.0

    def __post_init__(self):
        if self.mode not in SPLIT_MODES:
            raise LrpcError(f"unknown splitting mode {self.mode!r}; choose one of {SPLIT_MODES}")
        if self.epsilon and self.mode != "proportional":
            raise LrpcError(f"Splitting epsilon is the stabiliser of the proportional split; {self.mode!r} splits "
                            "exactly (0/0 evenly) and takes none")

    def describe(self) -> str:
        extra = f", epsilon={self.epsilon}" if self.mode == "proportional" else ""
        return f"{self.mode}({'with' if self.identity else 'without'} identity{extra})"


def split_add(r, x0, x1, *, mode, eps, silent, nonneg=(False, False), shared_rows=False):
    """Return (R_0, R_1) for y = x0 + x1; ``silent`` is the index of an operand that gets nothing, or -1;
    ``nonneg[k]``: the compiler proved x_k >= 0 (a ReLU output), so |x_k| = x_k needs no pass of its own.
    ``shared_rows``: x0 and x1 are one sample that every row of r shares (``lrpc.crp``: one image under K
    conditions), so the shares are computed once and the parts keep r's rows."""
    shape0, shape1 = x0.shape, x1.shape
    if shared_rows:
        shape0, shape1 = (r.shape[0], *shape0[1:]), (r.shape[0], *shape1[1:])
    if silent == 0:
        return r.new_zeros(shape0) if shared_rows else torch.zeros_like(x0), r.sum_to_size(shape1)
    if silent == 1:
        return r.sum_to_size(shape0), r.new_zeros(shape1) if shared_rows else torch.zeros_like(x1)
    if mode == "symmetric":
        r0 = r1 = 0.5 * r
    elif mode == "ratio":
        r0 = _ratio_share(x0, x1, nonneg)
        r0 = r0.mul_(r) if in_place() and r0.shape == r.shape else r0 * r
        r1 = r - r0
    else:
        s = divide(r, x0 + x1, "sign" if eps else "none", eps)
        r0 = x0 * s
        r1 = s.mul_(x1) if in_place() and s.shape == x1.shape else x1 * s
    return r0.sum_to_size(shape0), r1.sum_to_size(shape1)


def _ratio_share(x0, x1, nonneg):
    """|x0| / (|x0| + |x1|), 0/0 := 1/2 (both operands zero: the only NaN finite activations give here).
    Eager PyTorch runs one memory pass per op, so the temporaries this function made are reused in place."""
    m0 = x0 if nonneg[0] else x0.abs()
    m1 = x1 if nonneg[1] else x1.abs()
    own = in_place()
    if own and not nonneg[1] and m1.shape == torch.broadcast_shapes(m0.shape, m1.shape):
        total = m1.add_(m0)
    else:
        total = m0 + m1   # out of place: an operand may be broadcast (x + bias-like tensor)
    share = torch.div(m0, total, out=total) if own and total.shape == m0.shape else m0 / total
    return share.nan_to_num_(nan=0.5) if own else share.nan_to_num(nan=0.5)


@dataclass(frozen=True)
class AddKind:
    """How an add joins two branches: ``identity`` / ``projection`` skip (``skip`` = operand index) or ``generic``."""

    kind: str
    skip: int | None


def ancestors(nodes: Iterable[fx.Node]) -> set[fx.Node]:
    """The nodes themselves and every node they are computed from."""
    found: set[fx.Node] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n not in found:
            found.add(n)
            stack.extend(n.all_input_nodes)
    return found


def _longest_distance(source: fx.Node, target: fx.Node, order: dict[fx.Node, int]) -> tuple[int, bool]:
    """(number of nodes on the longest path source → target, whether that path has a weighted op)."""
    best: dict[fx.Node, tuple[int, bool]] = {source: (0, False)}
    for n in sorted(ancestors([target]), key=order.__getitem__):
        if order[n] <= order[source]:
            continue
        preds = [best[p] for p in n.all_input_nodes if p in best]
        if preds:
            d, w = max(preds)
            best[n] = (d + 1, w or n.meta.get("lrpc_weighted", False))
    return best.get(target, (0, False))


def classify_add(node: fx.Node, operands: tuple[fx.Node, fx.Node], order: dict[fx.Node, int]) -> AddKind:
    """An operand that is an ancestor of the other is an identity skip; otherwise, from the nearest common
    ancestor (the fork), the shorter branch is the skip — a projection if it holds a weighted layer."""
    a, b = operands
    anc_a, anc_b = ancestors(a.all_input_nodes), ancestors(b.all_input_nodes)
    if a in anc_b:
        return AddKind("identity", 0)
    if b in anc_a:
        return AddKind("identity", 1)
    common = anc_a & anc_b
    if not common:
        return AddKind("generic", None)
    fork = max(common, key=order.__getitem__)
    (da, wa), (db, wb) = _longest_distance(fork, a, order), _longest_distance(fork, b, order)
    if da == db:
        return AddKind("generic", None)
    skip = 0 if da < db else 1
    return AddKind("projection" if (wa, wb)[skip] else "generic", skip)
