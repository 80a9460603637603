"""top_k_paths against brute force (every path enumerated) and against networkx's own path algorithms."""
import itertools
import math

import networkx as nx
import pytest
import torch
from torch import nn

import lrpc
from lrpc.errors import LrpcError
from lrpc.paths import relevance_graph, top_k_paths
from lrpc.rules import ZPlus

from test_paths_flows import single_thread  # noqa: F401


def layered_dag(widths, seed, negative=False, density=0.7):
    """input -> layers of the given widths -> output, random edges with flow/frac/cost like a channel graph."""
    g = torch.Generator().manual_seed(seed)
    graph = nx.DiGraph()
    layers = [["input"]] + [[(f"l{i}", c) for c in range(w)] for i, w in enumerate(widths)] + [["output"]]
    for lower, upper in zip(layers, layers[1:]):
        for v in upper:
            for u in lower:
                if len(lower) == 1 or torch.rand(1, generator=g).item() < density:
                    flow = torch.rand(1, generator=g).item() - (0.3 if negative else 0.0)
                    frac = flow / 2
                    graph.add_edge(u, v, flow=flow, frac=frac, cost=-math.log(frac) if frac > 0 else math.inf)
    return graph


def brute_force(graph, score):
    scored = []
    for path in nx.all_simple_paths(graph, "input", "output"):
        edges = [graph.edges[u, v] for u, v in zip(path, path[1:])]
        if score == "sum":
            value = sum(e["flow"] for e in edges)
        elif score == "bottleneck":
            value = min(e["flow"] for e in edges)
        else:
            if any(e["frac"] <= 0 for e in edges):
                continue
            value = math.prod(e["frac"] for e in edges)
        scored.append((path, value))
    return sorted(scored, key=lambda item: item[1], reverse=True)


def assert_same_ranking(graph, got, expected, k, score):
    """Same scores in the same order; the same paths where scores do not tie (bottleneck scores tie a lot);
    every returned path is a distinct path of the graph whose own score is the one reported."""
    assert len(got) == min(k, len(expected))
    assert [s for _, s in got] == pytest.approx([s for _, s in expected[:k]], rel=1e-12)
    if score != "bottleneck":
        assert [p for p, _ in got] == [p for p, _ in expected[:k]]
    own = dict((tuple(p), s) for p, s in expected)
    assert len({tuple(p) for p, _ in got}) == len(got)
    for path, value in got:
        assert own[tuple(path)] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("score", ["sum", "product", "bottleneck"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dynamic_program_equals_brute_force(score, seed):
    graph = layered_dag([3, 4, 2, 3], seed, negative=seed == 2)
    expected = brute_force(graph, score)
    for k in (1, 7, len(expected) + 5):
        assert_same_ranking(graph, top_k_paths(graph, k, score), expected, k, score)


def test_skip_edges_and_unreachable_nodes():
    """Edges that skip levels (residual graphs) and nodes off every input→output path."""
    graph = layered_dag([3, 3, 3], 5)
    graph.add_edge(("l0", 0), ("l2", 1), flow=0.9, frac=0.45, cost=-math.log(0.45))
    graph.add_edge("input", ("l1", 2), flow=0.8, frac=0.4, cost=-math.log(0.4))
    graph.add_edge(("dead", 0), ("l2", 0), flow=5.0, frac=1.0, cost=0.0)   # no path from the input reaches it
    for score in ("sum", "product", "bottleneck"):
        assert_same_ranking(graph, top_k_paths(graph, 10, score), brute_force(graph, score), 10, score)


def tiny_net_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(80, 6), nn.ReLU(), nn.Linear(6, 3)).eval().double()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zplus = ZPlus(epsilon=1e-9, bias=False)  # non-negative flows, fracs in (0, 1]
    explainer = lrpc.compile(model, rules=lrpc.Rules(conv=zplus, linear=zplus, pool=zplus), example_input=x)
    return relevance_graph(explainer, x, max_in_edges=None)


def test_sum_with_k1_is_networkx_longest_path_on_a_relevance_graph():
    graph = tiny_net_graph()
    (best, score), = top_k_paths(graph, 1, "sum")
    assert best == nx.dag_longest_path(graph, weight="flow")
    assert score == pytest.approx(nx.dag_longest_path_length(graph, weight="flow"), rel=1e-12)


def test_product_order_is_networkx_shortest_simple_paths_on_costs():
    graph = tiny_net_graph()
    k = 25
    got = top_k_paths(graph, k, "product")
    expected = list(itertools.islice(nx.shortest_simple_paths(graph, "input", "output", weight="cost"), k))
    assert [p for p, _ in got] == expected
    for path, score in got:
        cost = nx.path_weight(graph, path, weight="cost")
        assert score == pytest.approx(math.exp(-cost), rel=1e-9)


def test_relevance_graph_paths_match_brute_force():
    graph = tiny_net_graph()
    for score in ("sum", "product", "bottleneck"):
        assert_same_ranking(graph, top_k_paths(graph, 15, score), brute_force(graph, score), 15, score)


def test_bad_arguments_are_refused():
    graph = layered_dag([2], 0)
    with pytest.raises(LrpcError, match="score"):
        top_k_paths(graph, 1, "mean")
    with pytest.raises(LrpcError, match="k must"):
        top_k_paths(graph, 0)
    with pytest.raises(LrpcError, match="no node"):
        top_k_paths(graph, 1, source="nowhere")
    cyclic = nx.DiGraph([("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")])
    with pytest.raises(LrpcError, match="acyclic"):
        top_k_paths(cyclic, 1)
