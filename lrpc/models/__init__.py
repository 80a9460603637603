"""Architectures with torchvision's module names and state_dict keys (torchvision itself is never imported)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from .weights import load_weights, read_state_dict

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152,
                            vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)
}

__all__ = ["ARCHITECTURES", "BasicBlock", "Bottleneck", "ResNet", "VGG", "load_weights", "read_state_dict",
           *ARCHITECTURES]
