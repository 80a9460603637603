"""Heatmaps restricted to paths or channels, the paper's channel selection, and the choice of K."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import networkx as nx
import torch

from ..errors import LrpcError
from ..runtime import Explainer
from .analysis import Analysis, channel_sums
from .graph import build_graph
from .topk import top_k_paths

Tensor = torch.Tensor
COMBINE = ("each", "sum", "union")
CHANNEL_SCORES = ("relevance", "activation", "act_minus_rel")
DEFAULT_KS = (1, 2, 3, 5, 10, 20, 50)


def _as_paths(paths) -> list[list[Hashable]]:
    """Paths as node lists; (path, score) pairs from ``top_k_paths`` are accepted as they come."""
    if not isinstance(paths, (list, tuple)):
        raise LrpcError(f"paths must be a list of paths (node lists) or of (path, score) pairs, got "
                        f"{type(paths).__name__}")
    out = []
    for item in paths:
        if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (list, tuple))
                and isinstance(item[1], (int, float))):
            item = item[0]
        out.append(list(item))
    return out


def path_heatmap(explainer: Explainer, x: Tensor, paths, target=None, combine: str = "each") -> Tensor:
    """Input heatmaps of relevance restricted to paths (node lists from ``top_k_paths``, or its (path, score)
    pairs): at every conv/linear layer only the path's channel carries relevance.

    ``combine="each"``: one map per path [P, H, W]; ``"sum"``: their sum [H, W], the exact contribution of the
    paths (over all paths of the graph it is the full heatmap); ``"union"``: one pass with every layer masked to
    the union of the paths' channels [H, W] (this also admits paths that cross between the given ones).
    """
    if combine not in COMBINE:
        raise LrpcError(f"combine must be one of {COMBINE}, got {combine!r}")
    analysis = Analysis.of(explainer)
    paths = _as_paths(paths)
    if combine == "union":
        masks = {layer: torch.zeros(analysis.structure.channels[layer], dtype=x.dtype)
                 for layer in analysis.structure.layers}
        for path in paths:
            for layer, channel in analysis.resolve_path(path)[1:-1]:
                masks[layer][channel] = 1.0
        return analysis.probe.run(x, target, masks).sum(1)[0]
    maps = analysis.path_relevance(analysis.trace(x, target), paths).sum(1)
    return maps if combine == "each" else maps.sum(0)


# ------------------------------------------------------------------------------------------ channel selection
@dataclass
class ChannelSelection:
    """The paper's GetOptimizer at one layer: channels whose score is at least mean − k_std · std."""

    layer: str
    score: str
    scores: Tensor           # [C]
    threshold: float
    keep: Tensor             # [C] bool
    heatmap: Tensor          # [H, W]: relevance restricted to the kept channels at ``layer``

    @property
    def channels(self) -> Tensor:
        return torch.nonzero(self.keep).squeeze(1)


def resolve_layer(analysis: Analysis, layer: str) -> str:
    """A conv/linear layer by fx node name or by module path."""
    structure = analysis.structure
    if layer in structure.layers:
        return layer
    matches = [name for name in structure.layers if analysis.probe.plans[name].module == layer]
    if len(matches) == 1:
        return matches[0]
    raise LrpcError(f"{layer!r} is not a conv/linear layer (node name or module path); layers: "
                    + ", ".join(f"{n} ({analysis.probe.plans[n].module})" for n in structure.layers))


def threshold(scores: Tensor, k_std: float) -> float:
    """mean − k_std · std (population std); k_std = +inf keeps every channel, −inf none."""
    if math.isinf(k_std):
        return -math.inf if k_std > 0 else math.inf
    return float(scores.mean()) - k_std * float(scores.std(unbiased=False))


def select_channels(explainer: Explainer, x: Tensor, layer: str, score: str = "relevance", k_std: float = 1.0,
                    target=None) -> ChannelSelection:
    """Score every channel of ``layer`` — ``"relevance"`` (its summed relevance), ``"activation"`` (its summed
    positive output) or ``"act_minus_rel"`` (the difference of the two, the paper's forward − backward) — keep
    those scoring at least mean − ``k_std`` · std, and compute the heatmap of the relevance that passes through
    the kept channels."""
    if score not in CHANNEL_SCORES:
        raise LrpcError(f"score must be one of {CHANNEL_SCORES}, got {score!r}")
    if not isinstance(k_std, (int, float)) or math.isnan(k_std):
        raise LrpcError(f"k_std must be a number, got {k_std!r}")
    analysis = Analysis.of(explainer)
    layer = resolve_layer(analysis, layer)
    trace = analysis.trace(x, target)
    channels = analysis.structure.channels[layer]
    relevance = channel_sums(trace.relevances[layer], channels)
    activation = channel_sums(trace.activations[layer].clamp(min=0), channels)
    scores = {"relevance": relevance, "activation": activation, "act_minus_rel": activation - relevance}[score]
    cut = threshold(scores, float(k_std))
    keep = scores >= cut
    heat = analysis.probe.run(x, trace.target, {layer: keep.to(x.dtype)}).sum(1)[0]
    return ChannelSelection(layer, score, scores, cut, keep, heat)


