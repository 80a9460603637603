"""Per-node relevance bookkeeping read off an explanation: what each node receives, emits, creates or loses.

The generated module reports two sums per node (see ``relevance_pass``): ``node_sums`` (relevance arriving at the
node) and ``layer_sums`` (relevance crossing the graph cut just after it). Walking the nodes in graph order, the
cut after node k differs from the cut after node k-1 by exactly the messages node k receives (they start at k)
minus the messages its op emits (they end at k). So the change of the cut total across a node,
``cut[k-1] - cut[k]``, is the relevance that node's op created (> 0) or lost (< 0), with no extra tensors kept.
The input is the sink where relevance stops: it has no op, and nothing is counted for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..op_kinds import kind_of

if TYPE_CHECKING:  # runtime imports this package lazily; no import cycle at run time
    from ..annotate import NodePlan
    from ..runtime import Explanation


@dataclass(frozen=True)
class NodeFlow:
    """Relevance through one node's op, per sample [B]: ``delta = emitted - received``."""

    received: torch.Tensor
    emitted: torch.Tensor
    delta: torch.Tensor


@dataclass(frozen=True)
class Leak:
    """A node whose op created (delta > 0) or lost (delta < 0) relevance; ``size`` is what it was ranked by:
    the largest |delta| over the batch, relative to |start| when ``leaks(relative=True)``."""

    node: str
    kind: str
    delta: torch.Tensor
    size: float

    def __str__(self) -> str:
        verb = "creates" if float(self.delta.mean()) > 0 else "loses"
        return f"{self.node} ({self.kind}) {verb} {self.size:.3g}"


def node_flows(explanation: "Explanation") -> dict[str, NodeFlow]:
    delta = -explanation.absorbed_matrix
    flows = {}
    for k, name in enumerate(explanation.layer_names):
        received = explanation.node_sum_matrix[:, k]
        flows[name] = NodeFlow(received, received + delta[:, k], delta[:, k])
    return flows


def absorber(plan: "NodePlan") -> str | None:
    """What in a node's op may absorb relevance by design ("bias", "stabiliser", both, "constant", "softmax"),
    or None: a conserving op whose delta is not zero is a bug or a documented stand-in, not absorption."""
    return "+".join(kind_of(plan).absorbs(plan)) or None


def start_scale(start: torch.Tensor) -> torch.Tensor:
    """What a sample's deviations are measured against: |start|, or 1 where |start| is below the smallest normal
    number (a contrast of equal scores). A fixed floor would hide every leak of a model whose scores are tiny: a
    randomly initialised Hugging Face MobileViT's logits are ~1e-52, and under a logit start a node losing all
    of them read as 1e-22 of a 1e-30 floor."""
    magnitude = start.abs()
    return torch.where(magnitude >= torch.finfo(magnitude.dtype).tiny, magnitude, torch.ones_like(magnitude))


def leaks(explanation: "Explanation", tol: float = 1e-6, relative: bool = True) -> list[Leak]:
    """Nodes whose op creates or loses more than ``tol`` relevance in some sample, largest first. ``relative``
    measures against |start| of that sample (the relevance the explanation began with; ``start_scale``)."""
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    scale = start_scale(explanation.start) if relative else 1.0
    plans = explanation.explainer.plans
    found = []
    for name, flow in node_flows(explanation).items():
        size = float((flow.delta.abs() / scale).max())
        if size > tol or size != size:  # NaN is always a leak
            found.append(Leak(name, plans[name].info.kind, flow.delta, size))
    return sorted(found, key=lambda leak: math.inf if leak.size != leak.size else leak.size, reverse=True)
