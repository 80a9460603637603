"""Token explanations on the text ground-truth task: how often is the most relevant token a deciding one?

    python benchmarks/text_quality.py                    # 1000 test sequences, ~15 min on one core (IG 512 steps)
    python benchmarks/text_quality.py --texts 200 --json out/text_quality.json

The shipped causal LM (``lrpc.data.groundtruth_model("text")``) answers ``yes`` / ``no`` after the final ``?``
from the order of the two key tokens among fillers and distractors (``lrpc.data.text_task``). Every method
explains the model's answer logit on the fixed test split; a map is scored by

- ``top-1``: its most relevant token (largest signed relevance) is one of the two keys, over all 16 tokens;
- ``top-1 ctx``: the same over the 15 context tokens, leaving out the final ``?``, which is the same token in
  every sequence and carries no information, but is where the answer is computed;
- ``top-2 ctx``: the share of the two keys among the two most relevant context tokens;
- ``top-2 ctx |R|``: the same ranked by |relevance|, counting strong negative evidence as relevant too;
- ``key mass``: the share of the positive relevance on the context tokens that falls on the keys.

Chance: top-1 2/16 = 0.125, top-1 ctx 2/15 = 0.133, top-2 ctx 0.133, key mass 0.133.

Integrated gradients runs with 32 and 512 steps (``--ig-steps``): the trained model's answer logit jumps within a
narrow stretch of the path from the mean embedding to the input, and 32 steps miss it (its attributions then do
not add up to the logit difference); 512 do.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lrpc
from lrpc.baselines.text_methods import TEXT_BASELINES, integrated_gradients_tokens, token_baseline
from lrpc.data import groundtruth_model
from lrpc.data.text_task import split_texts

PRESETS = ("attnlrp", "cp-lrp")
BATCH = 100


def scores(maps: torch.Tensor, deciding: torch.Tensor) -> dict[str, float]:
    context, keys = maps[:, :-1], deciding[:, :-1]
    top1 = deciding.gather(1, maps.argmax(1, keepdim=True)).float().mean()
    top1_context = keys.gather(1, context.argmax(1, keepdim=True)).float().mean()
    top2 = keys.gather(1, context.topk(2, dim=1).indices).float().mean()
    top2_magnitude = keys.gather(1, context.abs().topk(2, dim=1).indices).float().mean()
    positive = context.clamp(min=0)
    mass = ((positive * keys).sum(1) / positive.sum(1).clamp(min=1e-30)).mean()
    return {"top-1": float(top1), "top-1 ctx": float(top1_context), "top-2 ctx": float(top2),
            "top-2 ctx |R|": float(top2_magnitude), "key mass": float(mass)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000, help="test sequences (default 1000)")
    parser.add_argument("--ig-steps", type=int, nargs="+", default=[32, 512],
                        help="integrated gradients' step counts, one row each (default 32 512)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = groundtruth_model("text")
    eager = groundtruth_model("text")             # a second instance for rollout: SDPA returns no probabilities
    eager.set_attn_implementation("eager")
    texts = split_texts("test", args.texts)
    with torch.no_grad():
        answers = model(texts.ids).logits[:, -1].argmax(-1)
    accuracy = float((answers == texts.answers).float().mean())
    print(f"model accuracy on {args.texts} test sequences: {accuracy:.4f}")

    methods = {name: (lambda ids, target, e=lrpc.compile(model, lrpc.preset(name), example_input=texts.ids[:2]):
                      e(ids, target=target).heatmap()) for name in PRESETS}
    for name in TEXT_BASELINES:
        chosen = eager if name == "attention_rollout" else model
        if name == "integrated_gradients":
            for steps in args.ig_steps:
                methods[f"{name} ({steps} steps)"] = lambda ids, target, k=steps: integrated_gradients_tokens(
                    model, ids, target, steps=k)
        else:
            methods[name] = lambda ids, target, n=name, m=chosen: token_baseline(n, m, ids, target)
    rows = {}
    for name, explain in methods.items():
        began = time.perf_counter()
        maps = torch.cat([explain(texts.ids[s:s + BATCH], answers[s:s + BATCH]).detach().double()
                          for s in range(0, args.texts, BATCH)])
        rows[name] = {**scores(maps, texts.deciding), "seconds": time.perf_counter() - began}
    columns = ["top-1", "top-1 ctx", "top-2 ctx", "top-2 ctx |R|", "key mass"]
    print("| method | " + " | ".join(columns) + " | s |")
    print("|---|" + "---|" * (len(columns) + 1))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + f" | {row['seconds']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"texts": args.texts, "accuracy": accuracy, "methods": rows}, indent=1))


if __name__ == "__main__":
    main()
