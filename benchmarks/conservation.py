"""Conservation report: the largest relative deviation of any layer's relevance total from the start relevance,
per preset and architecture (random weights, randomised BatchNorm statistics), in float32 and float64.

    python benchmarks/conservation.py [--size 64] [--batch 2]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torchvision
from torch import nn

import lrpc
from lrpc.models.testing import randomize_batchnorm

ARCHS = ("resnet18", "resnet50", "vgg16")


def randomized(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(torchvision.models.get_model(arch, weights=None, num_classes=10), seed).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args(argv)
    presets = [p for p in lrpc.presets() if p != "epsilon-gamma-box"] + ["epsilon-gamma-box"]
    print("| preset | " + " | ".join(f"{a} fp32 | {a} fp64" for a in ARCHS) + " |")
    print("|---|" + "---|" * (2 * len(ARCHS)))
    models = {a: randomized(a) for a in ARCHS}
    for name in presets:
        kwargs = {"low": lrpc.IMAGENET_LOW, "high": lrpc.IMAGENET_HIGH} if name == "epsilon-gamma-box" else {}
        cells = []
        for arch in ARCHS:
            for dtype in (torch.float32, torch.float64):
                model = models[arch].to(dtype)
                x = torch.randn(args.batch, 3, args.size, args.size, dtype=dtype, generator=torch.Generator().manual_seed(1))
                try:
                    exp = lrpc.compile(model, rules=lrpc.preset(name, **kwargs), example_input=x[:1])(x)
                    cells.append(f"{float(exp.conservation_error().max()):.1e}")
                except lrpc.LrpcError as exc:
                    cells.append("n/a")
                    print(f"{name} on {arch}: {exc}", file=sys.stderr)
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
