"""Bridges to other libraries used as independent references (tests, benchmarks, user comparisons).

zennit imports ``torchvision.models.resnet`` at package import for its ResNet canonizer, and torchvision has no
build for this CPU torch. ``import_zennit`` installs a stand-in ``torchvision.models.resnet`` whose ``BasicBlock``
and ``Bottleneck`` are lrpc's torchvision-compatible classes (same attributes), so zennit's canonizers act on
lrpc's models exactly as on torchvision's. A real torchvision, when importable, is used as is.
"""
from __future__ import annotations

import importlib
import sys
import types


def _install_torchvision_stand_in() -> None:
    from .models import resnet

    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet_module = types.ModuleType("torchvision.models.resnet")
    resnet_module.BasicBlock, resnet_module.Bottleneck = resnet.BasicBlock, resnet.Bottleneck
    package.models, models.resnet = models, resnet_module
    package.__lrpc_stand_in__ = True
    sys.modules.update({"torchvision": package, "torchvision.models": models,
                        "torchvision.models.resnet": resnet_module})


def import_zennit():
    """Import zennit (installed with ``pip install --no-deps zennit``) and return the package."""
    try:
        importlib.import_module("torchvision.models.resnet")
    except Exception:
        _install_torchvision_stand_in()
    return importlib.import_module("zennit")
