"""Subcommands of the ``lrpc`` command line, and the pieces they share.

Every module in this package that defines ``register(subparsers)`` becomes a subcommand (``lrpc.cli`` finds
them). ``register`` adds its parser with ``subparsers.add_parser(name, help=...)`` and sets
``parser.set_defaults(func=run)``, where ``run(args)`` returns the exit code (``None`` means 0). Problems the
user can fix are raised as ``LrpcError`` (or ``ValueError``/``OSError``) and printed without a traceback.

Shared here:
- ``add_model_arguments`` / ``load_model``: ``--model NAME|module:factory`` and ``--weights FILE``;
- ``model_input``: the decorator a factory uses to declare its input size, normalisation and class names;
- ``open_image`` and ``prepare_output_dir``: readable errors for bad images and unwritable outputs.
"""
from __future__ import annotations

import argparse

from ..data.folder import open_image
from ..models.loading import NAMED_MODELS, LoadedModel, ModelInput, load_model, model_input
from ..outputs import prepare_output_dir

__all__ = ["ModelInput", "LoadedModel", "NAMED_MODELS", "add_model_arguments", "load_model", "model_input",
           "open_image", "prepare_output_dir"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|SOURCE:NAME|module:factory",
                        help=f"a named model ({', '.join(NAMED_MODELS)}), an architecture of lrpc.models "
                             "(resnet18, vgg16, ...), torchvision:NAME, timm:NAME, hf:DIR (a Hugging Face "
                             "save_pretrained folder, loaded offline), or module:factory / "
                             "path/to/file.py:factory calling a function that returns the nn.Module; random "
                             "weights unless the folder or --weights holds them")
    parser.add_argument("--weights", metavar="FILE",
                        help="state_dict (.pth via torch.load(weights_only=True), or .safetensors, or a timm "
                             "training checkpoint) to load strictly into the model")
