"""``lrpc concepts IMAGE --model M --layer L [--job JOB] -o FIGURE.png``: CRP's glocal figure for one image.

The top concepts (channels of the layer, ranked by their relevance for the explained class), each as its
conditional heatmap beside its reference crops from a job made with ``explain-dataset --concepts L``
(``lrpc.crp.figures``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..compiler import compile as compile_explainer
from ..crp.figures import glocal_concepts, glocal_figure
from ..data.folder import preprocess_image
from ..data.normalization import denormalize
from ..errors import LrpcError
from ..presets import PRESETS
from . import add_model_arguments, load_model, open_image
from ..models.loading import NORMALIZATIONS, input_normalization
from ..presets import preset_for_input
from .explain import _target


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "concepts", help="write CRP's glocal figure: an image's top concepts with their reference examples",
        description="Rank the channels of LAYER by their relevance for the explained class, and draw the top K "
                    "as conditional heatmaps beside their reference crops from JOB (explain-dataset --concepts "
                    "LAYER).")
    parser.add_argument("image", metavar="IMAGE", help="the image to explain")
    add_model_arguments(parser)
    parser.add_argument("--layer", required=True, metavar="LAYER",
                        help="module path (e.g. layer4, features.28) or node name of the concept layer")
    parser.add_argument("--job", metavar="JOB", help="an explain-dataset job made with --concepts LAYER: its "
                                                     "reference examples go beside each concept")
    parser.add_argument("-k", "--concepts", type=int, default=6, metavar="K", help="concepts shown (default 6)")
    parser.add_argument("--crops", type=int, default=8, metavar="N", help="reference crops per concept (default 8)")
    parser.add_argument("--mode", choices=("relevance", "activation"), default="relevance",
                        help="reference examples by relevance (CRP's default) or by activation")
    parser.add_argument("--statistic", choices=("sum", "max"), default="sum",
                        help="rank reference images by the channel's sum (default) or max over positions")
    parser.add_argument("--rules", choices=list(PRESETS), metavar="PRESET",
                        help="rule preset (default: the job's, else default)")
    parser.add_argument("--target", default="pred", metavar="CLASS|pred", help="class to explain (default pred)")
    parser.add_argument("--input-size", type=int, metavar="S", help="model input side (default: the job's, else "
                                                                    "the model's own)")
    parser.add_argument("--resize", type=int, metavar="R", help="shorter side before the centre crop")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="model", help="pixel normalisation")
    parser.add_argument("--root", metavar="ROOT", help="the job's dataset folder, if it moved")
    parser.add_argument("-o", "--output", required=True, metavar="PNG", help="the figure to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = {}
    if args.job is not None:
        try:
            config = json.loads((Path(args.job) / "job.json").read_text())["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise LrpcError(f"--job {args.job} is not an explain-dataset job ({exc})") from exc
    loaded = load_model(args.model, args.weights)
    size = args.input_size or config.get("input_size") or loaded.input.size
    resize = args.resize or config.get("resize") or round(size * 256 / 224)
    mean, std = input_normalization(args.normalize, loaded)
    rules = preset_for_input(args.rules or config.get("rules", "default"), mean, std)
    explainer = compile_explainer(loaded.model, rules, example_input=torch.zeros(1, 3, size, size))
    x = preprocess_image(open_image(args.image), resize, size, mean, std)[None]
    target = _target(args.target, loaded.input.class_names)
    concepts = glocal_concepts(explainer, x, args.layer, k=args.concepts, target=target, job=args.job,
                               crops=args.crops, mode=args.mode, statistic=args.statistic, root=args.root)
    exp = explainer(x, target)
    image = denormalize(x, mean, std).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    path = glocal_figure(image, exp.heatmap()[0], concepts, args.output, layer=args.layer,
                         title=f"class {int(exp.target[0])}")
    print(path)
    return 0
