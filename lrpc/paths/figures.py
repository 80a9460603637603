"""Figures of the path analysis (matplotlib, ``pip install 'lrpc[viz]'``), each written as a PNG of an exact size.

- ``plot_graph``: the channel graph in layers (one column per layer, channels top to bottom), its strongest
  edges in grey and the top-K paths highlighted;
- ``plot_k_path_panels``: the image, the full heatmap and the "K-n path" heatmaps of ``select_k``;
- ``plot_relevance_vs_activation``: K-path heatmaps with paths ranked in the relevance graph and in the
  activation graph, side by side;
- ``plot_k_curves``: MSE and SMAPE against K, with the chosen K marked.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import networkx as nx

from .. import viz
from .heatmap import KSelection


def _figure(width: int, height: int, dpi: int):
    if width < 50 or height < 50:
        raise ValueError(f"a figure needs at least 50 x 50 pixels, got {width} x {height}")
    return viz.blank_figure(width, height, "lrpc.paths.figures draws", dpi)


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=figure.dpi, format="png", facecolor="white")
    return path


def _positions(graph: nx.DiGraph) -> dict:
    """Layered layout: x = the node's depth, y = its channel spread over [0, 1] (input and output centred)."""
    sizes: dict[int, int] = {}
    for _, data in graph.nodes(data=True):
        if data.get("channel") is not None:
            sizes[data["depth"]] = max(sizes.get(data["depth"], 0), data["channel"] + 1)
    positions = {}
    for node, data in graph.nodes(data=True):
        channel, depth = data.get("channel"), data["depth"]
        y = 0.5 if channel is None or sizes[depth] == 1 else 1.0 - channel / (sizes[depth] - 1)
        positions[node] = (depth, y)
    return positions


def plot_graph(graph: nx.DiGraph, paths: Sequence = (), path: str | os.PathLike = "graph.png", *,
               width: int = 1600, height: int = 900, dpi: int = 100, background_edges: int = 40) -> Path:
    """Draw ``graph`` (from ``relevance_graph``) with ``paths`` (``top_k_paths`` output, best first) in red;
    ``background_edges`` strongest edges (by frac) into each layer are drawn in grey for context."""
    from matplotlib.collections import LineCollection

    figure = _figure(width, height, dpi)
    axes = figure.add_axes((0.04, 0.16, 0.94, 0.76))
    positions = _positions(graph)
    layers = graph.graph.get("layers") or sorted({d["layer"] for _, d in graph.nodes(data=True)})

    strongest: dict[str, list] = {}
    for u, v, data in graph.edges(data=True):
        strongest.setdefault(graph.nodes[v]["layer"], []).append((data.get("frac", 0.0), u, v))
    grey = [(positions[u], positions[v]) for edges in strongest.values()
            for _, u, v in sorted(edges, key=lambda e: e[0], reverse=True)[:background_edges]]
    axes.add_collection(LineCollection(grey, colors="0.75", linewidths=0.4, zorder=1))

    xs, ys = zip(*positions.values())
    axes.scatter(xs, ys, s=2, c="0.5", linewidths=0, zorder=2)
    node_lists = [p[0] if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], list) else list(p)
                  for p in paths]
    for rank, nodes in reversed(list(enumerate(node_lists))):
        segments = [(positions[u], positions[v]) for u, v in zip(nodes, nodes[1:])]
        strength = 1.0 - rank / max(len(node_lists), 1)
        axes.add_collection(LineCollection(segments, colors=[(0.85, 0.1 * (1 - strength) + 0.05, 0.05)],
                                           linewidths=0.8 + 2.2 * strength, zorder=3 + strength))
        px, py = zip(*(positions[n] for n in nodes))
        axes.scatter(px, py, s=10, c="tab:red", zorder=4)
    axes.set_xlim(-0.5, len(layers) - 0.5)
    axes.set_ylim(-0.03, 1.03)
    axes.set_xticks(range(len(layers)))
    axes.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    axes.set_yticks([])
    axes.set_ylabel("channel")
    title = f"channel {graph.graph.get('mode', 'relevance')} graph, target {graph.graph.get('target')}"
    if node_lists:
        title += f", top {len(node_lists)} paths"
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def plot_k_curves(selection: KSelection, path: str | os.PathLike = "select_k.png", *, width: int = 900,
                  height: int = 500, dpi: int = 100) -> Path:
    """MSE (left axis) and SMAPE (right axis) of the K-path heatmap against the full one."""
    figure = _figure(width, height, dpi)
    axes = figure.add_axes((0.1, 0.14, 0.78, 0.76))
    axes.plot(selection.ks, selection.mse, "o-", color="tab:blue", label="MSE")
    axes.set_xscale("log")
    axes.set_xlabel("K (paths)")
    axes.set_ylabel("MSE (normalised maps)", color="tab:blue")
    twin = axes.twinx()
    twin.plot(selection.ks, selection.smape, "s--", color="tab:orange", label="SMAPE")
    twin.set_ylabel("SMAPE (%)", color="tab:orange")
    axes.axvline(selection.chosen, color="tab:red", linewidth=1)
    axes.set_xticks(selection.ks)
    axes.set_xticklabels([str(k) for k in selection.ks])
    axes.set_title(f"choosing K: {selection.criterion} at K = {selection.chosen}", fontsize=10)
    return _save(figure, path)


def plot_k_path_panels(image, selection: KSelection, path: str | os.PathLike = "paths.png",
                       ks: Sequence[int] | None = None, panel_px: int = viz.PANEL_PX) -> Path:
    """The image, the full heatmap and the K-path heatmaps (``ks``: default all of ``selection.ks``). The PNG
    is (2 + len(ks)) · panel_px wide and panel_px + viz.TITLE_PX high."""
    ks = list(selection.ks if ks is None else ks)
    missing = [k for k in ks if k not in selection.heatmaps]
    if missing:
        raise ValueError(f"K values {missing} were not computed by select_k (it has {selection.ks})")
    maps = {"full": selection.full, **{f"K-{k} paths": selection.heatmaps[k] for k in ks}}
    return viz.panels(image, maps, path, panel_px=panel_px)


def plot_relevance_vs_activation(image, relevance_map, activation_map, path: str | os.PathLike, k: int,
                                 full=None, panel_px: int = viz.PANEL_PX) -> Path:
    """K-path heatmaps with the paths chosen in the relevance graph and in the activation graph."""
    maps = {} if full is None else {"full": full}
    maps.update({f"K-{k} relevance paths": relevance_map, f"K-{k} activation paths": activation_map})
    return viz.panels(image, maps, path, panel_px=panel_px)

