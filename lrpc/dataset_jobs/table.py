"""``JOB/table.parquet``: one row per image, merged at the end from one part per unit.

A unit's part ``JOB/parts/unit-0000123.parquet`` is written to a temporary name and renamed into place after
the unit's maps are stored, so a part exists exactly when its unit is complete: the parts are the job's
completion markers, and a rerun skips the units that have one. Rank 0 merges the parts into
``table.parquet`` (sorted by ``index``, every index exactly once) when all units are done.

Columns: ``index``, ``path`` (relative to the dataset root), ``label`` (null without class folders),
``target`` (the class explained), ``predicted``, ``probability`` (softmax of the predicted class), ``start``
(relevance placed at the output), ``relevance_sum`` (input relevance total), ``absorbed`` (relevance taken up
by biases and stabilisers; only for rule sets that have them), ``conservation_error``, one column per
requested metric, ``error`` (null, or why the image could not be explained: its map rows are NaN), ``rank``
(the process that explained it) and ``seconds`` (its share of the time its unit took to explain and score).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import LrpcError
from ..optional import require

__all__ = ["done_units", "merge_parts", "part_path", "table_schema", "write_part"]

_PART = re.compile(r"^unit-(\d+)\.parquet$")


def table_schema(metric_columns: Sequence[str], absorbed: bool):
    pa = require("pyarrow")
    fields = [("index", pa.int64()), ("path", pa.string()), ("label", pa.int64()), ("target", pa.int64()),
              ("predicted", pa.int64()), ("probability", pa.float64()), ("start", pa.float64()),
              ("relevance_sum", pa.float64())]
    if absorbed:
        fields.append(("absorbed", pa.float64()))
    fields.append(("conservation_error", pa.float64()))
    fields += [(name, pa.float64()) for name in metric_columns]
    fields += [("error", pa.string()), ("rank", pa.int32()), ("seconds", pa.float64())]
    return pa.schema(fields)


def part_path(parts: Path, unit_id: int) -> Path:
    return parts / f"unit-{unit_id:07d}.parquet"


def write_part(parts: Path, unit_id: int, rows: dict[str, list], schema) -> None:
    """Commit one unit: its rows to a temporary file, then renamed into place (atomic on one filesystem)."""
    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    table = pa.Table.from_pydict(rows, schema=schema)
    final = part_path(parts, unit_id)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, final)


def done_units(parts: Path) -> set[int]:
    """Units whose part exists; temporary files of interrupted writes do not count."""
    if not parts.is_dir():
        return set()
    with os.scandir(parts) as entries:
        return {int(match.group(1)) for entry in entries if (match := _PART.match(entry.name))}


def merge_parts(parts: Path, n_units: int, n_images: int, schema, destination: Path):
    """Concatenate every unit's part into ``destination`` (sorted by index) and return the table."""
    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    missing = sorted(set(range(n_units)) - done_units(parts))
    if missing:
        raise LrpcError(f"cannot merge the table: {len(missing)} units have no part yet "
                        f"(first: {missing[:5]}); rerun the same command to finish them")
    table = pa.concat_tables([pq.read_table(part_path(parts, unit_id), schema=schema)
                              for unit_id in range(n_units)])
    table = table.sort_by("index")
    if not np.array_equal(table.column("index").to_numpy(), np.arange(n_images)):
        raise LrpcError(f"the unit parts in {parts} hold {table.num_rows} rows for {n_images} images, not every "
                        "index exactly once; rerun with --overwrite")
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, destination)
    for leftover in parts.glob(".unit-*.tmp"):  # of ranks killed while writing a part (its unit was redone)
        leftover.unlink(missing_ok=True)
    return table
