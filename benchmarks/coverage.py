"""Model-zoo coverage: which third-party architectures compile under a preset, and how well relevance is
accounted for. One row per model: compiled or the first line of the reason, conservation error (largest
relative deviation of a cut from the start), the share of the start absorbed by constants (cls tokens) and
other sinks, the closing error |Σ input relevance + Σ absorbed − start| / |start|, compile time and explain
time ÷ forward time (batch 2, eager, this machine).

    python benchmarks/coverage.py                      # the Hugging Face and timm lists of tests/zoo.py
    python benchmarks/coverage.py --only hf --json out/coverage.json
    python benchmarks/coverage.py --only modalities --dtype float64   # audio, time series, video, volumes

The modality list (tests/modality_zoo.py) is compiled on one sample and explained on a batch of three; its
``batch-3 check`` is the largest difference between a row of the batch and the same sample explained alone
(relevance and every layer sum, relative to the largest |relevance|).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import lrpc  # noqa: E402
import modality_zoo  # noqa: E402
import zoo  # noqa: E402
from timing import median_seconds  # noqa: E402


def batch_check(explainer, exp, x) -> float:
    """Largest |batch row − the sample explained alone| over relevance and layer sums, relative."""
    worst = 0.0
    for k in range(x.shape[0]):
        single = explainer(x[k:k + 1], target=exp.target[k:k + 1])
        for batched, alone in ((exp.relevance, single.relevance), (exp.layer_sum_matrix, single.layer_sum_matrix)):
            scale = float(batched[k].abs().max()) or 1.0
            worst = max(worst, float((batched[k:k + 1] - alone).abs().max()) / scale)
    return worst


def measure(name: str, build, rules: str, dtype: torch.dtype, batch: int = 2, check_batch: bool = False) -> dict:
    row = {"model": name}
    try:
        model, example = build()
        model = model.to(dtype)
        x = torch.randn(batch, *example.shape[1:], dtype=dtype)
        start = time.perf_counter()
        explainer = lrpc.compile(model, rules, example_input=x[:1])
        row["compile_s"] = time.perf_counter() - start
        exp = explainer(x)
        relevance = exp.relevance.sum(tuple(range(1, x.dim())))
        absorbed = sum(exp.absorbed.values()) if exp.absorbed else torch.zeros_like(relevance)
        scale = exp.start.abs().clamp_min(1e-30)
        row.update(compiled=True,
                   conservation_error=float(exp.conservation_error().max()),
                   absorbed_share=float((absorbed / scale).abs().max()),
                   closing_error=float(((relevance + absorbed - exp.start).abs() / scale).max()),
                   sinks=sorted(exp.absorbed)[:5])
        if check_batch:
            row["batch_check"] = batch_check(explainer, exp, x)
        with torch.inference_mode():
            forward = median_seconds(lambda: model(x), 3)[0]
        row["explain_over_forward"] = median_seconds(lambda: explainer(x), 3)[0] / forward
    except Exception as exc:  # a row per model: the table reports failures instead of stopping
        row.update(compiled=False, reason=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
    return row


def markdown(rows: list[dict]) -> str:
    checked = any("batch_check" in r for r in rows)
    extra = (" batch-3 check |", "---|") if checked else ("", "")
    lines = ["| model | compiled | conservation error | absorbed share | closing error | compile s | explain ÷ forward |"
             + extra[0], "|---|---|---|---|---|---|---|" + extra[1]]
    for r in rows:
        if r["compiled"]:
            lines.append(f"| {r['model']} | yes | {r['conservation_error']:.1e} | {r['absorbed_share']:.2f} | "
                         f"{r['closing_error']:.1e} | {r['compile_s']:.1f} | {r['explain_over_forward']:.1f} |"
                         + (f" {r['batch_check']:.1e} |" if checked else ""))
        else:
            lines.append(f"| {r['model']} | no: {r['reason']} | | | | | |" + (" |" if checked else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["hf", "timm", "modalities"],
                        help="one list only (modalities: only when named)")
    parser.add_argument("--models", nargs="*", help="names from the lists (default: all)")
    parser.add_argument("--rules", default="default")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--json", type=Path, help="write the rows here, after every model")
    args = parser.parse_args()
    torch.manual_seed(0)
    builds = {}
    if args.only in (None, "hf"):
        builds.update({f"hf:{k}": v for k, v in zoo.HF_MODELS.items()})
    if args.only in (None, "timm"):
        builds.update({f"timm:{k}": (lambda k=k: zoo.timm_model(k)) for k in zoo.TIMM_MODELS})
    if args.only == "modalities":
        builds = {f"{modality_zoo.ZOO[k][0]}:{k}": (lambda k=k: modality_zoo.build(k)) for k in modality_zoo.ZOO}
    if args.models:
        builds = {k: v for k, v in builds.items() if k in args.models or k.split(":", 1)[1] in args.models}
    rows = []
    for name, build in builds.items():
        modalities = args.only == "modalities"
        rows.append(measure(name, build, args.rules, getattr(torch, args.dtype), batch=3 if modalities else 2,
                            check_batch=modalities))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
    done = sum(r["compiled"] for r in rows)
    print(f"\n{done} of {len(rows)} compiled\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
