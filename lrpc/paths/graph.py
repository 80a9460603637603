"""``relevance_graph``: the channel relevance graph of one image as a networkx DiGraph (docs/paths.md)."""
from __future__ import annotations

import math

import networkx as nx
import torch

from ..errors import LrpcError
from ..runtime import Explainer
from .analysis import Analysis, channel_sums
from .probe import Trace
from .structure import INPUT, OUTPUT

Tensor = torch.Tensor


def relevance_graph(explainer: Explainer, x: Tensor, target=None, mode: str = "relevance",
                    max_in_edges: int | None = 16) -> nx.DiGraph:
    """The channel graph of image ``x`` ([1, C, H, W]) explained for ``target`` (default: the prediction).

    Nodes are ``(layer, channel)`` for every conv/linear layer (fx node names, ``explainer.plans``) plus
    ``"input"`` and ``"output"``. An edge runs from a lower channel c to an upper channel d with

    - ``flow``: relevance passing from d down to c (``mode="relevance"``), or c's contribution to d's positive
      pre-activation (``mode="activation"``, the activation-based graph);
    - ``frac``: flow / the upper node's ``total`` (its relevance, or its positive activation mass);
    - ``cost``: −log frac (``inf`` where frac ≤ 0), for shortest-path tools.

    Only the ``max_in_edges`` largest incoming flows of each node are edges (``None`` keeps every non-zero
    flow); the dense matrices stay in ``graph.graph["flows"][(lower layer, upper layer)]`` ([C_lower, C_upper],
    the input's rows are image channels, the output's single column is the target). ReLU, BatchNorm, pools,
    flatten and residual adds between layers are folded into the edges (see docs/paths.md).
    """
    if max_in_edges is not None and (not isinstance(max_in_edges, int) or max_in_edges < 1):
        raise LrpcError(f"max_in_edges must be a positive int or None, got {max_in_edges!r}")
    analysis = Analysis.of(explainer)
    trace = analysis.trace(x, target)
    return build_graph(analysis, trace, mode, max_in_edges)


def build_graph(analysis: Analysis, trace: Trace, mode: str, max_in_edges: int | None) -> nx.DiGraph:
    structure = analysis.structure
    flows = analysis.flows(trace, mode)
    label = {structure.input: INPUT}

    relevance = {structure.input: channel_sums(trace.relevance, structure.channels[structure.input]),
                 OUTPUT: trace.start[0, trace.target].reshape(1)}
    activation = {structure.input: channel_sums(trace.x.clamp(min=0), structure.channels[structure.input]),
                  OUTPUT: trace.logits[0, trace.target].reshape(1)}
    for layer in structure.layers:
        channels = structure.channels[layer]
        relevance[layer] = channel_sums(trace.relevances[layer], channels)
        activation[layer] = channel_sums(trace.activations[layer].clamp(min=0), channels)
    totals = relevance if mode == "relevance" else activation

    graph = nx.DiGraph(mode=mode, target=trace.target, rules=analysis.probe.explainer.rules.name,
                       layers=[INPUT, *structure.layers, OUTPUT], heatmap=trace.heatmap,
                       flows={(label.get(p, p), c): f for (p, c), f in flows.items()},
                       relevance={label.get(k, k): v for k, v in relevance.items()},
                       activation={label.get(k, k): v for k, v in activation.items()})
    graph.add_node(INPUT, layer=INPUT, channel=None, depth=0, relevance=float(relevance[structure.input].sum()),
                   activation=float(activation[structure.input].sum()),
                   total=float(totals[structure.input].sum()))
    for layer in structure.layers:
        depth = structure.rank(layer)
        graph.add_nodes_from(((layer, d), {"layer": layer, "channel": d, "depth": depth, "relevance": rv,
                                           "activation": av, "total": tv})
                             for d, (rv, av, tv) in enumerate(zip(relevance[layer].tolist(),
                                                                  activation[layer].tolist(),
                                                                  totals[layer].tolist())))
    graph.add_node(OUTPUT, layer=OUTPUT, channel=None, depth=structure.rank(OUTPUT),
                   relevance=float(relevance[OUTPUT]), activation=float(activation[OUTPUT]),
                   total=float(totals[OUTPUT]))

    for consumer in [*structure.layers, OUTPUT]:
        incoming, lower = [], []          # incoming: [D, rows] per producer (row-major by upper channel: fast)
        for producer in structure.regions[consumer].producers:
            f = flows[producer, consumer].T
            if producer == structure.input:  # image channels meet in the single "input" node
                incoming.append(f.sum(1, keepdim=True))
                lower.append(INPUT)
            else:
                incoming.append(f)
                lower.extend((producer, c) for c in range(f.shape[1]))
        incoming = incoming[0] if len(incoming) == 1 else torch.cat(incoming, 1)
        _add_edges(graph, incoming, lower, consumer, totals[consumer], max_in_edges)
    return graph


def _add_edges(graph: nx.DiGraph, incoming: Tensor, lower: list, consumer: str, totals: Tensor,
               max_in_edges: int | None) -> None:
    """Edges into every channel d of ``consumer`` from the nodes ``lower``, whose flows are ``incoming[d]``:
    the strongest ``max_in_edges`` non-zero ones."""
    keep = incoming.shape[1] if max_in_edges is None else min(max_in_edges, incoming.shape[1])
    values, rows = incoming.contiguous().topk(keep, dim=1)                        # [D, keep]
    totals = totals.unsqueeze(1)
    fracs = torch.where(totals != 0, values / torch.where(totals != 0, totals, 1.0), 0.0)
    costs = torch.where(fracs > 0, -torch.log(fracs.clamp(min=1e-300)), math.inf)
    uppers = [OUTPUT] if consumer == OUTPUT else [(consumer, d) for d in range(incoming.shape[0])]
    columns = zip(values.reshape(-1).tolist(), rows.reshape(-1).tolist(), fracs.reshape(-1).tolist(),
                  costs.reshape(-1).tolist(), (v for v in uppers for _ in range(keep)))
    graph.add_edges_from((lower[row], v, {"flow": flow, "frac": frac, "cost": cost})
                         for flow, row, frac, cost, v in columns if flow != 0.0)
