"""The relevance crossing every graph cut, computed from the definition, one sample at a time.

An explanation reports ``layer_sums`` by multiplying per-sample message totals with a 0/1 matrix built at
compile time, and splits batched tensors into samples by the layout measured at compile time. This reference
uses neither: it runs the generated module on ONE sample (so a tensor's sum is that sample's sum, whatever the
layout), records every relevance message the relevance pass paired with an edge (``explainer.pairings``) and
the start relevance, and sums by hand what each node receives and emits and what crosses each cut.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from lrpc import kernels


@dataclass
class Flows:
    """Per sample [B, L] over ``explainer.layer_names``: relevance received by each node, emitted by its op, and
    crossing the cut after it; ``start`` [B]."""

    received: torch.Tensor
    emitted: torch.Tensor
    cut: torch.Tensor
    start: torch.Tensor

    @property
    def absorbed(self) -> torch.Tensor:
        """What each node's op takes out of the flow (the input, the sink, takes all it receives)."""
        return self.received - self.emitted

    def start_minus_later_absorption(self) -> torch.Tensor:
        """[B, L]: start minus everything absorbed by nodes after each one in graph order (the relevance pass
        reaches them first), the cut's value by the accounting."""
        later = self.absorbed.flip(1).cumsum(1).flip(1) - self.absorbed
        return self.start[:, None] - later


def _edges(explainer) -> list[tuple[str, str | None, str]]:
    """(producer, consumer, message node) for every relevance message; the start message has no consumer and
    leaves the output node, the last node carrying relevance."""
    edges = [(producer, consumer, message) for consumer, pairing in explainer.pairings.items()
             for producer, message in pairing.messages]
    start = next(n.name for n in explainer.module.graph.nodes if n.target is kernels.start_relevance)
    return edges + [(explainer.layer_names[-1], None, start)]


def flows(explainer, x: torch.Tensor, target: torch.Tensor) -> Flows:
    """Run the explainer's generated module once per sample of ``x`` (an image-like input) for ``target``."""
    names = explainer.layer_names
    position = {name: k for k, name in enumerate(names)}
    edges = _edges(explainer)
    wanted = {message for _, _, message in edges}
    rows = []
    for i in range(x.shape[0]):
        totals: dict[str, torch.Tensor] = {}

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                value = super().run_node(n)
                if n.name in wanted:
                    totals[n.name] = value.sum()
                return value

        with torch.inference_mode():
            Recorder(explainer.module).run(x[i:i + 1], target[i:i + 1])
        received = torch.zeros(len(names), dtype=torch.float64)
        emitted = torch.zeros_like(received)
        cut = torch.zeros_like(received)
        for producer, consumer, message in edges:
            total = float(totals[message])
            received[position[producer]] += total
            end = len(names) if consumer is None else position[consumer]
            if consumer is not None:
                emitted[end] += total
            cut[position[producer]:end] += total   # producer at or before the node, consumer after it
        rows.append((received, emitted, cut, float(totals[edges[-1][2]])))
    received, emitted, cut = (torch.stack([row[k] for row in rows]) for k in range(3))
    return Flows(received, emitted, cut, torch.tensor([row[3] for row in rows], dtype=torch.float64))
