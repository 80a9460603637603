"""Which concepts of the shipped ground-truth ResNet's last block light up on which shapes (docs/concepts.md).

On the fixed test split of the procedural shapes task (lrpc.data), every correctly classified scene is explained
for its class under ``--rules``; the channels of ``--layer`` (default ``layer4``, the last block's output, a cut of
the graph) are ranked by their mean relevance share per class (``rank_concepts``). For the top concepts of each
class the script prints:

- their mean share of the relevance for each of the four classes (is the concept specific to one shape?);
- the share of the concept's positive input relevance that lies on the object (the shape's mask), against the
  same share for the full heatmap: does the concept look at the shape or at the clutter and distractors?
- their mean activation (spatial mean of the ReLU output) on each class's scenes.

    python benchmarks/crp_groundtruth.py [--scenes 512] [--top 3] [--layer layer4] [--rules epsilon-plus-flat]
"""
from __future__ import annotations

import argparse

import torch

import lrpc
from lrpc.data import CLASSES, groundtruth_model, normalize, split_scenes


def on_object(heat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per map: positive relevance on the object mask / all positive relevance ([..., H, W] against [N, H, W])."""
    positive = heat.clamp(min=0)
    inside = (positive * masks.reshape(masks.shape[0], *([1] * (heat.dim() - 3)), *masks.shape[1:])).sum((-2, -1))
    return inside / positive.sum((-2, -1)).clamp_min(1e-30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=512)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--rules", default="epsilon-plus-flat")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = groundtruth_model("resnet")
    scenes = split_scenes("test", args.scenes)
    x = normalize(scenes.images)
    labels = torch.as_tensor(scenes.labels)
    masks = torch.as_tensor(scenes.masks).float()
    explainer = lrpc.compile(model, rules=args.rules, example_input=x[:1])
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    right = predicted == labels
    print(f"ground-truth ResNet, {args.scenes} test scenes, accuracy {float(right.float().mean()):.3f}; rules "
          f"{args.rules}; layer {args.layer}")
    x, labels, masks = x[right], labels[right], masks[right]
    ranking = lrpc.crp.rank_concepts(explainer, [(x[i:i + 64], labels[i:i + 64]) for i in range(0, len(x), 64)],
                                     args.layer)
    layer_node = ranking.layer
    share = ranking.share
    activations = []

    def record(module, inputs, output):
        activations.append(output.mean((2, 3)))

    handle = dict(model.named_modules())[args.layer].register_forward_hook(record)
    with torch.no_grad():
        model(x)
    handle.remove()
    mean_activation = activations[0]
    full_on_object = on_object(explainer(x, labels).heatmap(), masks)
    print(f"layer {args.layer} (node {layer_node}): {share.shape[1]} channels; full heatmap: "
          f"{float(full_on_object.mean()):.3f} of the positive relevance on the object, which covers "
          f"{float(masks.mean()):.3f} of the image")
    for c, name in enumerate(CLASSES):
        ordered = share[labels == c].mean(0).sort(descending=True).values
        half = int((ordered.cumsum(0) < 0.5 * ordered.clamp(min=0).sum()).sum()) + 1
        print(f"{name}: the top {args.top} concepts hold {float(ordered[:args.top].sum()):.3f} of the relevance; "
              f"{half} channels hold half of it")
    header = " | ".join(f"share for {name}" for name in CLASSES)
    act_header = " | ".join(f"act. on {name}" for name in CLASSES)
    print(f"| class | rank | channel | {header} | on object (concept) | on object (full map) | {act_header} |")
    print("|" + "---|" * (5 + 2 * len(CLASSES)))
    for c, name in enumerate(CLASSES):
        of_class = labels == c
        top = share[of_class].mean(0).argsort(descending=True)[:args.top]
        maps = lrpc.crp.conditional_heatmaps(explainer, x[of_class], args.layer, top.tolist(), c)
        concept_on_object = on_object(maps, masks[of_class]).mean(0)
        for rank, channel in enumerate(top.tolist()):
            shares = " | ".join(f"{float(share[labels == k, channel].mean()):+.3f}" for k in range(len(CLASSES)))
            acts = " | ".join(f"{float(mean_activation[labels == k, channel].mean()):.3f}" for k in range(len(CLASSES)))
            print(f"| {name} | {rank + 1} | {channel} | {shares} | {float(concept_on_object[rank]):.3f} | "
                  f"{float(full_on_object[of_class].mean()):.3f} | {acts} |")


if __name__ == "__main__":
    main()
