"""Neuron and path analysis (docs/paths.md): channel relevance graphs, top-K relevance paths, path heatmaps,
channel selection, the choice of K, and Zeiler–Fergus deconvnet reconstructions.

    graph = lrpc.paths.relevance_graph(explainer, x)            # networkx DiGraph of (layer, channel) nodes
    best = lrpc.paths.top_k_paths(graph, k=5)                   # [(path, score), ...]
    maps = lrpc.paths.path_heatmap(explainer, x, best)          # one input heatmap per path
    choice = lrpc.paths.select_k(explainer, x)                  # MSE / SMAPE against the full map per K
    pictures = lrpc.paths.deconvnet(explainer, x, "features.28", [3, 17])   # Zeiler–Fergus reconstructions

See docs/paths.md for the definitions and what is exact.
"""
from .deconvnet import deconvnet
from .graph import relevance_graph
from .heatmap import (ChannelSelection, KSelection, heatmap_mse, heatmap_smape, knee, path_heatmap,
                      select_channels, select_k)
from .structure import INPUT, OUTPUT
from .topk import top_k_paths

__all__ = ["relevance_graph", "top_k_paths", "path_heatmap", "select_channels", "select_k", "deconvnet",
           "ChannelSelection", "KSelection", "heatmap_mse", "heatmap_smape", "knee", "INPUT", "OUTPUT"]
