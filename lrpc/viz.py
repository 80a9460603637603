"""Heatmap rendering: the usual LRP colormaps, normalisation, overlays, Heat-Quantized display, method panels.

Colour mapping and blending are plain numpy; writing PNGs needs Pillow and :func:`panels` needs matplotlib
(``pip install 'lrpc[viz]'``). Both are imported only when used, with an error that says what to install.

Maps are [H, W] arrays or tensors (``exp.heatmap()[k]``); images are [H, W, 3] uint8 or floats in [0, 1].
Waveforms, multichannel signals, spectrograms, videos and volumes have their own pictures (``save_signal``,
``save_spectrogram``, ``save_frames`` / ``save_gif``, ``save_slices``; ``lrpc.modality_pictures``).

- ``"signed"``: blue – white – red, centred at zero after *symmetric* normalisation (divide by the largest
  |R|), so equal colours mean equal |relevance| on both sides and zero is white;
- ``"positive"``: black – red – yellow – white ("hot") over the positive part divided by its largest value.

"Largest" is the ``percentile`` (default 99.5) of the values: the brightest half percent saturate, so a few
extreme pixels cannot wash out the rest of the map. ``percentile=100`` divides by the true maximum.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .quantize import heat_quantize

__all__ = ["COLORMAPS", "DEFAULT_PERCENTILE", "normalize", "colorize", "overlay", "save_png", "save_heatmap", "save_overlay",
           "panels", "PANEL_PX", "TITLE_PX"]

# (position in [0, 1], RGB) anchors, linearly interpolated
COLORMAPS: dict[str, tuple[tuple[float, tuple[float, float, float]], ...]] = {
    "signed": ((0.0, (0.0, 0.0, 1.0)), (0.5, (1.0, 1.0, 1.0)), (1.0, (1.0, 0.0, 0.0))),
    "positive": ((0.0, (0.0, 0.0, 0.0)), (0.4, (0.9, 0.0, 0.0)), (0.75, (1.0, 0.85, 0.0)), (1.0, (1.0, 1.0, 1.0))),
}
DEFAULT_PERCENTILE = 99.5
PANEL_PX = 224   # side of one panel in pixels
TITLE_PX = 36    # height of the title strip above each panel


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("lrpc.viz writes PNGs with Pillow: pip install 'lrpc[viz]' (or pip install pillow)") from exc
    return Image


def blank_figure(width_px: float, height_px: float, who: str, dpi: int = 100):
    """An empty matplotlib ``Figure`` of ``width_px`` x ``height_px`` pixels on an Agg canvas (no GUI backend, no
    global pyplot state); ``who`` ("lrpc.x draws ...") starts the error that says to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{who} with matplotlib: pip install 'lrpc[viz]'") from exc
    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _as_map(heat) -> np.ndarray:
    array = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    if array.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D [H, W], got shape {array.shape} (sum the relevance over "
                         "channels first: exp.heatmap()[k])")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError("a heatmap must hold finite numbers")
    return array.astype(np.float64)


def _as_image(image) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image must be [H, W, 3] (or [H, W] grey), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def _check_cmap(cmap: str) -> None:
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose one of {tuple(COLORMAPS)}")


def normalize(heat, cmap: str = "signed", percentile: float = DEFAULT_PERCENTILE) -> np.ndarray:
    """Symmetric normalisation to [-1, 1] (``"signed"``: divided by the ``percentile`` of |R|, then clipped) or
    the positive part to [0, 1] (``"positive"``); an all-zero map stays zero."""
    _check_cmap(cmap)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    array = _as_map(heat)
    if cmap == "positive":
        array = np.clip(array, 0.0, None)
    magnitude = np.abs(array)
    scale = np.percentile(magnitude, percentile) if percentile < 100.0 else magnitude.max()
    if scale <= 0:  # fewer nonzero values than the percentile skips: fall back to the maximum
        scale = magnitude.max()
    return np.clip(array / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(array)


def colorize(heat, cmap: str = "signed", quantize: int | None = None,
             percentile: float = DEFAULT_PERCENTILE) -> np.ndarray:
    """[H, W] map -> [H, W, 3] uint8. ``quantize=Q`` shows the Heat-Quantized map (Q levels) instead."""
    _check_cmap(cmap)
    if quantize is not None:
        heat = heat_quantize(torch.as_tensor(_as_map(heat)), quantize)
    return np.round(_colours(normalize(heat, cmap, percentile), cmap) * 255.0).astype(np.uint8)


def _colours(values: np.ndarray, cmap: str) -> np.ndarray:
    """Normalised values ([-1, 1] signed, [0, 1] positive) -> [H, W, 3] RGB floats in [0, 1]."""
    position = (values + 1.0) / 2.0 if cmap == "signed" else values
    anchors = COLORMAPS[cmap]
    xs = [x for x, _ in anchors]
    return np.stack([np.interp(position, xs, [c[i] for _, c in anchors]) for i in range(3)], axis=-1)


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return values
    image = _pillow().fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), resample=2), dtype=np.float64)  # 2 = bilinear


