"""Speed and peak memory of token relevance on a Llama-style causal LM, against one input-gradient pass.

    python benchmarks/text_speed.py [--layers 4 --width 256 --length 512 --batch 4 --repeats 5 --threads 2]

The model is Hugging Face's ``LlamaForCausalLM`` with random weights (grouped-query attention: half as many
key/value heads as query heads, SwiGLU MLP, default SDPA attention), float32. Rows, timed round-robin in one
process so that load changes hit every row alike, each the median of ``--repeats`` calls:

- ``forward``: the model's forward pass, no autograd;
- ``input gradient``: forward from the embeddings with autograd, then the gradient of the explained logit (the
  predicted next token after the last position) with respect to the embeddings: what gradient × input costs;
- ``lrpc <preset>``: one explanation of the same logit (``explainer(input_ids)``).

Peak memory is measured per row in a fresh process that builds only that row: freed memory is handed back to the
system (glibc's ``malloc_trim``), then the resident size is sampled every millisecond during one call; the row's
peak is the largest sample minus the size before the call. The 1-minute load average is recorded before and after the timed table;
a run above the core count is marked BUSY.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import threading
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import lrpc

PRESETS = ("cp-lrp", "attnlrp")


def make_model(layers: int, width: int, vocabulary: int = 1000):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocabulary, hidden_size=width, intermediate_size=width * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForCausalLM(config).eval()


def make_ids(batch: int, length: int, vocabulary: int = 1000) -> torch.Tensor:
    return torch.randint(0, vocabulary, (batch, length), generator=torch.Generator().manual_seed(1))


def methods(model, ids: torch.Tensor, only: str | None = None) -> dict:
    def forward():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def input_gradient():
        embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        return embeddings.grad * embeddings

    rows = {"forward": forward, "input gradient": input_gradient}
    for preset in PRESETS:
        if only in (None, f"lrpc {preset}"):
            explainer = lrpc.compile(model, lrpc.preset(preset), example_input=ids[:1, :8])
            rows[f"lrpc {preset}"] = (lambda e: lambda: e(ids))(explainer)
    return rows


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def call_peak_mb(run) -> float:
    """The most resident memory one call of ``run`` adds, sampled every millisecond."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before, peak, done = resident_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    run()
    done.set()
    sampler.join()
    return max(peak[0], resident_mb()) - before


def peak_memory(name: str, args: argparse.Namespace) -> float:
    """MB that one call of row ``name`` adds to the process's peak resident memory, in a fresh process."""
    command = [sys.executable, __file__, "--memory-of", name, *_shape_arguments(args)]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def _shape_arguments(args) -> list[str]:
    return ["--layers", str(args.layers), "--width", str(args.width), "--length", str(args.length),
            "--batch", str(args.batch), "--threads", str(args.threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, ids = make_model(args.layers, args.width), make_ids(args.batch, args.length)
    rows = methods(model, ids, only=args.memory_of)
    if args.memory_of:
        rows[args.memory_of]()   # once first: one-time initialisation (thread pools, kernels) is no row's cost
        print(call_peak_mb(rows[args.memory_of]))
        return
    for run in rows.values():   # warm-up
        run()
    load_before = os.getloadavg()[0]
    times = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, run in rows.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    load_after = os.getloadavg()[0]
    busy = max(load_before, load_after) > (os.cpu_count() or 1)
    gradient = statistics.median(times["input gradient"])
    print(f"Llama-style causal LM: {args.layers} layers, width {args.width}, T = {args.length}, B = {args.batch}, "
          f"float32, {args.threads} threads, torch {torch.__version__}; load {load_before:.2f} -> {load_after:.2f}"
          f"{' BUSY' if busy else ''}")
    print("| row | ms | ÷ input gradient | peak memory MB (fresh process) |\n|---|---:|---:|---:|")
    results = []
    for name, samples in times.items():
        ms = 1000 * statistics.median(samples)
        memory = peak_memory(name, args)
        results.append({"row": name, "ms": ms, "ratio": ms / 1000 / gradient, "peak_mb": memory})
        print(f"| {name} | {ms:.0f} | {ms / 1000 / gradient:.2f} | {memory:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": [load_before, load_after], "busy": busy, "rows": results, **vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
