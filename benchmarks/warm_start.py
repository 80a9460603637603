"""Warm starts: what the first compiled call costs in a fresh process, with an empty and with a filled cache.

    python benchmarks/warm_start.py                          # ResNet-50, otsuki2024, batch 8
    python benchmarks/warm_start.py --model resnet18 --rules default --json out/warm.json

Runs ``--processes`` fresh Python processes one after the other, all pointed at ONE new, empty cache directory
(``TORCHINDUCTOR_CACHE_DIR``, which ``explainer.compile()`` uses). Each process builds the explainer
(``lrpc.compile``), hands it to ``torch.compile`` (``explainer.compile()`` with no arguments, as
``explain-dataset --compile`` does; ``--freezing``: inductor with freezing, as the speed benchmark's compiled rows)
and times its first call, then one more call. The first process fills the cache; the others find inductor's FX
graph cache and the AOT autograd cache there, and only dynamo's tracing runs again. Under freezing the AOT
autograd cache takes no part and every process folds and pre-packs the weights again (about 6 s on ResNet-50).
The table gives, per process: building the explainer, the first compiled call, a second call, and the cache hits
and misses; the load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child(model_name: str, rules: str, batch: int, freezing: bool) -> dict:
    import torch
    import torchvision

    import lrpc
    from lrpc.compile_cache import cache_hits

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None, num_classes=1000).eval().requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    started = time.perf_counter()
    explainer = lrpc.compile(model, rules, example_input=x[:1])
    built = time.perf_counter()
    explainer.compile(**({"options": {"freezing": True}} if freezing else {}))
    explainer(x)
    first = time.perf_counter()
    explainer(x)
    second = time.perf_counter()
    return {"build_s": built - started, "first_call_s": first - built, "second_call_s": second - first,
            "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"), **cache_hits()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="a torchvision classifier (random weights)")
    parser.add_argument("--rules", default="otsuki2024")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2, help="fresh processes, one after the other (>= 2)")
    parser.add_argument("--freezing", action="store_true",
                        help="compile with inductor's freezing (weights folded into constants, as the speed "
                             "benchmark's compiled rows); default: explainer.compile() with no arguments, as "
                             "explain-dataset --compile runs it")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.rules, args.batch, args.freezing)))
        return
    if args.processes < 2:
        parser.error("--processes must be at least 2: the first fills the cache, the next ones read it")

    cache = tempfile.mkdtemp(prefix="lrpc-warm-start-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    load_before = os.getloadavg()
    rows = []
    for process in range(args.processes):
        command = [sys.executable, __file__, "--child", "--model", args.model, "--rules", args.rules,
                   "--batch", str(args.batch), *(["--freezing"] if args.freezing else [])]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"process {process + 1} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()

    print(f"{args.model}, {args.rules}, batch {args.batch}, freezing {args.freezing}; cache {cache}; load before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after {' '.join(f'{v:.2f}' for v in load_after)}")
    print("| process | build s | first compiled call s | second call s | FX graph hits / misses | "
          "AOT autograd hits / misses |")
    print("|---|---:|---:|---:|---:|---:|")
    for number, row in enumerate(rows, 1):
        print(f"| {number} ({'cold' if number == 1 else 'warm'}) | {row['build_s']:.1f} | {row['first_call_s']:.1f} "
              f"| {row['second_call_s']:.2f} | {row['fx_graph_hits']} / {row['fx_graph_misses']} | "
              f"{row['autograd_hits']} / {row['autograd_misses']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "rules": args.rules, "batch": args.batch, "freezing": args.freezing, "load_before": load_before,
                       "load_after": load_after, "processes": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
