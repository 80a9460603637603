"""CRP's "glocal" figure: the top concepts of one explanation, each as its conditional heatmap (local: where in
this image the concept mattered) beside its reference examples over a dataset (global: what the concept is).

:func:`glocal_concepts` computes the rows: the layer's channels ranked by their relevance R_c for this input
(``rank_concepts``), the conditional heatmap of each of the top ``k`` (``conditional_heatmaps``) and, given a job
made with ``explain-dataset --concepts LAYER``, each channel's reference crops (``reference_examples``).
:func:`glocal_figure` draws precomputed rows, whatever computed them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import LrpcError
from ..viz import blank_figure, overlay
from .conditional import conditional_heatmaps
from .ranking import rank_concepts
from .references import reference_examples

__all__ = ["GlocalConcept", "glocal_concepts", "glocal_figure"]

PANEL_PX = 160     # side of the image and heatmap panels
CROP_PX = 96       # side of a reference crop
LABEL_PX = 24      # height of the label strip above a row's panels
GAP_PX = 12        # between a row's heatmap and its crops


@dataclass(frozen=True)
class GlocalConcept:
    """One row of the figure: a channel, its relevance R_c for the explained input and its share of Σ_c |R_c|,
    its conditional heatmap [H, W], and its reference crops ([h, w, 3] floats in [0, 1]), best first."""

    channel: int
    relevance: float
    share: float
    heatmap: np.ndarray
    crops: Sequence[np.ndarray] = field(default_factory=tuple)


def glocal_concepts(explainer, x: torch.Tensor, layer: str, *, k: int = 6, target=None,
                    job: str | os.PathLike | None = None, crops: int = 8, mode: str = "relevance",
                    statistic: str = "sum", root: str | os.PathLike | None = None) -> list[GlocalConcept]:
    """The ``k`` most relevant channels of ``layer`` for the one input ``x`` ([1, C, H, W]), most relevant
    first, each with its conditional heatmap and, when ``job`` is given, its first ``crops`` reference crops
    (``mode`` and ``statistic`` as in :func:`lrpc.crp.reference_examples`; ``root`` if the dataset moved)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 1:
        raise LrpcError(f"glocal_concepts explains one input: x must be [1, ...], got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(k, int) or k < 1:
        raise LrpcError(f"k must be a positive integer, got {k!r}")
    ranking = rank_concepts(explainer, x, layer, target)
    channels = ranking.top(k, sample=0).tolist()
    maps = conditional_heatmaps(explainer, x, layer, channels, target)[0].float().cpu().numpy()
    rows = []
    for channel, heatmap in zip(channels, maps):
        pictures = ()
        if job is not None:
            pictures = tuple(reference_examples(job, layer, channel, mode, statistic).crops(root)[:crops])
        rows.append(GlocalConcept(channel, float(ranking.relevance[0, channel]), float(ranking.share[0, channel]),
                                  heatmap, pictures))
    return rows


def glocal_figure(image, heatmap, concepts: Sequence[GlocalConcept], path: str | os.PathLike, *,
                  layer: str = "", title: str = "") -> Path:
    """Write the figure as a PNG: a first row with ``image`` ([H, W, 3], floats in [0, 1] or uint8) and its
    ``heatmap`` ([H, W]) over it, then one row per concept: its conditional heatmap over the image, then its
    reference crops. Heatmaps use lrpc's signed colours (``lrpc.viz``)."""
    if not concepts:
        raise LrpcError("glocal_figure needs at least one concept")
    dpi = 100
    most_crops = max(len(concept.crops) for concept in concepts)
    crops_left = PANEL_PX + GAP_PX
    width = max(2 * PANEL_PX + GAP_PX + 200, crops_left + most_crops * CROP_PX)
    row_px = PANEL_PX + LABEL_PX
    height = (1 + len(concepts)) * row_px
    figure = blank_figure(width, height, "lrpc.crp.glocal_figure draws", dpi)

    def panel(picture, x_px: int, row: int, size: int) -> None:
        top = row * row_px + LABEL_PX + (PANEL_PX - size) // 2
        axes = figure.add_axes((x_px / width, 1 - (top + size) / height, size / width, size / height))
        axes.imshow(picture, interpolation="nearest")
        axes.set_axis_off()

    def label(text: str, x_px: int, row: int) -> None:
        figure.text(x_px / width, 1 - (row * row_px + LABEL_PX * 0.55) / height, text, fontsize=9, va="center")

    panel(np.asarray(image), 0, 0, PANEL_PX)
    panel(overlay(image, heatmap), PANEL_PX + GAP_PX, 0, PANEL_PX)
    label(title or "input", 4, 0)
    label("heatmap" + (f"; its top {len(concepts)} concepts in {layer} below" if layer else ""),
          PANEL_PX + GAP_PX + 4, 0)
    for row, concept in enumerate(concepts, 1):
        panel(overlay(image, concept.heatmap), 0, row, PANEL_PX)
        label(f"channel {concept.channel}: R = {concept.relevance:.3g} ({100 * concept.share:.0f} %)", 4, row)
        if concept.crops:
            label("reference examples", crops_left + 4, row)
        for k, crop in enumerate(concept.crops):
            panel(crop, crops_left + k * CROP_PX, row, CROP_PX - 6)
    path = Path(path)
    figure.savefig(path, dpi=dpi, format="png", facecolor="white")
    return path
