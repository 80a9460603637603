"""``top_k_paths``: the K best input → output paths of a DAG, by a dynamic program over its levels.

A path's score is built edge by edge from ``flow`` (or ``frac``):

- ``sum``: Σ flow — with k=1 the same path as ``networkx.dag_longest_path(graph, weight="flow")`` (when the
  flows are non-negative, which z⁺ guarantees);
- ``product``: Π frac, the share of the output relevance that follows the path (= exp(−Σ cost), so the order
  is that of ``networkx.shortest_simple_paths(graph, "input", "output", weight="cost")``);
- ``bottleneck``: min flow, the widest path.

Each of these is monotone in the score of the prefix, so the K best paths into a node extend the K best paths
into its predecessors: keeping K candidates per node is exact. Nodes are processed level by level (the
``depth`` attribute of a channel graph, else networkx's topological generations), all candidates of a level
ranked at once with numpy.
"""
from __future__ import annotations

import math
from typing import Hashable

import networkx as nx
import numpy as np

from ..errors import LrpcError

SCORES = ("sum", "product", "bottleneck")
_CHUNK = 1 << 22   # candidates ranked at once, to bound memory on dense graphs


def top_k_paths(graph: nx.DiGraph, k: int, score: str = "sum", source: Hashable = "input",
                sink: Hashable = "output") -> list[tuple[list, float]]:
    """The ``k`` best paths from ``source`` to ``sink`` as (node list, score), best first. Fewer come back when
    the graph has fewer paths (with ``product``, only paths whose every frac is positive count)."""
    if score not in SCORES:
        raise LrpcError(f"score must be one of {SCORES}, got {score!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LrpcError(f"k must be a positive int, got {k!r}")
    for node in (source, sink):
        if node not in graph:
            raise LrpcError(f"the graph has no node {node!r}")
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    attribute = "frac" if score == "product" else "flow"
    edges = np.array([(index[u], index[v], w) for u, v, w in graph.edges(data=attribute, default=0.0)],
                     dtype=np.float64).reshape(-1, 3)
    tails, heads, weights = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64), edges[:, 2]
    if score == "product":
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(weights > 0, np.log(np.where(weights > 0, weights, 1.0)), -np.inf)
    level = _levels(graph, nodes, index, tails, heads)

    best = np.full((len(nodes), k), -np.inf)
    best[index[source], 0] = np.inf if score == "bottleneck" else 0.0
    back_node = np.full((len(nodes), k), -1)
    back_rank = np.full((len(nodes), k), -1)
    order = np.lexsort((heads, level[heads]))
    tails, heads, weights = tails[order], heads[order], weights[order]
    bounds = np.flatnonzero(np.diff(level[heads])) + 1
    for block in np.split(np.arange(len(heads)), bounds):
        if len(block):
            _rank_level(best, back_node, back_rank, tails[block], heads[block], weights[block], score, k)

    paths = []
    s, src = index[sink], index[source]
    for rank in range(k):
        value = float(best[s, rank])
        if value == -math.inf:
            break
        path, node, r = [sink], s, rank
        while node != src:
            node, r = int(back_node[node, r]), int(back_rank[node, r])
            path.append(nodes[node])
        paths.append((path[::-1], math.exp(value) if score == "product" else value))
    return paths


def _levels(graph: nx.DiGraph, nodes: list, index: dict, tails: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """A level per node such that every edge climbs: the ``depth`` attribute when it has that property (channel
    graphs), else the topological generation. Raises for graphs with a cycle."""
    depth = [graph.nodes[n].get("depth") for n in nodes]
    if all(isinstance(d, int) for d in depth):
        level = np.array(depth)
        if np.all(level[tails] < level[heads]):
            return level
    level = np.zeros(len(nodes), dtype=np.int64)
    try:
        for g, generation in enumerate(nx.topological_generations(graph)):
            level[[index[n] for n in generation]] = g
    except nx.NetworkXUnfeasible as exc:
        raise LrpcError("top_k_paths needs a directed acyclic graph") from exc
    return level


def _rank_level(best, back_node, back_rank, tails, heads, weights, score, k):
    """K best candidates for each node of one level. Candidate (edge e, rank i) extends the i-th best path into
    the edge's tail; they are laid out [node, in-edge slot, rank] and ranked per node. Edges come sorted by head."""
    starts = np.flatnonzero(np.r_[True, heads[1:] != heads[:-1]])
    rows = heads[starts]
    counts = np.diff(np.r_[starts, len(heads)])
    row_of_edge = np.repeat(np.arange(len(rows)), counts)
    slot = np.arange(len(heads)) - starts[row_of_edge]
    prefix = best[tails]                                                       # [E, k]
    extended = np.minimum(prefix, weights[:, None]) if score == "bottleneck" else prefix + weights[:, None]
    width = int(counts.max())
    per_chunk = max(1, _CHUNK // (width * k))
    for first in range(0, len(rows), per_chunk):
        last = min(first + per_chunk, len(rows))
        lo, hi = starts[first], (starts[last] if last < len(rows) else len(heads))
        table = np.full((last - first, width, k), -np.inf)
        table[row_of_edge[lo:hi] - first, slot[lo:hi]] = extended[lo:hi]
        flat = table.reshape(last - first, width * k)
        keep = min(k, flat.shape[1])
        top = np.argpartition(-flat, keep - 1, axis=1)[:, :keep] if keep < flat.shape[1] else \
            np.broadcast_to(np.arange(keep), (last - first, keep))
        values = np.take_along_axis(flat, top, 1)
        order = np.argsort(-values, axis=1, kind="stable")
        top, values = np.take_along_axis(top, order, 1), np.take_along_axis(values, order, 1)
        edge = starts[first:last, None] + top // k                            # each candidate's in-edge
        target = rows[first:last]
        valid = values > -np.inf
        best[target, :keep] = values
        back_node[target, :keep] = np.where(valid, tails[np.minimum(edge, len(tails) - 1)], -1)
        back_rank[target, :keep] = np.where(valid, top % k, -1)
