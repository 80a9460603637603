"""torchvision's ResNet at a fraction of its width: the architecture of lrpc's shipped ground-truth model.

torchvision fixes a ResNet's stem at 64 channels and its stages at 64, 128, 256 and 512 planes. ``NarrowResNet``
scales all of them by ``width / 64`` and changes nothing else: the network is made of torchvision's own
``BasicBlock``/``Bottleneck`` modules with torchvision's names, so zennit's ResNet canonizer and every tool that
recognises torchvision's ResNets treat it as one. Importing this module imports torchvision.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["NarrowResNet"]

STEM_WIDTH = 64  # torchvision's


class NarrowResNet(ResNet):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 width: int = STEM_WIDTH) -> None:
        self.width = width  # read by _make_layer, which ResNet.__init__ calls
        super().__init__(block, layers, num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as ResNet.__init__ does

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        if planes == STEM_WIDTH:  # the first stage: its input is the (narrow) stem, not torchvision's 64 channels
            self.inplanes = self.width
        return super()._make_layer(block, planes * self.width // STEM_WIDTH, blocks, stride, dilate)
