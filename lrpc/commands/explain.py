"""``lrpc explain IMAGES_OR_DIRS... --model M -o DIR``: heatmaps for image files.

Per image NAME it writes ``NAME_overlay.png`` (the map over the image), ``NAME_heatmap.png`` (the bare map),
``NAME_relevance.npy`` (the input relevance [C, H, W], float32) and ``NAME.json`` (prediction, probability,
start relevance, worst conservation error). Every input is checked before the model is compiled, so a bad
image, model, weights file or output directory fails at once with a message naming it. Tensor and audio files
(``.npy``, ``.pt``, ``.wav`` ...) are explained by ``explain_samples`` with the picture of their modality.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import modalities, viz
from ..compiler import compile as compile_explainer
from ..data.folder import IMAGE_EXTENSIONS, preprocess_image
from ..data.samples import SAMPLE_EXTENSIONS, is_sample_file
from ..data.normalization import denormalize
from ..errors import LrpcError
from ..imagenet_classes import IMAGENET_CLASSES, imagenet_class_index
from ..models.loading import NORMALIZATIONS, input_normalization
from ..presets import PRESETS, START_MODES, preset_for_input
from ..views import SIGNS
from . import add_model_arguments, explain_samples, load_model, open_image, prepare_output_dir



def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="write relevance heatmaps for images",
        description="Explain each image's prediction (or --target class) and write an overlay PNG, a heatmap "
                    "PNG, the relevance as .npy and a summary JSON per image into the output directory.")
    parser.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS",
                        help=f"image files, or directories searched recursively for {', '.join(IMAGE_EXTENSIONS)}; "
                             f"or tensor / audio files ({', '.join(SAMPLE_EXTENSIONS)}), one model input each "
                             "without the batch dimension (audio needs pip install 'lrpc[audio]')")
    add_model_arguments(parser)
    parser.add_argument("--rules", default="default", choices=list(PRESETS), metavar="PRESET",
                        help=f"rule preset (default: default); one of {', '.join(PRESETS)}")
    parser.add_argument("--start", choices=START_MODES, help="where relevance starts (default: the preset's); a "
                        "single-score model ([B] or [B, 1] output) takes score or sigmoid")
    parser.add_argument("--target", default="pred", metavar="CLASS|pred",
                        help="class to explain: 'pred' (the predicted class, default), an index, or a class name")
    add_view_arguments(parser, "in the PNGs (the .npy stays the raw relevance)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--input-size", type=int, metavar="S",
                        help="side of the square model input (default: the model's own, else 224)")
    parser.add_argument("--resize", type=int, metavar="R",
                        help="shorter image side before the centre crop (default: S*256/224, the ImageNet "
                             "protocol; R = S keeps the whole short side)")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="model",
                        help="pixel normalisation: the model's declared mean/std (default; ImageNet mean/std "
                             "for models that declare none), ImageNet mean/std, or none (pixels in [0, 1])")
    parser.add_argument("--cmap", choices=tuple(viz.COLORMAPS), default="signed", help="heatmap colormap")
    parser.add_argument("--alpha", type=float, default=0.7, help="overlay opacity at the strongest relevance")
    parser.add_argument("--modality", choices=modalities.MODALITIES,
                        help="picture for tensor and audio files (default: guessed from the sample's shape: [T] "
                             "audio, [C, T] one row per channel, [C, H, W] image, [C, T, H, W] video with 3 "
                             "channels, else volume)")
    parser.add_argument("--sample-rate", type=float, metavar="HZ", help="time axis of signal pictures in seconds "
                        "(audio files bring their own)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-image lines")
    parser.set_defaults(func=run)


def add_view_arguments(parser, where: str) -> None:
    """--sign, --smooth and --quantize: how the map is read (``Explanation.heatmap``; docs/views.md)."""
    parser.add_argument("--sign", choices=SIGNS, default="signed",
                        help=f"which part of the map to show {where}: signed R (default), positive max(R, 0) or "
                             "absolute |R|")
    parser.add_argument("--smooth", type=smooth_argument, metavar="SIGMA|auto",
                        help=f"Gaussian blur of the map {where}: sigma in pixels, or 'auto' (from the model's "
                             "stem); default none")
    parser.add_argument("--quantize", type=int, metavar="Q",
                        help=f"Heat Quantization with Q levels {where}, after sign and blur")


def smooth_argument(text: str) -> float | str:
    """``--smooth``: 'auto' or a non-negative number of pixels."""
    if text == "auto":
        return text
    try:
        sigma = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sigma in pixels or 'auto', got {text!r}") from None
    if not sigma >= 0 or sigma == float("inf"):
        raise argparse.ArgumentTypeError(f"sigma must be a finite number >= 0, got {text!r}")
    return sigma


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given, directories expanded (recursively, sorted) to their image files."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file()
                           and p.suffix.lower() in IMAGE_EXTENSIONS + SAMPLE_EXTENSIONS)
            if not files:
                raise LrpcError(f"directory {item} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no "
                                f"tensor or audio files ({', '.join(SAMPLE_EXTENSIONS)})")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise LrpcError(f"image {item} does not exist")
    return found


def output_names(paths: Sequence[Path]) -> list[str]:
    """One file-name stem per image; repeated stems (a/cat.png, b/cat.png) get -2, -3, ..."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def _target(text: str, class_names: Sequence[str] | None) -> int | None:
    if text == "pred":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    if class_names is IMAGENET_CLASSES:
        return imagenet_class_index(text)
    if class_names is not None:
        lowered = [name.lower() for name in class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
    known = f"; classes: {', '.join(class_names)}" if class_names and len(class_names) <= 50 else ""
    raise LrpcError(f"--target {text!r} is neither 'pred', a class index, nor a class name of this model{known}")


def _progress(batches: list, quiet: bool):
    if quiet:
        return batches
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety: without tqdm, count batches on stderr
        return _plain_progress(batches)
    return tqdm(batches, desc="explaining", unit="batch", file=sys.stderr)


def _plain_progress(batches: list):
    for index, batch in enumerate(batches, 1):
        print(f"explaining batch {index}/{len(batches)}", file=sys.stderr)
        yield batch


def _class_name(index: int, class_names: Sequence[str] | None) -> str | None:
    return class_names[index] if class_names is not None and index < len(class_names) else None


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LrpcError(f"--device {name!r} is not a device torch knows: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LrpcError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA device")
    return device


def run(args: argparse.Namespace) -> int:
    device = _device(args.device)
    for option, value in (("--batch-size", args.batch_size), ("--input-size", args.input_size),
                          ("--resize", args.resize)):
        if value is not None and value < 1:
            raise LrpcError(f"{option} must be a positive integer, got {value}")
    if args.quantize is not None and args.quantize < 2:
        raise LrpcError(f"--quantize needs at least 2 levels, got {args.quantize}")
    if not 0.0 <= args.alpha <= 1.0:
        raise LrpcError(f"--alpha must be in [0, 1], got {args.alpha}")

    images = collect_images(args.images)
    if any(map(is_sample_file, images)):
        if not all(map(is_sample_file, images)):
            raise LrpcError("explain images or tensor/audio files in one call, not both")
        return explain_samples.run(args, images, output_names(images), device)
    for path in images:  # decode every image once up front: a bad file fails before any work is done
        open_image(path)
    loaded = load_model(args.model, args.weights)
    out = prepare_output_dir(args.output)

    size = args.input_size or loaded.input.size
    resize = args.resize or (loaded.input.resize if size == loaded.input.size and loaded.input.resize
                             else round(size * 256 / 224))
    if resize < size:
        raise LrpcError(f"--resize {resize} is smaller than the input size {size}")
    mean, std = input_normalization(args.normalize, loaded)
    rules = preset_for_input(args.rules, mean, std)
    rules = rules if args.start is None else rules.replace(start=args.start)
    explainer = compile_explainer(loaded.model.to(device), rules, example_input=torch.zeros(1, 3, size, size,
                                                                                          device=device))
    class_names = loaded.input.class_names
    if class_names is None and explainer.num_classes == len(IMAGENET_CLASSES):
        class_names = IMAGENET_CLASSES  # a 1000-way classifier is taken to use ImageNet-1k's class order
    target = _target(args.target, class_names)

    names = output_names(images)
    batches = [list(range(start, min(start + args.batch_size, len(images))))
               for start in range(0, len(images), args.batch_size)]
    settings = {"model": args.model, "weights": args.weights, "rules": args.rules, "start": rules.start,
                "input_size": size,
                "resize": resize, "normalization": {"mean": list(mean), "std": list(std)},
                "sign": args.sign, "smooth": args.smooth, "quantize": args.quantize}
    for batch in _progress(batches, args.quiet):
        x = torch.stack([preprocess_image(open_image(images[i]), resize, size, mean, std) for i in batch])
        exp = explainer(x.to(device), target)
        scores = exp.logits.float().reshape(len(batch), -1)
        # a single score's probability is its sigmoid: a binary classifier's positive class
        probabilities = (scores.softmax(1) if scores.shape[1] > 1 else scores.sigmoid()).cpu()
        heat = exp.heatmap(quantize=args.quantize, sign=args.sign, smooth=args.smooth).cpu()
        errors = exp.conservation_error().cpu()
        absorbed = {name: value.cpu() for name, value in exp.absorbed.items()}
        relevance, start, targets = exp.relevance.float().cpu(), exp.start.cpu(), exp.target.cpu()
        pixels = denormalize(x, mean, std).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for k, i in enumerate(batch):
            predicted, target_k = int(probabilities[k].argmax()), int(targets[k])
            files = {"overlay": f"{names[i]}_overlay.png", "heatmap": f"{names[i]}_heatmap.png",
                     "relevance": f"{names[i]}_relevance.npy"}
            viz.save_overlay(pixels[k], heat[k], out / files["overlay"], alpha=args.alpha, cmap=args.cmap)
            viz.save_heatmap(heat[k], out / files["heatmap"], cmap=args.cmap)
            np.save(out / files["relevance"], relevance[k].numpy())
            summary = {
                "image": str(images[i]),
                "predicted_class": predicted, "predicted_name": _class_name(predicted, class_names),
                "probability": float(probabilities[k, predicted]),
                "target_class": target_k, "target_name": _class_name(target_k, class_names),
                "target_probability": float(probabilities[k, target_k]),
                "start_relevance": float(start[k]),
                "input_relevance_sum": float(relevance[k].sum()),
                "conservation_error": float(errors[k]),
                "absorbed": {name: float(value[k]) for name, value in absorbed.items()},
                **settings, "files": files,
            }
            (out / f"{names[i]}.json").write_text(json.dumps(summary, indent=2) + "\n")
            if not args.quiet:
                label = summary["predicted_name"] or f"class {predicted}"
                print(f"{images[i]}: {label} (p={summary['probability']:.3f}), "
                      f"conservation error {summary['conservation_error']:.2e} -> {out / files['overlay']}")
    return 0
