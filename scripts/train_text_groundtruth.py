"""Train the text ground-truth model shipped as lrpc/assets/groundtruth_text.safetensors.

    python scripts/train_text_groundtruth.py          # a few minutes on one CPU thread

Every step draws fresh sequences of :mod:`lrpc.data.text_task` (seed = the train split's base seed + step), so
the model never sees a sequence twice and the fixed val/test splits stay unseen. The loss is the cross-entropy
of the next token after the final ``?`` only: the model is a causal LM whose prediction there answers the task.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lrpc.data import GROUNDTRUTH_CHECKPOINTS, groundtruth_architecture
from lrpc.data.text_task import TEXT_SPLIT_SEEDS, make_texts, split_texts


def accuracy(model: torch.nn.Module, split: str, n: int) -> float:
    texts = split_texts(split, n)
    model.eval()
    with torch.inference_mode():
        predicted = model(texts.ids).logits[:, -1].argmax(-1)
    model.train()
    return float((predicted == texts.answers).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=GROUNDTRUTH_CHECKPOINTS["text"])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = groundtruth_architecture("text").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    began = time.time()
    for step in range(args.steps):
        texts = make_texts(args.batch_size, TEXT_SPLIT_SEEDS["train"] + step)
        loss = F.cross_entropy(model(texts.ids).logits[:, -1], texts.answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} val {accuracy(model, 'val', 2000):.4f} "
                  f"{time.time() - began:.0f}s", flush=True)
    model.eval()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(f"test accuracy {accuracy(model, 'test', 5000):.4f}; saved {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
