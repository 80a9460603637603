"""The small Bottleneck ResNet trained on the procedural shapes task, shipped with the package.

``scripts/train_groundtruth.py`` produced ``lrpc/assets/groundtruth_resnet.pth``; nothing here trains.
The model takes 64x64 scenes from :func:`lrpc.data.render_scenes` normalised with the ImageNet mean/std
(:func:`lrpc.data.normalize`): black (0 in [0,1] RGB) maps to (0 - mean) / std, exactly as in the paper's
ImageNet protocol, so the same canvases and first-layer bounds apply.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..models import load_weights, torchvision_models
from .procedural import CLASSES

__all__ = ["GROUNDTRUTH_CHECKPOINT", "GROUNDTRUTH_IMAGE_SIZE", "groundtruth_architecture", "groundtruth_model"]

GROUNDTRUTH_IMAGE_SIZE = 64
GROUNDTRUTH_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "groundtruth_resnet.pth"


def groundtruth_architecture() -> nn.Module:
    """Untrained network of the shipped checkpoint: torchvision's ResNet with Bottleneck blocks at 1/8 of
    ResNet-50's width, two blocks per stage (needs torchvision).

    The first block of every stage has a projection shortcut (conv1x1 + BN), the second an identity shortcut,
    so both kinds of residual add are exercised.
    """
    resnet = torchvision_models().resnet  # an LrpcError naming the install if torchvision is missing
    from ..models.narrow_resnet import NarrowResNet

    return NarrowResNet(resnet.Bottleneck, [2, 2, 2, 2], num_classes=len(CLASSES), width=8)


def groundtruth_model() -> nn.Module:
    """The trained shapes classifier in eval mode. Input: ImageNet-normalised [B, 3, 64, 64]."""
    return load_weights(groundtruth_architecture(), GROUNDTRUTH_CHECKPOINT).eval()
