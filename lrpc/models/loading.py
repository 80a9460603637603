"""Models by name, as ``--model`` and ``explain_dataset(model=...)`` take them, with their input convention.

A spec is a named model (``NAMED_MODELS``), an architecture of ``lrpc.models`` (random weights unless weights
are given), ``torchvision:NAME`` / ``timm:NAME`` / ``hf:DIR`` (``lrpc.models.sources``: the library's own
preprocessing), or ``module:factory`` / ``path/to/file.py:factory`` calling a function that returns the module.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from ..errors import LrpcError
from . import ARCHITECTURES, IMAGENET_MEAN, IMAGENET_STD, load_weights
from .sources import SOURCES, load_source

__all__ = ["ModelInput", "LoadedModel", "NAMED_MODELS", "NORMALIZATIONS", "input_normalization", "load_model",
           "model_input"]

NORMALIZATIONS = ("model", "imagenet", "none")


@dataclass(frozen=True)
class ModelInput:
    """What a model expects: square ``size`` x ``size`` inputs normalised as (pixel − mean) / std with pixels in
    [0, 1], and optionally the names of its classes (index order)."""

    size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: Sequence[str] | None = None
    resize: int | None = None   # short side before the centre crop; None: size · 256 / 224


def model_input(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                class_names: Sequence[str] | None = None) -> Callable[[Callable], Callable]:
    """Decorate a model factory with its input convention, which the CLI then uses by default::

        @model_input(size=64, class_names=("disc", "square"))
        def build() -> nn.Module: ...
    """
    def mark(factory: Callable) -> Callable:
        factory.lrpc_input = ModelInput(int(size), tuple(mean), tuple(std), class_names)
        return factory
    return mark


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    spec: str
    input: ModelInput


# Pretrained models known by name; their factories carry @model_input. The architectures of lrpc.models are
# known by name too, with random weights unless --weights is given.
NAMED_MODELS: dict[str, str] = {
    "efficientnet-lite0": "lrpc.demo:efficientnet_lite0",
    "groundtruth": "lrpc.demo:groundtruth",
    "groundtruth-vit": "lrpc.demo:groundtruth_vit",
}


def _import_module(name: str):
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise LrpcError(f"model file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"lrpc_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        # console scripts do not put the working directory on sys.path, `python -m` does: make both agree
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


def _factory(spec: str) -> Callable:
    if spec in NAMED_MODELS:
        spec = NAMED_MODELS[spec]
    elif spec in ARCHITECTURES:
        return ARCHITECTURES[spec]
    if ":" not in spec:
        known = ", ".join([*NAMED_MODELS, *ARCHITECTURES])
        raise LrpcError(f"unknown model {spec!r}: give one of {known}, or module:factory "
                        "(e.g. mypackage.nets:build or path/to/net.py:build)")
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import_module(module_name)
    except LrpcError:
        raise
    except Exception as exc:  # the user's module failed to import: say which and why
        raise LrpcError(f"cannot import {module_name!r} for --model {spec}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise LrpcError(f"--model {spec}: module {module_name!r} has no callable {attr!r}")
    return factory


def _from_source(spec: str, weights) -> LoadedModel:
    model, pre = load_source(spec)
    if weights is not None:
        load_weights(model, weights)
    elif not spec.startswith("hf:"):
        print(f"warning: no --weights given, {spec} has random weights", file=sys.stderr)
    size = pre.size or 224
    return LoadedModel(model, spec, ModelInput(size, pre.mean or IMAGENET_MEAN, pre.std or IMAGENET_STD,
                                               pre.class_names, pre.resize))


def load_model(spec: str, weights: str | os.PathLike | None = None) -> LoadedModel:
    """Build the model ``spec`` names, load ``weights`` strictly, and put it in eval mode. ``torchvision:``,
    ``timm:`` and ``hf:`` specs bring their library's preprocessing (``lrpc.models.sources``)."""
    if spec.partition(":")[0] in SOURCES:
        return _from_source(spec, weights)
    factory = _factory(spec)
    try:
        model = factory()
    except LrpcError:
        raise
    except Exception as exc:
        raise LrpcError(f"--model {spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise LrpcError(f"--model {spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    elif spec in ARCHITECTURES:
        print(f"warning: no --weights given, {spec} has random weights", file=sys.stderr)
    return LoadedModel(model.eval(), spec, getattr(factory, "lrpc_input", None) or ModelInput())



def input_normalization(choice: str, loaded: LoadedModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of ``--normalize CHOICE`` (one of NORMALIZATIONS) for this model."""
    if choice == "model":
        return loaded.input.mean, loaded.input.std
    if choice == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
