"""Reading back a job's reference examples: ``lrpc.crp.reference_examples(job, layer, channel, mode=...)``.

``lrpc explain-dataset ... --concepts LAYER [--top N]`` ranks, for every channel of the layer, the job's images by
that channel's relevance and by its activation (``lrpc.dataset_jobs.concepts`` says how) into
``JOB/concepts.parquet``.
This reads one channel's list back, and cuts the reference crops: each image preprocessed as the job saw it
(resize, centre crop, no normalisation), cropped to the receptive field of the channel's maximum.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LrpcError

__all__ = ["ReferenceExamples", "reference_crops", "reference_examples"]

MODES = ("relevance", "activation")
STATISTICS = ("sum", "max")


@dataclass(frozen=True)
class ReferenceExamples:
    """The top images of one channel, best first: their indices in the job (rows of ``table.parquet`` and of
    ``maps.zarr``), paths relative to the job's root, scores (the statistic), positions ``(y, x)`` of the maximum
    in the layer's grid and boxes ``(top, left, bottom, right)`` in input pixels (bottom/right exclusive)."""

    job: Path
    layer: str
    channel: int
    mode: str
    statistic: str
    indices: np.ndarray
    paths: tuple[str, ...]
    scores: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def crops(self, root: str | os.PathLike | None = None) -> list[np.ndarray]:
        """The reference crops, ``[h, w, 3]`` float32 in [0, 1]; see :func:`reference_crops`."""
        return reference_crops(self, root)


def _job_json(job: Path) -> dict:
    try:
        return json.loads((job / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise LrpcError(f"{job} is not an lrpc dataset job (job.json unreadable: {exc})") from exc


def reference_examples(job: str | os.PathLike, layer: str, channel: int, mode: str = "relevance",
                       statistic: str = "sum") -> ReferenceExamples:
    """The top images of ``channel`` of ``layer`` (as given to ``--concepts``) in the finished job ``job``.

    ``mode``: ``"relevance"`` (CRP's relevance maximisation) or ``"activation"``; ``statistic``: ``"sum"`` (over
    the channel's positions; CRP's default) or ``"max"`` (its largest position).
    """
    job = Path(job)
    if mode not in MODES:
        raise LrpcError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if statistic not in STATISTICS:
        raise LrpcError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    layers = _job_json(job).get("concepts") or {}
    if not layers:
        raise LrpcError(f"{job} recorded no concepts: run explain-dataset with --concepts LAYER")
    if layer not in layers:
        raise LrpcError(f"{job} recorded concepts of {', '.join(layers)}, not of {layer!r}")
    channels = layers[layer]["channels"]
    if not isinstance(channel, (int, np.integer)) or not 0 <= channel < channels:
        raise LrpcError(f"channel {channel!r} out of range: layer {layer!r} has {channels} channels")
    if not (job / "concepts.parquet").is_file():
        raise LrpcError(f"{job} has no concepts.parquet yet: the job is not finished (rerun the same command)")
    from ..optional import require

    pq = require("pyarrow.parquet")
    table = pq.read_table(job / "concepts.parquet", filters=[("layer", "==", layer), ("channel", "==", int(channel)),
                                                            ("mode", "==", mode), ("statistic", "==", statistic)])
    rows = table.sort_by("rank").to_pydict()
    return ReferenceExamples(job, layer, int(channel), mode, statistic, np.array(rows["index"], np.int64),
                             tuple(rows["path"]), np.array(rows["score"], np.float64),
                             np.array([rows["y"], rows["x"]], np.int64).T.reshape(-1, 2),
                             np.array([rows["top"], rows["left"], rows["bottom"], rows["right"]],
                                      np.int64).T.reshape(-1, 4))


def reference_crops(examples: ReferenceExamples, root: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Each reference image as the job's model saw it (resized and centre-cropped, not normalised), cut to its
    box: ``[h, w, 3]`` float32 in [0, 1]. ``root`` is the dataset folder (default: the job's own root)."""
    from PIL import Image

    from ..data.folder import preprocess_image

    description = _job_json(examples.job)
    config = description["config"]
    root = Path(root if root is not None else description["root"])
    crops = []
    for path, (top, left, bottom, right) in zip(examples.paths, examples.boxes):
        try:
            with Image.open(root / path) as image:
                image = image.convert("RGB")
        except OSError as exc:
            raise LrpcError(f"cannot read reference image {root / path} ({exc}); pass root= (the job's dataset "
                            "folder) if it moved") from exc
        pixels = preprocess_image(image, config["resize"], config["input_size"], (0, 0, 0), (1, 1, 1))
        crops.append(pixels[:, top:bottom, left:right].permute(1, 2, 0).numpy())
    return crops
