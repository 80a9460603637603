"""``lrpc paths IMAGE --model M --k 5 -o DIR``: channel relevance paths of one image, as in the VGG-16 paper.

Writes into DIR:
- ``graph.png``: the channel relevance graph with the top-K paths highlighted;
- ``paths.png``: the image, the full heatmap and the K-n path heatmaps for every K of ``--ks``;
- ``relevance_vs_activation.png``: K-path heatmaps with paths ranked by relevance and by activation;
- ``select_k.png``: MSE and SMAPE of the K-path heatmap against the full one, with the chosen K;
- ``deconvnet.png``: Zeiler–Fergus reconstructions of the top paths' channels at their last conv layer;
- ``paths.json``: target, rules, the top-K paths with scores, the MSE/SMAPE curves and the chosen K.
"""
from __future__ import annotations

import argparse
import json


from .. import viz
from ..compiler import compile as compile_explainer
from ..data.folder import preprocess_image
from ..data.normalization import denormalize
from ..errors import LrpcError
from ..paths import deconvnet, path_heatmap, relevance_graph, select_k, top_k_paths
from ..paths.figures import plot_graph, plot_k_curves, plot_k_path_panels, plot_relevance_vs_activation
from ..paths.heatmap import DEFAULT_KS
from ..paths.topk import SCORES
from ..presets import PRESETS
from . import add_model_arguments, load_model, open_image, prepare_output_dir
from ..presets import preset_for_input as rules_for_input


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--ks takes comma-separated positive ints, got {text!r}") from exc
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--ks takes comma-separated positive ints, got {text!r}")
    return ks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "paths", help="channel relevance graph, top-K paths and their heatmaps for one image",
        description="Build the channel relevance graph of one image, find its K best relevance paths, and "
                    "write the graph, the K-n path heatmaps, the relevance- vs activation-based comparison, the "
                    "MSE/SMAPE curves for choosing K, deconvnet reconstructions and a JSON summary.")
    parser.add_argument("image", metavar="IMAGE", help="the image file")
    add_model_arguments(parser)
    parser.add_argument("--rules", default="montavon-vgg16", choices=list(PRESETS), metavar="PRESET",
                        help="rule preset (default: montavon-vgg16, the paper's)")
    parser.add_argument("--k", type=int, default=5, help="paths to highlight and compare (default 5)")
    parser.add_argument("--ks", type=_ks, default=list(DEFAULT_KS), metavar="K1,K2,...",
                        help="K values for the MSE/SMAPE curves (default 1,2,3,5,10,20,50)")
    parser.add_argument("--score", choices=SCORES, default="sum", help="path score (default: sum of flows)")
    parser.add_argument("--target", type=int, metavar="CLASS", help="class index to explain (default: predicted)")
    parser.add_argument("--max-in-edges", type=int, default=16, metavar="N",
                        help="strongest incoming edges kept per channel in the graph (default 16)")
    parser.add_argument("--input-size", type=int, metavar="S",
                        help="side of the square model input (default: the model's own, else 224)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    parser.set_defaults(func=run)


def _last_conv_channels(explainer, paths) -> tuple[str | None, list[int]]:
    """The last conv layer the best path crosses, and the channels the given paths use there."""
    convs = [node for node in paths[0][0][1:-1] if explainer.plans[node[0]].info.map == "conv"]
    if not convs:
        return None, []
    layer = convs[-1][0]
    channels = [c for p, _ in paths for name, c in p[1:-1] if name == layer]
    return layer, list(dict.fromkeys(channels))


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise LrpcError(f"--k must be a positive integer, got {args.k}")
    if args.max_in_edges < 1:
        raise LrpcError(f"--max-in-edges must be a positive integer, got {args.max_in_edges}")
    image = open_image(args.image)
    loaded = load_model(args.model, args.weights)
    out = prepare_output_dir(args.output)
    size = args.input_size or loaded.input.size
    mean, std = loaded.input.mean, loaded.input.std
    x = preprocess_image(image, round(size * 256 / 224), size, mean, std).unsqueeze(0)
    explainer = compile_explainer(loaded.model, rules_for_input(args.rules, mean, std), example_input=x)
    pixels = denormalize(x, mean, std)[0].clamp(0, 1).permute(1, 2, 0).numpy()

    selection = select_k(explainer, x, args.ks, args.target, args.score, max_in_edges=args.max_in_edges)
    target = selection.graph.graph["target"]
    best = selection.paths[:args.k]
    plot_graph(selection.graph, best, out / "graph.png")
    plot_k_path_panels(pixels, selection, out / "paths.png")
    plot_k_curves(selection, out / "select_k.png")

    activation_graph = relevance_graph(explainer, x, target, mode="activation", max_in_edges=args.max_in_edges)
    activation_paths = top_k_paths(activation_graph, args.k, args.score)
    plot_relevance_vs_activation(pixels, path_heatmap(explainer, x, best, target, "sum"),
                                 path_heatmap(explainer, x, activation_paths, target, "sum"),
                                 out / "relevance_vs_activation.png", args.k, full=selection.full)

    layer, channels = _last_conv_channels(explainer, best)
    if layer is not None:
        reconstructions = deconvnet(explainer, x, layer, channels, mode="max").sum(1)
        viz.panels(pixels, {f"{layer} ch {c}": m for c, m in zip(channels, reconstructions)},
                   out / "deconvnet.png")

    summary = {
        "image": str(args.image), "model": args.model, "weights": args.weights, "rules": args.rules,
        "input_size": size, "target": target, "score": args.score,
        "logit": float(selection.graph.nodes["output"]["activation"]),
        "paths": [{"nodes": [n if isinstance(n, str) else list(n) for n in p], "score": s} for p, s in best],
        "activation_paths": [{"nodes": [n if isinstance(n, str) else list(n) for n in p], "score": s}
                             for p, s in activation_paths],
        "select_k": {"ks": selection.ks, "mse": selection.mse, "smape_percent": selection.smape,
                     "coverage": selection.coverage, "chosen": selection.chosen,
                     "criterion": selection.criterion},
        "deconvnet": {"layer": layer, "channels": channels},
        "layers": {name: explainer.plans[name].module for name in selection.graph.graph["layers"][1:-1]},
    }
    (out / "paths.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.image}: target {target}, best path score {best[0][1]:.4g}, chosen K = {selection.chosen} "
          f"({selection.criterion}) -> {out}")
    return 0