def overlay(image, heat, alpha: float = 0.7, cmap: str = "signed", quantize: int | None = None,
            percentile: float = DEFAULT_PERCENTILE, grey: bool = True) -> np.ndarray:
    """The colorized map blended over ``image`` (greyed, so the colours read clearly). Each pixel's opacity is
    ``alpha`` times its normalised |relevance|: where relevance is zero the photo shows through. A map of another
    size is resized (bilinear) to the image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _as_image(image)
    if grey:
        base = np.repeat((base @ np.array([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    size = base.shape[:2]
    if quantize is not None:
        heat = heat_quantize(torch.as_tensor(_as_map(heat)), quantize)
    values = _resize_map(normalize(heat, cmap, percentile), size)
    colours = _colours(values, cmap)
    opacity = alpha * np.abs(values)[..., None]
    return np.round((base * (1.0 - opacity) + colours * opacity) * 255.0).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an [H, W, 3] uint8 array as a PNG of exactly H x W pixels."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_png expects an [H, W, 3] uint8 array, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    _pillow().fromarray(rgb, mode="RGB").save(path, format="PNG")
    return path


def save_heatmap(heat, path: str | os.PathLike, cmap: str = "signed", quantize: int | None = None,
                 percentile: float = DEFAULT_PERCENTILE) -> Path:
    """The bare colorized map as a PNG of the map's own size."""
    return save_png(colorize(heat, cmap, quantize, percentile), path)


def save_overlay(image, heat, path: str | os.PathLike, alpha: float = 0.7, cmap: str = "signed",
                 quantize: int | None = None, percentile: float = DEFAULT_PERCENTILE) -> Path:
    """The overlay as a PNG of the image's size."""
    return save_png(overlay(image, heat, alpha, cmap, quantize, percentile), path)


def panels(images, maps: Mapping[str, Sequence], path: str | os.PathLike, *, row_labels: Sequence[str] = (),
           cmap: str = "signed", quantize: int | None = None, percentile: float = DEFAULT_PERCENTILE,
           show_overlay: bool = False, panel_px: int = PANEL_PX) -> Path:
    """Side-by-side panels: one row per image, its photo first, then one column per method.

    ``images`` is one [H, W, 3] image or a sequence of them; ``maps[method]`` the matching [H, W] map or
    sequence of maps (a [N, H, W] tensor works). ``row_labels`` go under the photos' column title.
    The PNG is ``(1 + len(maps)) * panel_px`` wide and ``rows * (panel_px + TITLE_PX)`` high.
    """
    _check_cmap(cmap)
    single = _is_single_image(images)
    rows = [images] if single else list(images)
    columns = {name: ([m] if single else list(m)) for name, m in maps.items()}
    for name, column in columns.items():
        if len(column) != len(rows):
            raise ValueError(f"maps[{name!r}] has {len(column)} maps for {len(rows)} images")
    if row_labels and len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} images")
    dpi = 100
    ncols, nrows = 1 + len(columns), len(rows)
    cell_h = panel_px + TITLE_PX
    figure = blank_figure(ncols * panel_px, nrows * cell_h, "lrpc.viz.panels draws", dpi)
    for r, image in enumerate(rows):
        cells = [("image" if not row_labels else row_labels[r], _as_image(image))]
        for name, column in columns.items():
            shown = (overlay(image, column[r], cmap=cmap, quantize=quantize, percentile=percentile)
                     if show_overlay else colorize(column[r], cmap, quantize, percentile))
            cells.append((name if quantize is None else f"{name} (HQ{quantize})", shown))
        for c, (title, picture) in enumerate(cells):
            # axes placed in figure fractions: each panel exactly panel_px square under a title strip
            left, bottom = c / ncols, 1.0 - (r + 1) * cell_h / (nrows * cell_h)
            axes = figure.add_axes((left, bottom, 1.0 / ncols, panel_px / (nrows * cell_h)))
            axes.imshow(picture, interpolation="nearest")
            axes.set_axis_off()
            axes.set_title(title, fontsize=8, wrap=True)
    path = Path(path)
    figure.savefig(path, dpi=dpi, format="png", facecolor="white")
    return path


def _is_single_image(images) -> bool:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] == 3)
    return False


# pictures of signals, spectrograms, videos and volumes (they use the colour mapping above)
from .modality_pictures import (frame_strip, orthogonal_slices, save_frames, save_gif, save_signal,  # noqa: E402
                                save_slices, save_spectrogram)

__all__ += ["save_signal", "save_spectrogram", "frame_strip", "save_frames", "save_gif", "orthogonal_slices",
            "save_slices"]