# ------------------------------------------------------------------------------------------------ choosing K
def _normalised(heat: Tensor) -> Tensor:
    total = heat.abs().sum()
    return heat / total if total > 0 else torch.zeros_like(heat)


def heatmap_mse(full: Tensor, approx: Tensor) -> float:
    """Mean squared difference of the two maps, each divided by its total |relevance|."""
    return float((_normalised(full) - _normalised(approx)).square().mean())


def heatmap_smape(full: Tensor, approx: Tensor, eps: float = 1e-12) -> float:
    """Symmetric mean absolute percentage error (0–200 %) of the two maps, each divided by its total
    |relevance|: mean of |a − b| / ((|a| + |b|) / 2 + eps), where a pixel with a = b = 0 counts 0."""
    a, b = _normalised(full), _normalised(approx)
    denominator = (a.abs() + b.abs()) / 2
    ratio = torch.where(denominator > 0, (a - b).abs() / (denominator + eps), torch.zeros_like(a))
    return 100.0 * float(ratio.mean())


def knee(ks: Sequence[int], errors: Sequence[float]) -> int:
    """The K after which more paths stop paying: the point of a falling error curve farthest below the chord
    from its first to its last point (log K axis, errors scaled to [0, 1]); the best K when there is no bend."""
    x = torch.tensor([math.log(k) for k in ks], dtype=torch.float64)
    y = torch.tensor(errors, dtype=torch.float64)
    if len(ks) < 3 or float(y.max() - y.min()) == 0.0:
        return int(ks[int(torch.argmin(y))])
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y.min()) / (y.max() - y.min())
    below = (y[0] + (y[-1] - y[0]) * x) - y
    if float(below.max()) <= 0.0:
        return int(ks[int(torch.argmin(y))])
    return int(ks[int(torch.argmax(below))])


@dataclass
class KSelection:
    """MSE / SMAPE between the full heatmap and the K-path heatmap for each K, and the K chosen."""

    ks: list[int]
    mse: list[float]
    smape: list[float]
    coverage: list[float]           # share of the full map's relevance the K paths carry (signed sums)
    chosen: int
    criterion: str                  # "knee" or "tolerance"
    paths: list[tuple[list, float]]
    heatmaps: dict[int, Tensor]     # K -> [H, W], the sum of the K best paths' maps
    full: Tensor
    graph: nx.DiGraph = field(repr=False)


def select_k(explainer: Explainer, x: Tensor, ks: Sequence[int] = DEFAULT_KS, target=None, score: str = "sum",
             mode: str = "relevance", tolerance: float | None = None, max_in_edges: int | None = 16,
             eps: float = 1e-12) -> KSelection:
    """Compare the full heatmap with the heatmap of the K best paths (``score``, ranked in the ``mode`` graph)
    for each K in ``ks``. The chosen K is the smallest whose MSE is at most ``tolerance``, or the knee of the
    MSE curve when no tolerance is given (or none meets it)."""
    ks = list(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks) or ks != sorted(set(ks)):
        raise LrpcError(f"ks must be increasing positive ints, got {ks}")
    analysis = Analysis.of(explainer)
    trace = analysis.trace(x, target)
    graph = build_graph(analysis, trace, mode, max_in_edges)
    paths = top_k_paths(graph, ks[-1], score)
    if not paths:
        raise LrpcError("the channel graph has no input → output path with this score")
    cumulative = analysis.path_relevance(trace, [p for p, _ in paths]).sum(1).cumsum(0)
    full = trace.heatmap
    heatmaps = {k: cumulative[min(k, len(paths)) - 1] for k in ks}
    mse = [heatmap_mse(full, heatmaps[k]) for k in ks]
    smape = [heatmap_smape(full, heatmaps[k], eps) for k in ks]
    total = float(full.sum())
    coverage = [float(heatmaps[k].sum()) / total if total != 0 else 0.0 for k in ks]
    chosen, criterion = None, "knee"
    if tolerance is not None:
        chosen = next((k for k, e in zip(ks, mse) if e <= tolerance), None)
        criterion = "tolerance" if chosen is not None else "knee"
    if chosen is None:
        chosen = knee(ks, mse)
    return KSelection(ks, mse, smape, coverage, chosen, criterion, paths, heatmaps, full, graph)
