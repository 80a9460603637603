"""``lrpc explain-dataset ROOT -o JOB --model M``: every image of a folder into one zarr store and one table.

The same command runs alone or under ``torchrun --nproc-per-node G [--nnodes ...] -m lrpc explain-dataset``;
rerun it after an interruption to finish the missing units. The engine is ``lrpc.dataset_jobs``; docs/datasets.md
describes the job folder.
"""
from __future__ import annotations

import argparse
import os

from ..dataset_jobs.engine import METRICS, describe, explain_dataset
from ..dataset_jobs.store import DTYPES
from ..metrics.perturbation import PROTOCOLS
from ..presets import PRESETS
from . import add_model_arguments
from ..models.loading import NORMALIZATIONS
from .explain import add_view_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain-dataset", help="explain a whole image folder into a zarr store and a parquet table",
        description="Explain every image under ROOT (class folders, label = folder, or a folder of images) into "
                    "JOB/maps.zarr (heatmaps [N, H, W]) and JOB/table.parquet (one row per image). Runs alone or "
                    "under torchrun (every rank does its share); rerunning resumes an interrupted job.")
    parser.add_argument("root", metavar="ROOT", help="folder of class folders (root/<class>/<image>) or of images")
    parser.add_argument("-o", "--output", required=True, metavar="JOB", help="job folder (created)")
    add_model_arguments(parser)
    parser.add_argument("--rules", default="default", choices=list(PRESETS), metavar="PRESET",
                        help=f"rule preset (default: default); one of {', '.join(PRESETS)}")
    parser.add_argument("--target", default="pred", metavar="pred|label|N",
                        help="class to explain: the predicted class (default), the folder's label, or index N")
    parser.add_argument("--unit", type=int, default=32, metavar="U",
                        help="images per unit: one batch, one zarr chunk, one resumable step (default 32)")
    parser.add_argument("--relevance", action="store_true",
                        help="also store the input relevance [N, C, H, W] (the heatmap is its channel sum)")
    add_view_arguments(parser, "stored (and scored by --metrics)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="stored map precision; float16 stores each map divided by its max |value|, with "
                             "the scale in <array>_scale")
    parser.add_argument("--metrics", default="", metavar="LIST",
                        help=f"comma-separated perturbation metrics per image: {','.join(METRICS)}")
    parser.add_argument("--protocol", default="fair", choices=list(PROTOCOLS),
                        help="protocol of the metrics (lrpc.metrics.PROTOCOLS; default fair)")
    parser.add_argument("--concepts", default="", metavar="LAYER[,LAYER]",
                        help="record reference examples for every channel of these layers (module paths or node "
                             "names): the top images by the channel's relevance and activation, with the "
                             "receptive-field box of its maximum, in JOB/concepts.parquet")
    parser.add_argument("--top", type=int, default=16, metavar="N",
                        help="reference examples kept per channel, mode and statistic (default 16)")
    parser.add_argument("--compile", action="store_true", help="run the explainer through torch.compile")
    parser.add_argument("--input-size", type=int, metavar="S",
                        help="side of the square model input (default: the model's own, else 224)")
    parser.add_argument("--resize", type=int, metavar="R",
                        help="shorter image side before the centre crop (default S*256/224)")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="model",
                        help="pixel normalisation: the model's declared mean/std (default), imagenet, or none")
    parser.add_argument("--device", metavar="DEVICE",
                        help="cpu, cuda (this rank's GPU: cuda:LOCAL_RANK) or a torch device; default: the GPU "
                             "when there is one")
    parser.add_argument("--loader-threads", type=int, default=4, metavar="T",
                        help="threads decoding the next unit's images while one is explained (default 4)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard a job of other settings in JOB and start over (default: refuse)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = explain_dataset(
        args.root, args.output, model=args.model, weights=args.weights, rules=args.rules, target=args.target,
        unit=args.unit, relevance=args.relevance, sign=args.sign, smooth=args.smooth, quantize=args.quantize,
        metrics=args.metrics, protocol=args.protocol, dtype=args.dtype,
        compile=args.compile, input_size=args.input_size, resize=args.resize, normalize=args.normalize,
        device=args.device, overwrite=args.overwrite, progress=not args.quiet, loader_threads=args.loader_threads,
        concepts=args.concepts, top=args.top)
    if not args.quiet and _is_rank_zero():
        print(describe(summary, args.output))
    return 0


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"
