"""Paired differences of per-image IDs between rows of a quality.py JSON (``--json``), mean ± standard error.

    python benchmarks/paired.py out/resnet_views.json "lrpc otsuki2024 · σ=auto" gradcam
    python benchmarks/paired.py out/resnet_views.json --against gradcam        # every row against one
    python benchmarks/paired.py out/resnet_views.json --table                  # the rows as quality.py prints them

Only images that both rows evaluated count (``fair`` leaves misclassified images out).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

KEYS = ("fair.id", "fair-counterfactual.id", "otsuki2024.id")


def paired(first: dict, second: dict, key: str) -> tuple[float, float, int] | None:
    a, b = first["per_image"].get(key), second["per_image"].get(key)
    if a is None or b is None:
        return None
    diffs = [x - y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return mean, se, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("rows", nargs="*", help="two row names: first − second")
    parser.add_argument("--against", help="compare every row with this one")
    parser.add_argument("--table", action="store_true", help="print the rows as a markdown table")
    args = parser.parse_args()
    payload = json.loads(args.json.read_text())
    methods = payload["methods"]
    if args.table:
        from quality import markdown   # this script's folder is on sys.path when run as a script

        print(markdown(methods, f"{payload['source']}; {payload['correct']} of {payload['images']} classified "
                                f"correctly."))
        return
    pairs = ([(name, args.against) for name in methods if name != args.against] if args.against
             else [tuple(args.rows)])
    for first, second in pairs:
        cells = []
        for key in KEYS:
            result = paired(methods[first], methods[second], key)
            if result is not None:
                cells.append(f"{key} {result[0]:+.3f} ± {result[1]:.3f}")
        print(f"{first} − {second}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
