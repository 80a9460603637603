"""``lrpc explain`` on tensor and audio files (``.npy``, ``.pt``, ``.wav`` ...): one sample per file.

Per file NAME it writes ``NAME_relevance.npy`` (the relevance, the sample's shape, float32), ``NAME.json`` (as for
images) and the picture of its modality (``--modality``, else guessed from the sample's shape,
``lrpc.modalities.guess``): ``NAME_waveform.png`` (audio), ``NAME_signal.png`` (one row per channel),
``NAME_spectrogram.png``, ``NAME_frames.png`` + ``NAME.gif`` (video), ``NAME_slices.png`` (volume), or
``NAME_heatmap.png`` (an image-shaped tensor). The model is compiled on the first file's shape; every file
must have it. A mono audio file is tried as [1, T] first and as [T] when the model refuses that.
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
from ..data.samples import Sample, load_sample
from ..errors import LrpcError
from ..presets import preset
from . import load_model, prepare_output_dir


def _compile(model, rules, sample: Sample, device) -> tuple:
    """(explainer, shape): compiled on the sample as it is, or squeezed to [T] for a mono file the model refuses."""
    shapes = [tuple(sample.values.shape)]
    if sample.sample_rate is not None and sample.values.shape[0] == 1:
        shapes.append(tuple(sample.values.shape[1:]))
    for k, shape in enumerate(shapes):
        try:
            example = sample.values.reshape(1, *shape).to(device)
            return compile_explainer(model, rules, example_input=example), shape
        except LrpcError:
            if k == len(shapes) - 1:
                raise


def _picture(modality: str, heat: torch.Tensor, sample: torch.Tensor, base: Path, explainer, cmap: str,
             sample_rate: float | None) -> list[str]:
    """Write the modality's picture(s) of one heatmap next to ``base``; returns the file names."""
    if modality == "audio":
        path = viz.save_signal(heat.reshape(-1), f"{base}_waveform.png", signal=sample.reshape(-1),
                               sample_rate=sample_rate, cmap=cmap)
        return [path.name]
    if modality == "timeseries":
        return [viz.save_signal(heat, f"{base}_signal.png", signal=sample, sample_rate=sample_rate, cmap=cmap).name]
    if modality == "spectrogram":
        spectrogram = sample.reshape(heat.shape)
        return [viz.save_spectrogram(heat, f"{base}_spectrogram.png", spectrogram=spectrogram, cmap=cmap).name]
    if modality == "image":
        return [viz.save_heatmap(heat, f"{base}_heatmap.png", cmap=cmap).name]
    axis = explainer.channel_axis - 1   # in the sample, which has no batch dimension
    if modality == "video":
        frames = sample.movedim(axis, 1) if sample.shape[axis] == 3 else sample.mean(axis)   # [T, 3, H, W] / grey
        return [viz.save_frames(heat, f"{base}_frames.png", frames=frames, cmap=cmap).name,
                viz.save_gif(heat, f"{base}.gif", frames=frames, cmap=cmap).name]
    return [viz.save_slices(heat, f"{base}_slices.png", volume=sample.mean(axis), cmap=cmap).name]


def run(args: argparse.Namespace, paths: Sequence[Path], names: Sequence[str], device: torch.device) -> int:
    samples = [load_sample(p) for p in paths]   # every file read and checked up front, before any work
    for sample in samples[1:]:
        if sample.values.shape != samples[0].values.shape:
            raise LrpcError(f"{sample.path} has shape {tuple(sample.values.shape)}, {samples[0].path} "
                            f"{tuple(samples[0].values.shape)}: the model is compiled on one shape; explain files "
                            "of one shape together")
    if args.target != "pred" and not args.target.lstrip("-").isdigit():
        raise LrpcError(f"--target {args.target!r}: for tensor and audio files give 'pred' or a class index")
    target = None if args.target == "pred" else int(args.target)
    loaded = load_model(args.model, args.weights)
    out = prepare_output_dir(args.output)
    rules = preset(args.rules) if args.start is None else preset(args.rules).replace(start=args.start)
    explainer, shape = _compile(loaded.model.to(device), rules, samples[0], device)
    modality = args.modality or modalities.guess(shape, explainer.channel_axis - 1)
    for start in range(0, len(samples), args.batch_size):
        batch = samples[start:start + args.batch_size]
        x = torch.stack([s.values.reshape(shape) for s in batch]).to(device=device, dtype=explainer.dtype)
        exp = explainer(x, target)
        heat, relevance = exp.heatmap().float().cpu(), exp.relevance.float().cpu()
        errors, scores = exp.conservation_error().cpu(), exp.logits.float().reshape(len(batch), -1).cpu()
        probabilities = scores.softmax(1) if scores.shape[1] > 1 else scores.sigmoid()
        for k, sample in enumerate(batch):
            name = names[start + k]
            np.save(out / f"{name}_relevance.npy", relevance[k].reshape(sample.values.shape).numpy())
            rate = sample.sample_rate or args.sample_rate
            pictures = _picture(modality, heat[k], x[k].float().cpu(), out / name, explainer, args.cmap, rate)
            predicted, target_k = int(probabilities[k].argmax()), int(exp.target[k])
            summary = {"input": str(sample.path), "shape": list(sample.values.shape), "modality": modality,
                       "sample_rate": rate,
                       "predicted_class": predicted, "probability": float(probabilities[k, predicted]),
                       "target_class": target_k, "start_relevance": float(exp.start[k]),
                       "input_relevance_sum": float(relevance[k].sum()),
                       "conservation_error": float(errors[k]),
                       "absorbed": {n: float(v[k]) for n, v in exp.absorbed.items()},
                       "model": args.model, "rules": args.rules, "start": rules.start,
                       "files": {"relevance": f"{name}_relevance.npy", "pictures": pictures}}
            (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
            if not args.quiet:
                print(f"{sample.path}: class {predicted} (p={summary['probability']:.3f}), conservation error "
                      f"{summary['conservation_error']:.2e} -> {out / pictures[0]}", file=sys.stderr)
    return 0
