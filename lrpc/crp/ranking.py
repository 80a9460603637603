"""Concept ranking: how much relevance each channel (concept) of a layer receives for the explained class.

The relevance of channel c of layer l for input x is R_c(x) = Σ over positions of the relevance at l's output in
channel c: with a conserving rule set and l a cut of the graph, Σ_c R_c(x) is the explained output. Locally it
orders the concepts of one decision; averaged over many inputs (a batch, or an iterable of batches such as a
DataLoader) it says which concepts a class relies on. The relevance pass stops at the layer: nothing below it
runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..errors import LrpcError
from ..runtime import Explainer
from .conditional import _prepare, _run
from .layers import resolve

Tensor = torch.Tensor


@dataclass
class ConceptRanking:
    """Channel relevances of one layer for N inputs."""

    layer: str          # the node the layer resolved to
    relevance: Tensor   # [N, C]: R_c of every input
    target: Tensor      # [N]: the class each input was explained for

    @property
    def share(self) -> Tensor:
        """[N, C]: R_c / Σ_c |R_c| per input (zennit-crp's ``abs_norm``), so that inputs whose outputs differ in
        size weigh alike when averaged."""
        total = self.relevance.abs().sum(1, keepdim=True)
        return self.relevance / total.clamp_min(torch.finfo(total.dtype).tiny)

    def mean(self, normalized: bool = False) -> Tensor:
        """[C]: the mean over the inputs of R_c, or of its share with ``normalized=True``."""
        return (self.share if normalized else self.relevance).mean(0)

    def top(self, k: int, sample: int | None = None, normalized: bool = False) -> Tensor:
        """The ``k`` most relevant channels, most relevant first: of one input (``sample``) or over all of them."""
        scores = self.mean(normalized) if sample is None else (self.share if normalized else self.relevance)[sample]
        return scores.argsort(descending=True)[:k]


def _channel_relevance(explainer: Explainer, x: Tensor, layer: str, target) -> tuple[str, Tensor, Tensor]:
    build, target = _prepare(explainer, x, target)
    resolved_layer = resolve(explainer, build, layer)
    everything = torch.ones(1, resolved_layer.channels, dtype=x.dtype, device=x.device)
    _, resolved, _, (at_layer,) = _run(explainer, build, x, target, [resolved_layer], [everything], None,
                                       input_relevance=False)
    per_channel = at_layer.movedim((resolved_layer.batch_dim, resolved_layer.channel_dim), (0, 1))
    return resolved_layer.node, per_channel.reshape(x.shape[0], resolved_layer.channels, -1).sum(2), resolved


def rank_concepts(explainer: Explainer, x, layer: str, target=None) -> ConceptRanking:
    """The relevance of every channel of ``layer`` for the explained class (``target`` as in
    ``explainer(x, target)``), for every input.

    ``x`` is a batch [B, ...] or an iterable of batches; an item of the iterable may be a pair ``(batch,
    targets)`` (a labelled DataLoader), whose targets are then explained instead of ``target``. The result holds
    one row per input: ``.relevance`` [N, C], ``.mean()`` [C], ``.top(k)``."""
    batches = [(x, target)] if isinstance(x, Tensor) else None
    if batches is None:
        if not isinstance(x, Iterable):
            raise LrpcError(f"x must be a tensor or an iterable of batches, got {type(x).__name__}")
        batches = (item if isinstance(item, (tuple, list)) else (item, target) for item in x)
    node, rows, targets = None, [], []
    for item in batches:
        if len(item) != 2 or not isinstance(item[0], Tensor):
            raise LrpcError("an item of x must be a batch tensor or a pair (batch, targets), got "
                            f"{type(item).__name__} of {len(item)}")
        node, relevance, resolved = _channel_relevance(explainer, item[0], layer, item[1])
        rows.append(relevance)
        targets.append(resolved)
    if not rows:
        raise LrpcError("x holds no batches")
    return ConceptRanking(node, torch.cat(rows), torch.cat(targets))
