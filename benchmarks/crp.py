"""Speed of conditional heatmaps (lrpc.crp) on ResNet-50 (random weights), 224x224, on the CPU.

Goal (issue 22): the K = 64 concepts of ``layer4`` for ONE image cost no more than one ordinary explanation of a
batch of 64 images, and less than half of 64 separate explanations (one per concept, each a full explanation of
the image: what a hook-based tool pays). The forward pass and the relevance above the layer run once; only the
part below the layer runs on 64 rows. Prints the median wall-clock and process CPU time of ``--repeats`` runs of
each row, and the host's load average before and after (the host may be shared):

    python benchmarks/crp.py [--threads 1] [--repeats 1] [--k 64] [--chunk 8] [--layer layer4]
                             [--rules epsilon-plus-flat]
"""
from __future__ import annotations

import argparse
import os

import torch

import lrpc
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--rules", default="epsilon-plus-flat")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    model = lrpc.models.resnet50(num_classes=1000).eval()
    one = torch.randn(1, 3, args.size, args.size)
    batch = torch.randn(args.k, 3, args.size, args.size)
    explainer = lrpc.compile(model, rules=args.rules, example_input=one)
    channels = list(range(args.k))
    target = int(explainer(one).target[0])
    # first calls build the rewritten module and warm the allocator; not timed
    lrpc.crp.conditional_heatmaps(explainer, one, args.layer, channels[:2], target)
    rows = {
        f"crp: {args.k} concepts of {args.layer}, 1 image, one pass":
            lambda: lrpc.crp.conditional_heatmaps(explainer, one, args.layer, channels, target),
        f"crp: the same in passes of {args.chunk} (batch_size={args.chunk})":
            lambda: lrpc.crp.conditional_heatmaps(explainer, one, args.layer, channels, target,
                                                  batch_size=args.chunk),
        f"explanation of a batch of {args.k} images": lambda: explainer(batch),
        f"{args.k} separate explanations of 1 image": lambda: [explainer(one, target) for _ in channels],
    }
    results = {name: median_seconds(fn, args.repeats) for name, fn in rows.items()}
    load_after = os.getloadavg()
    print(f"ResNet-50 {args.size}x{args.size}, rules {args.rules}, {args.threads} thread(s), "
          f"median of {args.repeats}, torch {torch.__version__}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} cores")
    batch_wall, batch_cpu = results[f"explanation of a batch of {args.k} images"]
    separate_wall, separate_cpu = results[f"{args.k} separate explanations of 1 image"]
    print("| row | wall s | CPU s | ÷ batch explanation (wall, CPU) | ÷ separate explanations (wall, CPU) |\n"
          "|---|---|---|---|---|")
    for name, (wall, cpu) in results.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / batch_wall:.2f}, {cpu / batch_cpu:.2f} | "
              f"{wall / separate_wall:.2f}, {cpu / separate_cpu:.2f} |")


if __name__ == "__main__":
    main()
