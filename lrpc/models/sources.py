"""Models from the libraries users have them in, by a ``source:name`` spec, with their own preprocessing.

- ``torchvision:NAME`` — ``torchvision.models.get_model(NAME, weights=None)``; ImageNet preprocessing.
- ``timm:NAME`` — ``timm.create_model(NAME, pretrained=False)``; preprocessing from the model's
  ``pretrained_cfg`` (input size, mean, std, crop fraction).
- ``hf:DIR`` — a Hugging Face ``save_pretrained`` folder, loaded offline with
  ``AutoModelForImageClassification``; preprocessing from the folder's image processor config, class names
  from ``config.id2label``.

Weights are random unless the spec's folder holds them (``hf:``) or a checkpoint is loaded afterwards
(``load_weights``: a state_dict, a safetensors file or a timm training checkpoint).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from ..errors import LrpcError

SOURCES = ("torchvision", "timm", "hf")


@dataclass(frozen=True)
class Preprocessing:
    """Square ``size`` inputs, resized so the short side is ``resize`` then centre-cropped, normalised as
    (pixel − mean) / std with pixels in [0, 1]; ``None`` fields: the caller's defaults (ImageNet's)."""

    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: Sequence[str] | None = None


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:   # a wheel built for another torch fails with RuntimeError, not ImportError
        raise LrpcError(f"this model needs {module} ({type(exc).__name__}: {exc}): pip install 'lrpc[{extra}]'") \
            from exc


def from_torchvision(name: str) -> tuple[nn.Module, Preprocessing]:
    models = _import("torchvision.models", "zoo")
    try:
        return models.get_model(name, weights=None), Preprocessing()
    except ValueError as exc:
        raise LrpcError(f"torchvision has no model {name!r}; torchvision.models.list_models() lists them") from exc


def from_timm(name: str) -> tuple[nn.Module, Preprocessing]:
    timm = _import("timm", "zoo")
    if not timm.is_model(name):
        raise LrpcError(f"timm has no model {name!r}; timm.list_models('*pattern*') lists them")
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg or {}
    size = cfg.get("input_size", (3, 224, 224))[-1]
    crop = cfg.get("crop_pct")
    return model, Preprocessing(size=size, resize=int(size / crop) if crop else None,
                                mean=tuple(cfg["mean"]) if "mean" in cfg else None,
                                std=tuple(cfg["std"]) if "std" in cfg else None)


def _hf_preprocessing(folder: Path, config) -> Preprocessing:
    path = folder / "preprocessor_config.json"
    spec = json.loads(path.read_text()) if path.is_file() else {}
    crop = spec.get("crop_size") or {}
    size = spec.get("size") or {}
    side = (crop.get("height") if isinstance(crop, dict) else crop) if spec.get("do_center_crop") else None
    side = side or (size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size)
    side = side or getattr(config, "image_size", None)
    resize = size.get("shortest_edge") if isinstance(size, dict) and spec.get("do_center_crop") else None
    labels = getattr(config, "id2label", None) or {}
    names = [labels[k] for k in sorted(labels)] if labels else None
    if names and all(str(n).startswith("LABEL_") for n in names):
        names = None   # transformers' placeholders, not class names
    return Preprocessing(size=int(side) if side else None, resize=int(resize) if resize else None,
                         mean=tuple(spec["image_mean"]) if "image_mean" in spec else None,
                         std=tuple(spec["image_std"]) if "image_std" in spec else None, class_names=names)


def pretrained_folder(folder: str) -> Path:
    """``folder`` as a path, checked to be a Hugging Face ``save_pretrained`` folder (it holds a config.json)."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise LrpcError(f"hf:{folder} is not a Hugging Face save_pretrained folder (no config.json there); models "
                        "are loaded offline, from disk only")
    return path


def from_hugging_face(folder: str) -> tuple[nn.Module, Preprocessing]:
    transformers = _import("transformers", "zoo")
    path = pretrained_folder(folder)
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise LrpcError(f"hf:{folder}: transformers could not load an image classifier from it: "
                        f"{type(exc).__name__}: {exc}") from exc
    return model, _hf_preprocessing(path, model.config)


def load_source(spec: str) -> tuple[nn.Module, Preprocessing]:
    """``torchvision:NAME`` / ``timm:NAME`` / ``hf:DIR`` as (model in eval mode, its preprocessing)."""
    source, _, name = spec.partition(":")
    if source not in SOURCES or not name:
        raise LrpcError(f"model spec {spec!r}: expected one of {', '.join(s + ':...' for s in SOURCES)}")
    model, preprocessing = {"torchvision": from_torchvision, "timm": from_timm,
                            "hf": from_hugging_face}[source](name)
    return model.eval(), preprocessing
