"""torchvision's architectures by name, and safe checkpoint loading.

lrpc keeps no copy of an architecture. ``resnet18`` … ``resnet152`` and ``vgg11`` … ``vgg19_bn`` build
torchvision's own models with random weights (``torchvision.models.get_model(name, weights=None, ...)``);
``ARCHITECTURES`` maps their names to them for the CLI's ``--model NAME``. ``load_weights`` loads a checkpoint
strictly and without pickle. ``NarrowResNet`` (``lrpc.models.narrow_resnet``) is torchvision's ResNet at a
fraction of its width, the architecture of lrpc's shipped ground-truth model. torchvision is imported only when
a model is built.
"""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from ..errors import LrpcError
from .weights import load_weights, read_state_dict

# the input convention of ImageNet-trained weights (torchvision's, the paper's): x = (pixels - mean) / std
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def torchvision_models():
    """The ``torchvision.models`` package, or an LrpcError saying how to install it."""
    try:
        return importlib.import_module("torchvision.models")
    except Exception as exc:  # a torchvision built for another torch fails with RuntimeError, not ImportError
        raise LrpcError(f"this model is torchvision's, and torchvision cannot be imported ({type(exc).__name__}: "
                        f"{exc}): pip install 'lrpc[zoo]' (torchvision matching your torch)") from exc


def _torchvision_architecture(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **kwargs) -> nn.Module:
        return torchvision_models().get_model(name, weights=None, num_classes=num_classes, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"torchvision's {name} with random weights: ``torchvision.models.{name}(weights=None, "
                     "num_classes=num_classes, **kwargs)``.")
    return build


resnet18 = _torchvision_architecture("resnet18")
resnet34 = _torchvision_architecture("resnet34")
resnet50 = _torchvision_architecture("resnet50")
resnet101 = _torchvision_architecture("resnet101")
resnet152 = _torchvision_architecture("resnet152")
vgg11 = _torchvision_architecture("vgg11")
vgg11_bn = _torchvision_architecture("vgg11_bn")
vgg13 = _torchvision_architecture("vgg13")
vgg13_bn = _torchvision_architecture("vgg13_bn")
vgg16 = _torchvision_architecture("vgg16")
vgg16_bn = _torchvision_architecture("vgg16_bn")
vgg19 = _torchvision_architecture("vgg19")
vgg19_bn = _torchvision_architecture("vgg19_bn")

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152,
                            vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)
}

__all__ = ["ARCHITECTURES", "load_weights", "read_state_dict", "torchvision_models", *ARCHITECTURES]
