"""``JOB/maps.zarr``: the maps of every image, one zarr chunk per unit, and the thread that writes them.

Arrays (zarr v3, named dimensions, NaN where an image failed or is not done yet):

- ``heatmap`` ``[N, H, W]`` — the channel sum of the input relevance;
- ``relevance`` ``[N, C, H, W]`` — the input relevance itself (``relevance=True`` only);
- ``heatmap_scale`` / ``relevance_scale`` ``[N]`` — with ``dtype="float16"`` only: each map is stored divided
  by its largest |value| (raw LRP values are tiny, and float16 keeps only ~3 significant digits above 6e-5,
  so unscaled maps lose ~12 % at their 99th percentile); multiply a row by its scale to read it back.

Every write covers whole chunks of one unit, so no two processes ever write into the same chunk. zarr does not
store a chunk that equals the fill value, so chunk presence says nothing about completion: the table part
written after the chunks is the completion marker (``lrpc.dataset_jobs.table``).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import LrpcError
from .concepts import create_concept_arrays
from ..optional import require

__all__ = ["DTYPES", "StoreWriter", "UnitMaps", "create_store", "decode", "encode", "open_store"]

DTYPES = ("float32", "float16")


def create_store(path: Path, n_images: int, unit: int, channels: int, size: int, *, relevance: bool,
                 dtype: str, concepts: dict[str, int] | None = None) -> None:
    """Create the (empty, NaN-filled) arrays of a new job; ``concepts`` maps layers to their channel counts."""
    zarr = require("zarr")
    group = zarr.open_group(str(path), mode="w")
    arrays = {"heatmap": ((n_images, size, size), ("index", "y", "x"))}
    if relevance:
        arrays["relevance"] = ((n_images, channels, size, size), ("index", "channel", "y", "x"))
    for name, (shape, dims) in arrays.items():
        group.create_array(name, shape=shape, chunks=(unit, *shape[1:]), dtype=dtype, fill_value=np.nan,
                           dimension_names=dims)
        if dtype != "float32":
            group.create_array(f"{name}_scale", shape=(n_images,), chunks=(unit,), dtype="float32",
                               fill_value=np.nan, dimension_names=("index",))
    create_concept_arrays(group, concepts or {}, n_images, unit)


def open_store(path: Path) -> dict:
    """The job's arrays by path (``heatmap``, ``concepts/<layer>/relevance_sum``, ...), open for writing."""
    zarr = require("zarr")
    group = zarr.open_group(str(path), mode="r+")
    return {name: node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def encode(maps: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Maps [n, ...] float32 -> (stored values, per-map scale or None). float16 stores maps / max|map|."""
    if dtype == "float32":
        return maps.astype(np.float32, copy=False), None
    scale = np.abs(maps.reshape(len(maps), -1)).max(1)
    # An all-zero map keeps scale 1 (nothing to scale); a failed image's NaN row keeps its NaN scale.
    scale = np.where(scale == 0, 1, scale).astype(np.float32)
    stored = maps / scale.reshape(-1, *([1] * (maps.ndim - 1)))
    return stored.astype(dtype), scale


def decode(stored: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The inverse of :func:`encode`: float32 maps."""
    values = np.asarray(stored, dtype=np.float32)
    if scale is None:
        return values
    return values * np.asarray(scale, np.float32).reshape(-1, *([1] * (values.ndim - 1)))


@dataclass
class UnitMaps:
    """One unit's results: rows ``start:start + len(heatmap)`` of the arrays, then ``commit()`` (the part).
    ``concepts`` holds the concept layers' per-image arrays by store path, stored as they are."""

    unit_id: int
    start: int
    heatmap: np.ndarray
    relevance: np.ndarray | None
    commit: Callable[[], None]
    concepts: dict[str, np.ndarray] = field(default_factory=dict)


class StoreWriter:
    """Writes units in a background thread, so compressing and storing a unit overlaps explaining the next.

    ``submit`` blocks once ``depth`` units wait (bounded memory); an error in the thread is raised by the next
    ``submit`` or by ``close``, which first writes everything already submitted (finished work is never
    dropped). ``committed`` counts the units whose completion marker is written.
    """

    def __init__(self, arrays: dict, dtype: str, depth: int = 2):
        self._arrays = arrays
        self._dtype = dtype
        self._queue: queue.Queue[UnitMaps | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.committed = 0
        self._thread = threading.Thread(target=self._loop, name="lrpc-store-writer", daemon=True)
        self._thread.start()

    def submit(self, maps: UnitMaps) -> None:
        self._raise_error()
        self._queue.put(maps)

    def close(self) -> None:
        """Write what was submitted, stop the thread, and raise its error if it had one."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise LrpcError(f"writing the dataset store failed: {type(self._error).__name__}: {self._error}") \
                from self._error

    def _loop(self) -> None:
        while (maps := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the main thread learns of the error at its next submit or close
            try:
                self._write(maps)
                maps.commit()
                self.committed += 1
            except BaseException as exc:  # handed to the main thread, which raises it
                self._error = exc

    def _write(self, maps: UnitMaps) -> None:
        rows = slice(maps.start, maps.start + len(maps.heatmap))
        for name, values in (("heatmap", maps.heatmap), ("relevance", maps.relevance)):
            if values is None:
                continue
            stored, scale = encode(values, self._dtype)
            self._arrays[name][rows] = stored
            if scale is not None:
                self._arrays[f"{name}_scale"][rows] = scale
        for name, values in maps.concepts.items():
            self._arrays[name][rows] = values
