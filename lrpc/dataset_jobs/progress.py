"""Progress of the whole job on rank 0, and the summary written at the end.

The bar counts committed units of every rank by watching the parts folder (the completion markers on the
shared filesystem), so no rank reports to another and the bar is right after a restart too.
"""
from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np

from ..optional import require
from .table import done_units
from .worklist import unit_indices

__all__ = ["JobProgress", "format_summary", "summarize"]

# Per-image numbers summarised as mean ± standard error, besides the metric columns.
SUMMARY_COLUMNS = ("probability", "start", "relevance_sum", "absorbed", "conservation_error")
LISTED_FAILURES = 100


class JobProgress:
    """A tqdm bar over all images of the job (images/s, ETA), refreshed from the parts folder twice a second."""

    def __init__(self, parts: Path, n_images: int, unit: int, *, enabled: bool, interval: float = 0.5):
        self._parts, self._n_images, self._unit = parts, n_images, unit
        self._bar = None
        self._stop = threading.Event()
        if not enabled:
            return
        tqdm = require("tqdm").tqdm
        self._bar = tqdm(total=n_images, initial=self._images_done(), unit="img", desc="explain-dataset",
                         file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
        self._thread = threading.Thread(target=self._poll, args=(interval,), name="lrpc-progress", daemon=True)
        self._thread.start()

    def _images_done(self) -> int:
        return sum(len(unit_indices(u, self._unit, self._n_images)) for u in done_units(self._parts))

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._refresh()

    def _refresh(self) -> None:
        new = self._images_done() - self._bar.n
        if new > 0:
            self._bar.update(new)

    def close(self) -> None:
        if self._bar is None:
            return
        self._stop.set()
        self._thread.join()
        self._refresh()
        self._bar.close()


def summarize(table, metric_columns: list[str], run: dict) -> dict:
    """Counts, failures and mean ± s.e. of every per-image number of the merged table."""
    errors = table.column("error").to_pylist()
    failed = [i for i, error in enumerate(errors) if error is not None]
    statistics = {}
    for name in [*SUMMARY_COLUMNS, *metric_columns]:
        if name in table.column_names:
            statistics[name] = _mean_se(table.column(name).to_numpy(zero_copy_only=False).astype(float))
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(float)
    predicted = table.column("predicted").to_numpy(zero_copy_only=False).astype(float)
    known = np.isfinite(labels) & np.isfinite(predicted)
    if known.any():
        statistics["accuracy"] = _mean_se((labels[known] == predicted[known]).astype(float))
    paths = table.column("path").to_pylist()
    return {
        "images": table.num_rows, "explained": table.num_rows - len(failed), "failed": len(failed),
        "failures": [{"index": i, "path": paths[i], "error": errors[i]} for i in failed[:LISTED_FAILURES]],
        "statistics": statistics, "run": run,
    }


def _mean_se(values: np.ndarray) -> dict:
    """Over the finite values; None where undefined (no value, or one value for the s.e.), as JSON has no NaN."""
    values = values[np.isfinite(values)]
    n = len(values)
    mean = float(values.mean()) if n else None
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return {"mean": mean, "se": se, "n": n}


def format_summary(summary: dict, job: Path) -> str:
    run = summary["run"]
    lines = [f"{job}: {summary['images']} images, {summary['explained']} explained, {summary['failed']} failed"]
    if run.get("images"):
        lines.append(f"  this run: {run['images']} images in {run['units']} units on {run['ranks']} "
                     f"rank(s), {run['seconds']:.1f} s, {run['images_per_second']:.1f} images/s")
    else:
        lines.append("  this run: nothing left to do")
    for name, stat in summary["statistics"].items():
        mean = "-" if stat["mean"] is None else f"{stat['mean']:.4g}"
        se = "" if stat["se"] is None else f" ± {stat['se']:.2g}"
        lines.append(f"  {name:<20} {mean}{se}  (n={stat['n']})")
    for failure in summary["failures"][:5]:
        lines.append(f"  failed: {failure['path']}: {failure['error']}")
    if summary["failed"] > 5:
        lines.append(f"  ... {summary['failed'] - 5} more failures in the table's error column")
    return "\n".join(lines)
