"""``explain-dataset --concepts LAYER``: per-channel reference examples (CRP's relevance maximisation) of a job.

For every image and every channel ``c`` of the layer's output (a layer as ``lrpc.crp.conditional_heatmaps``
names it; channels in dimension 1 of a conv's ``[B, C, H, W]``, the last of a transformer's ``[B, T, D]``), the
unit's explanation (compiled with ``keep=[layer]``) gives the relevance and the activation at
that output, and four numbers are stored per (image, channel) in ``maps.zarr/concepts/<layer>/``:

- ``relevance_sum`` — Σ over positions of the relevance in channel c: the concept relevance R_c of CRP, the
  statistic its relevance maximisation ranks by (zennit-crp's default ``max_target="sum"``);
- ``relevance_max`` — the largest relevance of one position in c;
- ``activation_sum`` / ``activation_max`` — the same over the forward activation (activation maximisation);
- ``relevance_argmax`` / ``activation_argmax`` — the flat position of the largest relevance / activation, where
  the reference crop is cut: its receptive field in the input (``lrpc.receptive_field``).

The per-image arrays are chunked one unit per chunk and written before the unit's table part, like the maps,
so they resume exactly like them. When every unit is done, rank 0 ranks every channel's images from those
arrays into ``JOB/concepts.parquet``: the top ``N`` images by each of the four statistics (largest first, ties
by the smaller index; failed images never), with the box of the statistic's mode's maximum. The ranking reads
only the stored arrays, so it is the same whichever ranks wrote them and however often the job was resumed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..crp.layers import resolve
from ..errors import LrpcError
from ..receptive_field import ReceptiveField, receptive_field
from ..optional import require

__all__ = ["MODES", "STATISTICS", "ConceptLayer", "concept_layers", "create_concept_arrays", "rank_references",
           "unit_statistics"]

MODES = ("relevance", "activation")
STATISTICS = ("sum", "max")
SCORES = tuple(f"{mode}_{statistic}" for mode in MODES for statistic in STATISTICS)
POSITIONS = tuple(f"{mode}_argmax" for mode in MODES)
GROUP = "concepts"


@dataclass(frozen=True)
class ConceptLayer:
    """A layer as the user named it, the graph node it resolves to, and that node's output geometry."""

    layer: str
    node: str
    channels: int
    channel_dim: int
    field: ReceptiveField   # over the positions: the output without its batch and channel dimensions

    def describe(self) -> dict:
        axes = [None if a is None else {"offset": a.offset, "jump": a.jump, "size": a.size} for a in self.field.axes]
        return {"node": self.node, "channels": self.channels, "channel_dim": self.channel_dim,
                "grid": list(self.field.grid), "receptive_field": axes}


def concept_layers(explainer, layers: Sequence[str]) -> list[ConceptLayer]:
    """The layers as CRP's conditional heatmaps resolve them (``lrpc.crp.layers.resolve``), with their fields."""
    result = []
    for layer in layers:
        resolved = resolve(explainer, explainer._current(), layer)
        if resolved.batch_dim != 0:
            raise LrpcError(f"layer {layer!r} (node {resolved.node!r}, shape {resolved.shape}) is not batch-major")
        field = receptive_field(explainer, resolved.node)
        if resolved.channel_dim != 1:   # token layouts: their positions reached the input through attention
            grid = tuple(n for d, n in enumerate(resolved.shape) if d not in (0, resolved.channel_dim))
            if any(axis is not None for axis in field.axes):
                raise LrpcError(f"layer {layer!r} (node {resolved.node!r}, shape {resolved.shape}) has channels in "
                                f"dimension {resolved.channel_dim} and positions with a receptive field; "
                                "--concepts needs channels in dimension 1 there")
            field = ReceptiveField(resolved.node, grid, field.image, (None,) * len(grid))
        result.append(ConceptLayer(layer, resolved.node, resolved.channels, resolved.channel_dim, field))
    return result


def create_concept_arrays(group, layers: dict[str, int], n_images: int, unit: int) -> None:
    """The NaN-filled (scores) and -1-filled (positions) [N, C] arrays of each layer, one unit per chunk."""
    for layer, channels in layers.items():
        for name in SCORES + POSITIONS:
            integer = name in POSITIONS
            group.create_array(f"{GROUP}/{layer}/{name}", shape=(n_images, channels), chunks=(unit, channels),
                               dtype="int32" if integer else "float32", fill_value=-1 if integer else np.nan,
                               dimension_names=("index", "channel"))


