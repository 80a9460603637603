"""Helpers for checking explanations on untrained models (tests, benchmarks)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import torchvision_models


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine parameters, in place. At initialisation BN is nearly the
    identity, which would hide any mistake in how relevance crosses it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def vgg_with_narrow_classifier(architecture: str | Sequence[int | str], num_classes: int, hidden: int) -> nn.Module:
    """torchvision's VGG with random weights whose classifier is ``hidden`` wide instead of 4096.

    ``architecture`` names a torchvision VGG (``"vgg16"``, ``"vgg11_bn"``, ...) or is a layer plan for
    ``torchvision.models.vgg.make_layers`` (``[4, "M", 8, "M", 512, "M"]``). Initialising the 25088 x 4096
    layer takes seconds and nothing these checks measure depends on its width, so the model is built on the
    meta device, its three Linear layers are replaced, and every layer is initialised as torchvision does.
    """
    models = torchvision_models()
    with torch.device("meta"):
        model = (models.get_model(architecture, weights=None, num_classes=num_classes)
                 if isinstance(architecture, str) else models.VGG(models.vgg.make_layers(list(architecture)),
                                                                  num_classes=num_classes))
    head = model.classifier
    head[0] = nn.Linear(head[0].in_features, hidden, device="meta")
    head[3] = nn.Linear(hidden, hidden, device="meta")
    head[6] = nn.Linear(hidden, num_classes, device="meta")
    model.to_empty(device="cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    return model
