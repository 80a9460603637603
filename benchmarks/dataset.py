"""Throughput of ``lrpc explain-dataset``: one process against two under torchrun, on the CPU (or GPUs).

    python benchmarks/dataset.py [--images 256] [--unit 32] [--model groundtruth] [--rounds 2] [--json PATH]
    python benchmarks/dataset.py --device cuda --gpus 1 2 4      # one row per GPU count, when GPUs are there

Writes ``--images`` generated scenes (64x64 PNGs in class folders; a 224-input model sees them upscaled) to a
temporary folder and runs the command as a user would, each configuration as a fresh job, round-robin for
``--rounds`` rounds (a shared host drifts; rows are medians over rounds). ``images/s`` is the job's images over
the time from the compiled explainer to the final barrier (``summary.json``'s ``run``); ``wall s`` is the whole
command, Python start, model load and compile included. An architecture without shipped weights gets one set
of random weights saved to a file first (every rank must build the same model).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrpc.commands import NAMED_MODELS, load_model
from lrpc.data import CLASSES, split_scenes


def write_scenes(root: Path, n: int) -> None:
    scenes = split_scenes("test", n)
    for k, (image, label) in enumerate(zip(scenes.images, scenes.labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{k:05d}.png")


def configurations(args) -> list[tuple[str, int, int]]:
    """(name, processes, threads per process)."""
    if args.device == "cuda":
        return [(f"{g} GPU{'s' if g > 1 else ''}", g, 1) for g in args.gpus]
    cores = args.cores or os.cpu_count()
    return [("1 process, 1 thread", 1, 1), (f"1 process, {cores} threads", 1, cores),
            (f"2 processes x {cores // 2} thread(s) (torchrun)", 2, max(1, cores // 2))]


def run_job(root: Path, job: Path, model_args: list[str], processes: int, threads: int, args) -> dict:
    command = ["-m", "lrpc", "explain-dataset", str(root), "-o", str(job), *model_args, "--unit", str(args.unit),
               "--rules", args.rules, "-q", *(["--device", args.device] if args.device else []),
               *(["--metrics", args.metrics] if args.metrics else [])]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    run = json.loads((job / "summary.json").read_text())["run"]
    return {"images_per_second": run["images_per_second"], "seconds": run["seconds"], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--unit", type=int, default=32)
    parser.add_argument("--model", default="groundtruth")
    parser.add_argument("--rules", default="default")
    parser.add_argument("--metrics", default="", help="e.g. id: Insertion/Deletion per image as well")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, help="CPU cores to share out (default: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--gpus", type=int, nargs="+", default=[1])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lrpc-dataset-bench-") as tmp:
        tmp = Path(tmp)
        write_scenes(tmp / "scenes", args.images)
        model_args = ["--model", args.model]
        if args.model not in NAMED_MODELS:
            torch.manual_seed(0)
            torch.save(load_model(args.model).model.state_dict(), tmp / "weights.pth")
            model_args += ["--weights", str(tmp / "weights.pth")]
        rows = {config: [] for config in configurations(args)}
        for round_ in range(args.rounds):
            for config in rows:
                job = tmp / f"job-{round_}-{config[1]}-{config[2]}"
                rows[config].append(run_job(tmp / "scenes", job, model_args, config[1], config[2], args))

    load = os.getloadavg()
    print(f"lrpc explain-dataset, {args.model}, {args.images} images, unit {args.unit}, rules {args.rules}"
          f"{', metrics ' + args.metrics if args.metrics else ''}; torch {torch.__version__}; {os.cpu_count()} "
          f"cores; median of {args.rounds} round(s); load average {load[0]:.1f} after\n")
    print("| configuration | images/s | wall s (whole command) |\n|---|---:|---:|")
    baseline = None
    results = []
    for (name, processes, threads), runs in rows.items():
        rate = statistics.median(run["images_per_second"] for run in runs)
        wall = statistics.median(run["wall"] for run in runs)
        baseline = baseline or rate
        print(f"| {name} | {rate:.1f} ({rate / baseline:.2f}x) | {wall:.1f} |")
        results.append({"configuration": name, "processes": processes, "threads": threads, "runs": runs})
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "results": results},
                                        indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