def unit_statistics(layer: ConceptLayer, relevance: torch.Tensor, activation: torch.Tensor) -> dict:
    """The relevance and activation at a layer's output -> its per-image arrays ([b, C] numpy) by store name."""
    result = {}
    for mode, values in (("relevance", relevance), ("activation", activation)):
        values = values.detach().float().movedim(layer.channel_dim, 1)
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        result[f"{GROUP}/{layer.layer}/{mode}_sum"] = flat.sum(2).cpu().numpy()
        largest, position = flat.max(2)
        result[f"{GROUP}/{layer.layer}/{mode}_max"] = largest.cpu().numpy()
        result[f"{GROUP}/{layer.layer}/{mode}_argmax"] = position.to(torch.int32).cpu().numpy()
    return result


def top_images(read_rows, n_images: int, unit: int, channels: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` largest scores of every channel over all images, streamed one unit of rows at a time.

    ``read_rows(start, stop)`` gives the [rows, C] scores. Returns (indices, scores), both [C, k] with k <= top,
    largest first; ties go to the smaller index, NaN rows (failed images) never rank. Keeping the running best
    ``top`` per channel is exact: an image of the overall top is in the top of every set of rows it belongs to.
    """
    best_index = np.empty((0, channels), np.int64)
    best_score = np.empty((0, channels), np.float32)
    for start in range(0, n_images, unit):
        stop = min(start + unit, n_images)
        scores = np.concatenate([best_score, np.asarray(read_rows(start, stop), np.float32)])
        indices = np.concatenate([best_index, np.broadcast_to(np.arange(start, stop)[:, None],
                                                              (stop - start, channels))])
        missing = np.isnan(scores)
        order = np.lexsort((indices, -np.where(missing, 0, scores), missing), axis=0)[:top]
        best_index = np.take_along_axis(indices, order, 0)
        best_score = np.take_along_axis(scores, order, 0)
    valid = ~np.isnan(best_score)
    k = int(valid.sum(0).min()) if len(best_score) else 0   # every channel has the same failed images
    return best_index[:k].T, best_score[:k].T


def rank_references(arrays: dict, layers: Sequence[ConceptLayer], paths: Sequence[str], unit: int, top: int,
                    destination: Path):
    """Rank 0, at the end: every layer's top images per channel, mode and statistic into ``concepts.parquet``."""
    pa, pq = require("pyarrow"), require("pyarrow.parquet")
    columns: dict[str, list] = {name: [] for name in ("layer", "node", "channel", "mode", "statistic", "rank",
                                                       "index", "path", "score", "y", "x", "top", "left",
                                                       "bottom", "right")}
    n_images = len(paths)
    for layer in layers:
        grid = layer.field.grid
        for mode in MODES:
            positions = arrays[f"{GROUP}/{layer.layer}/{mode}_argmax"]
            for statistic in STATISTICS:
                scores = arrays[f"{GROUP}/{layer.layer}/{mode}_{statistic}"]
                indices, values = top_images(lambda a, b: scores[a:b], n_images, unit, layer.channels, top)
                if indices.size == 0:
                    continue
                ranked = np.unique(indices)   # read the positions of the ranked images only
                where = positions.get_orthogonal_selection((ranked, slice(None)))
                flat = where[np.searchsorted(ranked, indices), np.arange(layer.channels)[:, None]].reshape(-1)
                boxes = layer.field.boxes(flat)
                coordinates = np.unravel_index(flat, grid) if len(grid) == 2 else (np.zeros_like(flat),) * 2
                k = indices.shape[1]
                columns["layer"] += [layer.layer] * indices.size
                columns["node"] += [layer.node] * indices.size
                columns["channel"] += np.repeat(np.arange(layer.channels), k).tolist()
                columns["mode"] += [mode] * indices.size
                columns["statistic"] += [statistic] * indices.size
                columns["rank"] += np.tile(np.arange(k), layer.channels).tolist()
                columns["index"] += indices.reshape(-1).tolist()
                columns["path"] += [paths[i] for i in indices.reshape(-1)]
                columns["score"] += values.reshape(-1).astype(np.float64).tolist()
                columns["y"] += coordinates[0].tolist()
                columns["x"] += coordinates[1].tolist()
                columns["top"] += boxes[:, 0, 0].tolist()
                columns["bottom"] += boxes[:, 0, 1].tolist()
                columns["left"] += boxes[:, 1, 0].tolist()
                columns["right"] += boxes[:, 1, 1].tolist()
    schema = pa.schema([("layer", pa.string()), ("node", pa.string()), ("channel", pa.int32()), ("mode", pa.string()),
                        ("statistic", pa.string()), ("rank", pa.int32()), ("index", pa.int64()),
                        ("path", pa.string()), ("score", pa.float64()), ("y", pa.int32()), ("x", pa.int32()),
                        ("top", pa.int32()), ("left", pa.int32()), ("bottom", pa.int32()), ("right", pa.int32())])
    table = pa.Table.from_pydict(columns, schema=schema)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, destination)
    return table
