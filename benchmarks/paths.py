"""Speed of path analysis on VGG-16 (random weights) at 224x224, one image, on the CPU.

Goal (issue 6): all channel flows in about one backward pass; the 50 best paths in under a second.
Prints, for each step, the median wall-clock and CPU (process) time of ``--repeats`` runs and their ratios to a
plain input-gradient pass (forward + backward of the target logit with respect to the input only) measured in
the same process. On a machine shared with other jobs the CPU ratio is the steadier of the two:

    python benchmarks/paths.py [--threads 2] [--size 224] [--rules montavon-vgg16] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch
import torchvision

import lrpc
from lrpc.paths import path_heatmap, relevance_graph, top_k_paths
from lrpc.paths.analysis import Analysis
from lrpc.paths.graph import build_graph
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rules", default="montavon-vgg16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # requires_grad off: the reference pass computes input gradients only
    model = torchvision.models.vgg16(weights=None).eval().requires_grad_(False)
    x = torch.randn(1, 3, args.size, args.size)
    explainer = lrpc.compile(model, rules=args.rules, example_input=x)
    analysis = Analysis.of(explainer)
    target = int(model(x).argmax())

    def gradient_pass():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[0, target], xg)

    trace = analysis.trace(x, target)
    graph = build_graph(analysis, trace, "relevance", 16)
    paths = top_k_paths(graph, args.k)

    steps = {
        "input-gradient pass (reference)": gradient_pass,
        "LRP explanation (explainer(x))": lambda: explainer(x, target),
        "probe trace (all activations + relevances)": lambda: analysis.trace(x, target),
        "all flows (given the trace)": lambda: analysis.flows(trace),
        "networkx graph (given the trace)": lambda: build_graph(analysis, trace, "relevance", 16),
        "relevance_graph end to end": lambda: relevance_graph(explainer, x, target),
        f"top_k_paths k={args.k} (sum)": lambda: top_k_paths(graph, args.k, "sum"),
        f"top_k_paths k={args.k} (product)": lambda: top_k_paths(graph, args.k, "product"),
        f"{args.k} path heatmaps (given the trace)": lambda: analysis.path_relevance(trace, [p for p, _ in paths]),
        f"{args.k} path heatmaps, union mask": lambda: path_heatmap(explainer, x, paths, target, "union"),
    }
    gradient_pass()  # warm-up
    print(f"VGG-16 {args.size}x{args.size}, rules {args.rules}, {args.threads} threads; "
          f"graph: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges")
    print(f"  {'step':48s} {'wall ms':>9s} {'x grad':>7s} {'CPU ms':>9s} {'x grad':>7s}")
    reference = None
    for name, fn in steps.items():
        wall, cpu = median_seconds(fn, args.repeats)
        reference = reference or (wall, cpu)
        print(f"  {name:48s} {wall * 1000:9.1f} {wall / reference[0]:7.2f} {cpu * 1000:9.1f} {cpu / reference[1]:7.2f}")


if __name__ == "__main__":
    main()
