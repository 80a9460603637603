"""Render the example graph of docs/graph-dump.md: a two-block ResNet under the otsuki2024 preset, with the
relevance of one explanation, to docs/img/tiny-resnet-graph.svg (needs graphviz's `dot`).

    python scripts/render_docs_graph.py
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

import lrpc

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "tiny-resnet-graph.svg"


class TinyResNet(nn.Module):
    """A ResNet stem, one identity block and one projection block, torchvision's module names."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2, nn.Sequential(conv1x1(16, 32, 2), nn.BatchNorm2d(32))))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def main() -> None:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(1, 3, 32, 32)
    explainer = lrpc.compile(model, "otsuki2024", example_input=x)
    explanation = explainer(x)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    explanation.dump(OUTPUT)
    print(f"wrote {OUTPUT}")
    for leak in explanation.leaks():
        print(f"  leak: {leak}")


if __name__ == "__main__":
    main()
