"""Explanation quality on the procedural ground-truth task, Table-1 style (``make quality``).

    python benchmarks/quality.py --quick                        # 100 test scenes, a few minutes on 2 cores
    python benchmarks/quality.py --json out/quality.json        # 1000 test scenes
    python benchmarks/quality.py --model vit --quick            # the shipped ViT: transformer presets and baselines
    python benchmarks/quality.py --folder imagenet/val --arch resnet50 --weights resnet50.pth \
        --per-class 1 --device cuda                             # the paper's setting, with your data

Every method explains the predicted class of the shipped shapes ResNet (or, with ``--model vit``, ViT) on the
fixed test split and is scored by Insertion / Deletion / ID under two protocols side by side:

- ``otsuki2024``: the authors' evaluation (black canvas, 500 px per step at 224x224 scaled to the same fraction
  of the image, inclusive ties, no 0 % frame, softmax of the ground-truth class, all images);
- ``fair``: random tie-breaks averaged over 3 seeds, 1 % steps with the 0 % frame, softmax of the explained
  class, correctly classified images only (logit ID reported too);

plus ID under ``fair`` with the counterfactual canvas (the scene rendered without the object, which only
this benchmark can offer), relevance mass and rank accuracy and the pointing game against the object masks,
and the share of pixels tied at each map's minimum (what inclusive ties feed on).

With ``--folder`` the same table is computed on a class-folder dataset (ImageNet-val, CUB) with the paper's
preprocessing and class-balanced sampling (seed 42 as in the authors' code); there are no masks or
counterfactuals there, so only the two Insertion/Deletion protocols are reported.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch.fx.experimental.optimization import fuse
from tqdm import tqdm

import lrpc
from lrpc.baselines import CAM_METHODS, explain_baseline
from lrpc.data import (GROUNDTRUTH_ARCHITECTURES, GROUNDTRUTH_TASKS, ImageFolderDataset, balanced_sample,
                       groundtruth_model, groundtruth_scenes, normalize)
from lrpc.metrics import (insertion_deletion, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                          resolve_protocol)
from lrpc.models import load_weights

EXPLAIN_BATCH = 50
SCORE_BATCH = 10  # images per insertion_deletion call: the unit of progress


@dataclass(frozen=True)
class Method:
    name: str
    explain: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def lrpc_method(preset: str, quantize: int | None = None, sign: str = "signed", smooth=None,
                **options: float) -> Method:
    label = (f"lrpc {preset}" + view_label(sign, smooth) + (f" + HQ{quantize}" if quantize else "")
             + "".join(f" {name.removesuffix('_gamma')} γ={value}" for name, value in options.items()))

    def explain(model, images, targets, masks):
        explainer = lrpc.compile(model, rules=lrpc.preset(preset, **options), example_input=images[:1])
        return torch.cat([explainer(images[i:i + EXPLAIN_BATCH], target=targets[i:i + EXPLAIN_BATCH])
                          .heatmap(quantize=quantize, sign=sign, smooth=smooth)
                          for i in range(0, len(images), EXPLAIN_BATCH)])
    return Method(label, explain)


def view_label(sign: str, smooth) -> str:
    """'' for the raw map, else e.g. ' · absolute σ=auto' (names of the views in the tables)."""
    parts = (([] if sign == "signed" else [sign])
             + ([] if smooth is None else [f"σ={smooth}"]))
    return " · " + " ".join(parts) if parts else ""


def baseline_method(name: str) -> Method:
    # Score-CAM and Ablation-CAM run the model once per channel of the layer: all of them in one batch here.
    options = {"batch_size": 256} if name in ("scorecam", "ablationcam") else {}

    def explain(model, images, targets, masks):
        return torch.cat([explain_baseline(name, model, images[i:i + EXPLAIN_BATCH], targets[i:i + EXPLAIN_BATCH],
                                           **options, **({"masks": masks[i:i + EXPLAIN_BATCH]} if name == "oracle"
                                                         else {}))
                          for i in range(0, len(images), EXPLAIN_BATCH)])
    return Method(name, explain)


TABLE2_PRESETS = ("otsuki2024", "otsuki2024-i", "otsuki2024-ii", "otsuki2024-iii")
# One point of LXT's ViT γ grid (conv γ in {0.1, 0.25, 100} x linear γ in {0, 0.01, 0.05, 0.1, 1}; LXT has no default)
VIT_GAMMA = {"conv_gamma": 0.25, "linear_gamma": 0.05}
METHODS = {  # rows per shipped ground-truth architecture
    "resnet": ([lrpc_method(p, q) for p in TABLE2_PRESETS for q in (None, 8)]
               + [lrpc_method(p) for p in ("default", "otsuki2024-mixture", "epsilon-plus")]
               + [baseline_method(b) for b in (*CAM_METHODS, "integrated_gradients", "guided_backprop", "deeplift",
                                               "lrp_epsilon", "random", "sobel", "oracle")]),
    "vit": ([lrpc_method(p, **gamma) for p in ("attnlrp", "cp-lrp", "default") for gamma in ({}, VIT_GAMMA)]
            + [baseline_method(b) for b in ("attention_rollout", "chefer2021", "integrated_gradients",
                                            "input_x_gradient", "random", "sobel", "oracle")]),
}

# The views table (--views): the sign views with and without the stem blur per preset family, blur widths
# around "auto", and the baselines each family is compared with; most telling rows first (results are written
# after every row).
VIEW_METHODS = {
    "resnet": ([baseline_method("gradcam")]
               + [lrpc_method(p, smooth=smooth) for p in ("otsuki2024", "epsilon-plus", "default")
                  for smooth in (None, "auto")]
               + [lrpc_method(p, sign=sign, smooth=smooth) for sign, smooth in
                  (("absolute", "auto"), ("positive", "auto"), ("absolute", None))
                  for p in ("otsuki2024", "epsilon-plus")]
               + [lrpc_method(p, smooth=sigma) for sigma in (4.0, 1.5) for p in ("otsuki2024", "epsilon-plus")]),
    "vit": ([baseline_method("attention_rollout")]
            + [lrpc_method("attnlrp", sign=sign, smooth=smooth) for sign, smooth in
               (("signed", None), ("absolute", None), ("signed", "auto"), ("absolute", "auto"))]
            + [lrpc_method("default", sign=sign, smooth=smooth) for sign, smooth in
               (("signed", None), ("signed", "auto"), ("absolute", None))]
            + [lrpc_method("cp-lrp", sign=sign, smooth=smooth) for sign, smooth in
               (("signed", None), ("absolute", None), ("absolute", "auto"))]
            + [lrpc_method("attnlrp", sign="positive", smooth="auto"), baseline_method("chefer2021")]),
}
# The texture task's residual CNN gets the ResNet's rows.
METHODS["texture-resnet"] = METHODS["resnet"]
VIEW_METHODS["texture-resnet"] = VIEW_METHODS["resnet"]
# The views table scores the two protocols the recommendation rests on: fair, black and counterfactual canvas.
VIEW_PROTOCOLS = ("fair", "fair-counterfactual")

PROTOCOLS = {
    "otsuki2024": resolve_protocol("otsuki2024"),
    "fair": resolve_protocol("fair"),
    # One tie-break seed keeps this extra column affordable in --quick.
    "fair-counterfactual": resolve_protocol("fair", insertion_canvas="counterfactual",
                                            deletion_canvas="counterfactual", tie_seeds=(0,)),
}
COLUMNS = [  # (header, metric key)
    ("otsuki Ins ↑", "otsuki2024.insertion"), ("otsuki Del ↓", "otsuki2024.deletion"),
    ("otsuki ID ↑", "otsuki2024.id"), ("fair Ins ↑", "fair.insertion"), ("fair Del ↓", "fair.deletion"),
    ("fair ID ↑", "fair.id"), ("fair logit ID ↑", "fair.logit_id"), ("counterfactual ID ↑", "fair-counterfactual.id"),
    ("mass ↑", "mass_accuracy"), ("rank ↑", "rank_accuracy"), ("pointing ↑", "pointing_game"),
    ("tied@min", "tied_at_min_fraction"),
]


def score(model, images, labels, targets, maps, counterfactuals=None, masks=None, only=tuple(PROTOCOLS)) -> dict:
    n = len(images)
    per_image: dict[str, list[torch.Tensor]] = {}
    evaluated: dict[str, list[torch.Tensor]] = {}
    protocols = {name: p for name, p in PROTOCOLS.items()
                 if name in only and (counterfactuals is not None or "counterfactual" not in name)}
    for protocol_name, protocol in protocols.items():
        for start in range(0, n, SCORE_BATCH):
            part = slice(start, start + SCORE_BATCH)
            result = insertion_deletion(model, images[part], maps[part], protocol=protocol, labels=labels[part],
                                        targets=targets[part],
                                        counterfactuals=None if counterfactuals is None else counterfactuals[part])
            evaluated.setdefault(protocol_name, []).append(result.evaluated)
            for score_name in protocol.scores:
                prefix = "" if score_name == protocol.scores[0] else f"{score_name}_"
                for kind in ("insertion", "deletion", "id"):
                    per_image.setdefault(f"{protocol_name}.{prefix}{kind}", []).append(result.auc(kind, score_name))
            if protocol_name == "otsuki2024":
                per_image.setdefault("tied_at_min_fraction", []).append(result.tied_at_min_fraction)
    row: dict = {"per_image": {}}
    for key, values in per_image.items():
        keep = torch.cat(evaluated[key.split(".")[0]]) if "." in key else torch.ones(n, dtype=torch.bool)
        kept = torch.cat(values)[keep].double()
        row[key] = float(kept.mean())
        if key.endswith(".id"):
            # Per-image IDs (NaN where the protocol left the image out) allow paired comparisons of methods.
            row[f"{key}_se"] = float(kept.std() / math.sqrt(len(kept)))
            row["per_image"][key] = torch.cat(values).tolist()
    row["fair.images"] = int(torch.cat(evaluated["fair"]).sum())
    if masks is not None:
        maps, masks = maps.cpu(), masks.cpu()
        row["mass_accuracy"] = float(relevance_mass_accuracy(maps, masks).nanmean())
        row["rank_accuracy"] = float(relevance_rank_accuracy(maps, masks).mean())
        row["pointing_game"] = float(pointing_game(maps, masks).mean())
    return row


LEGEND = {
    "otsuki": "otsuki = protocol `otsuki2024`",
    "fair": "fair = protocol `fair` (softmax, logit ID alongside; correctly classified images only)",
    "counterfactual": "counterfactual = `fair` with the scene rendered without the object as canvas",
    "mass": "mass / rank = relevance mass / rank accuracy",
    "pointing": "pointing = pointing game (15/224 of the side)",
    "tied@min": "tied@min = mean share of pixels tied at the map's minimum",
}


def markdown(results: dict[str, dict], description: str) -> str:
    columns = [(header, key) for header, key in COLUMNS if any(key in row for row in results.values())]
    header = ("| Method | " + " | ".join(h for h, _ in columns) + " |\n"
              + "|---|" + "---:|" * len(columns) + "\n")
    lines = [f"| {name} | " + " | ".join(_cell(row.get(key)) for _, key in columns) + " |"
             for name, row in results.items()]
    shown = {header.split()[0] for header, _ in columns}
    legend = "; ".join(text for prefix, text in LEGEND.items() if prefix in shown)
    return header + "\n".join(lines) + f"\n\n{description} {legend}.\n"


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


@dataclass(frozen=True)
class Benchmark:
    model: torch.nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    counterfactuals: torch.Tensor | None
    masks: torch.Tensor | None
    source: str


def groundtruth_benchmark(n: int, arch: str) -> Benchmark:
    scenes = groundtruth_scenes(arch, "test", n)
    return Benchmark(groundtruth_model(arch), normalize(scenes.images), torch.from_numpy(scenes.labels),
                     normalize(scenes.counterfactuals), torch.from_numpy(scenes.masks),
                     f"{n} scenes of the {GROUNDTRUTH_TASKS[arch]} task's test split, "
                     f"lrpc.data.groundtruth_model({arch!r})")


def folder_benchmark(root: Path, arch: str, weights: Path, per_class: int, seed: int) -> Benchmark:
    dataset = ImageFolderDataset(root)
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise SystemExit(f"--arch must name a torchvision classification model (resnet50, vgg16, ...), got {arch!r}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(dataset.classes))
    model = load_weights(model, weights).eval()
    chosen = balanced_sample(dataset.labels, per_class, seed)
    items = [dataset[i] for i in tqdm(chosen, desc="loading images", file=sys.stderr)]
    return Benchmark(model, torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items]),
                     None, None, f"{len(chosen)} images of {root} ({per_class} per class, seed {seed}), {arch} "
                     f"with {weights}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 scenes instead of 1000")
    parser.add_argument("--images", type=int, help="number of test scenes (overrides --quick)")
    parser.add_argument("--model", choices=GROUNDTRUTH_ARCHITECTURES, default="resnet",
                        help="the shipped ground-truth model to explain, with its rows")
    parser.add_argument("--folder", type=Path, help="class-folder dataset root (root/<class>/<image>) instead")
    parser.add_argument("--arch", default="resnet50", help="with --folder: a torchvision model name")
    parser.add_argument("--weights", type=Path, help="with --folder: torchvision-style checkpoint")
    parser.add_argument("--per-class", type=int, default=1, help="with --folder: images per class (CUB: 5)")
    parser.add_argument("--seed", type=int, default=42, help="with --folder: sampling seed")
    parser.add_argument("--views", action="store_true",
                        help="the views table (preset x sign x smoothing) instead of the methods table")
    parser.add_argument("--methods", help="comma-separated rows to run (default: all), e.g. 'lrpc otsuki2024,gradcam'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write method -> metric -> value here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()

    if args.folder:
        if args.weights is None:
            raise SystemExit("--folder needs --weights (a checkpoint for --arch)")
        bench = folder_benchmark(args.folder, args.arch, args.weights, args.per_class, args.seed)
    else:
        bench = groundtruth_benchmark(args.images or (100 if args.quick else 1000), args.model)
    device = torch.device(args.device)
    model, images, labels = bench.model.to(device), bench.images.to(device), bench.labels
    counterfactuals = None if bench.counterfactuals is None else bench.counterfactuals.to(device)
    masks = None if bench.masks is None else bench.masks.to(device)
    with torch.no_grad():
        predicted = torch.cat([model(images[i:i + EXPLAIN_BATCH]).argmax(1).cpu()
                               for i in range(0, len(images), EXPLAIN_BATCH)])
    # Scoring runs ~10^6 forward passes; a copy with batch norms folded into the convolutions computes the same
    # function (to float rounding) faster. Explanations still see the model itself.
    scoring_model = fuse(model)

    results: dict[str, dict[str, float]] = {}
    table = VIEW_METHODS if args.views else METHODS
    methods = [m for m in table["resnet" if args.folder else args.model] if masks is not None or m.name != "oracle"]
    if args.methods:
        wanted = [name.strip() for name in args.methods.split(",")]
        unknown = sorted(set(wanted) - {m.name for m in methods})
        if unknown:
            raise SystemExit(f"unknown --methods {unknown}; rows: {[m.name for m in methods]}")
        methods = [m for m in methods if m.name in wanted]
    for method in tqdm(methods, desc="methods", file=sys.stderr):
        t0 = time.perf_counter()
        maps = method.explain(model, images, predicted.to(device), masks).detach().float()
        t1 = time.perf_counter()
        results[method.name] = score(scoring_model, images, labels, predicted, maps, counterfactuals, masks,
                                     only=VIEW_PROTOCOLS if args.views else tuple(PROTOCOLS))
        results[method.name]["explain_seconds"] = t1 - t0
        results[method.name]["score_seconds"] = time.perf_counter() - t1
        if args.json:   # after every row: a long run interrupted keeps what it measured
            write_json(args.json, bench, labels, predicted, results, masks is not None)

    n_correct = int((predicted == labels).sum())
    description = f"{bench.source}; {n_correct} of {len(labels)} classified correctly."
    print(markdown(results, description))
    print(f"total {time.perf_counter() - started:.0f} s with {args.threads} threads on {device}", file=sys.stderr)


def write_json(path: Path, bench: Benchmark, labels, predicted, results: dict, with_masks: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    protocols = {name: p.as_dict() for name, p in PROTOCOLS.items() if with_masks or "counterfactual" not in name}
    payload = {"source": bench.source, "images": len(labels), "correct": int((predicted == labels).sum()),
               "protocols": protocols, "methods": results}
    path.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
