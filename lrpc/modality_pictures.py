"""Pictures of relevance for signals, spectrograms, videos and volumes (re-exported by ``lrpc.viz``).

- ``save_signal``: a waveform or a multichannel signal [T] / [C, T], one row per channel, the signal drawn in the
  colour of its relevance over a relevance strip;
- ``save_spectrogram``: the spectrogram [F, T] (low frequencies at the bottom) beside the relevance over it;
- ``frame_strip`` / ``save_frames`` / ``save_gif``: a video's relevance [T, H, W], frame by frame, as a strip
  PNG or an animated GIF, over the frames when given;
- ``save_slices``: a volume's relevance [D, H, W] as three orthogonal slices through one voxel (by default the
  one of largest |relevance|), over the volume when given.

Every picture of one explanation shares one normalisation (``viz.normalize`` over all its values), so equal
colours mean equal relevance across frames, slices and channels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import viz

MIN_PX = 128   # small maps (a 32x32 frame) are enlarged to at least this side, by an integer factor


def _array(t, ndim: int | tuple[int, ...], what: str) -> np.ndarray:
    array = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in dims:
        raise ValueError(f"{what} must have {' or '.join(map(str, dims))} dimensions, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError(f"{what} must hold finite numbers")
    return array.astype(np.float64)


def _normalized(heat: np.ndarray, cmap: str, percentile: float) -> np.ndarray:
    """``viz.normalize`` over all values of a map of any rank at once (one scale for all frames/slices)."""
    return viz.normalize(heat.reshape(-1, heat.shape[-1]), cmap, percentile).reshape(heat.shape)


def _enlarge(picture: np.ndarray) -> np.ndarray:
    factor = max(1, -(-MIN_PX // min(picture.shape[:2])))
    return picture.repeat(factor, 0).repeat(factor, 1)


def _blend(values: np.ndarray, cmap: str, base: np.ndarray | None, alpha: float) -> np.ndarray:
    """Normalised [H, W] values -> [H, W, 3] uint8, over a grey ``base`` [H, W] in [0, 1] when given."""
    colours = viz._colours(values, cmap)
    if base is not None:
        opacity = alpha * np.abs(values)[..., None]
        colours = base[..., None] * (1.0 - opacity) + colours * opacity
    return np.round(colours * 255.0).astype(np.uint8)


def _grey(frames: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Frames of shape ``spatial`` [N, H, W], or in colour [N, H, W, 3] / [N, 3, H, W] (any value range), as grey
    values in [0, 1] of shape ``spatial``."""
    weights = np.array([0.299, 0.587, 0.114])
    if frames.shape != spatial and frames.ndim == len(spatial) + 1:
        frames = frames @ weights if frames.shape[-1] == 3 else np.moveaxis(frames, 1, -1) @ weights
    if frames.shape != spatial:
        raise ValueError(f"the frames {frames.shape} do not match the relevance {spatial}")
    low, high = frames.min(), frames.max()
    return (frames - low) / (high - low) if high > low else np.zeros_like(frames)


# ------------------------------------------------------------------------------------------ video and volume
def frame_strip(heat, frames=None, cmap: str = "signed", percentile: float = viz.DEFAULT_PERCENTILE,
                alpha: float = 0.7, gap: int = 2) -> np.ndarray:
    """[T, H, W] relevance -> one [H', T·(W'+gap), 3] uint8 strip of its frames, over ``frames`` when given."""
    return _strip(_frame_pictures(heat, frames, cmap, percentile, alpha), gap)


def _frame_pictures(heat, frames, cmap, percentile, alpha) -> list[np.ndarray]:
    heat = _array(heat, 3, "a video heatmap [T, H, W]")
    values = _normalized(heat, cmap, percentile)
    base = None if frames is None else _grey(_array(frames, (3, 4), "frames"), heat.shape)
    return [_enlarge(_blend(values[t], cmap, None if base is None else base[t], alpha)) for t in range(len(heat))]


def _strip(pictures: list[np.ndarray], gap: int) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    parts = []
    for k, picture in enumerate(pictures):
        padded = np.full((height, picture.shape[1], 3), 255, dtype=np.uint8)
        padded[:picture.shape[0]] = picture
        parts += [padded] + ([np.full((height, gap, 3), 255, dtype=np.uint8)] if k < len(pictures) - 1 else [])
    return np.concatenate(parts, axis=1)


def save_frames(heat, path: str | os.PathLike, frames=None, cmap: str = "signed",
                percentile: float = viz.DEFAULT_PERCENTILE, alpha: float = 0.7) -> Path:
    """The frame strip of a video's relevance [T, H, W] as a PNG."""
    return viz.save_png(frame_strip(heat, frames, cmap, percentile, alpha), path)


def save_gif(heat, path: str | os.PathLike, frames=None, cmap: str = "signed",
             percentile: float = viz.DEFAULT_PERCENTILE, alpha: float = 0.7, frame_ms: int = 250) -> Path:
    """A video's relevance [T, H, W] as an animated GIF, one frame per time step, looping."""
    images = [viz._pillow().fromarray(p, mode="RGB") for p in _frame_pictures(heat, frames, cmap, percentile, alpha)]
    path = Path(path)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def orthogonal_slices(heat, volume=None, index: tuple[int, int, int] | None = None, cmap: str = "signed",
                      percentile: float = viz.DEFAULT_PERCENTILE, alpha: float = 0.7) -> np.ndarray:
    """[D, H, W] relevance -> the three slices through voxel ``index`` (default: the largest |relevance|) side
    by side: [H, W] at depth d, [D, W] at row h, [D, H] at column w."""
    heat = _array(heat, 3, "a volume heatmap [D, H, W]")
    if index is None:
        index = tuple(int(i) for i in np.unravel_index(np.abs(heat).argmax(), heat.shape))
    if len(index) != 3 or any(not 0 <= i < s for i, s in zip(index, heat.shape)):
        raise ValueError(f"index {index} is not a voxel of a volume of shape {heat.shape}")
    values = _normalized(heat, cmap, percentile)
    base = None if volume is None else _grey(_array(volume, 3, "the volume [D, H, W]")[None], (1, *heat.shape))[0]
    d, h, w = index
    cuts = [(slice(d, d + 1), slice(None), slice(None)), (slice(None), slice(h, h + 1), slice(None)),
            (slice(None), slice(None), slice(w, w + 1))]
    pictures = []
    for axis, cut in enumerate(cuts):
        plane = values[cut].squeeze(axis)
        pictures.append(_enlarge(_blend(plane, cmap, None if base is None else base[cut].squeeze(axis), alpha)))
    return _strip(pictures, gap=4)


def save_slices(heat, path: str | os.PathLike, volume=None, index: tuple[int, int, int] | None = None,
                cmap: str = "signed", percentile: float = viz.DEFAULT_PERCENTILE, alpha: float = 0.7) -> Path:
    """Three orthogonal slices of a volume's relevance [D, H, W] as a PNG."""
    return viz.save_png(orthogonal_slices(heat, volume, index, cmap, percentile, alpha), path)


# ----------------------------------------------------------------------------------- signals, spectrograms
def _figure(width_px: int, height_px: int):
    return viz.blank_figure(width_px, height_px, "lrpc.viz draws signals and spectrograms")


def _save(figure, path: str | os.PathLike) -> Path:
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", facecolor="white")
    return path


def save_signal(heat, path: str | os.PathLike, signal=None, sample_rate: float | None = None,
                channel_names=None, cmap: str = "signed", percentile: float = viz.DEFAULT_PERCENTILE) -> Path:
    """A waveform's [T] or a multichannel signal's [C, T] relevance, one row per channel: the signal (or, without
    one, the relevance itself) drawn in the colour of each sample's relevance, above a relevance strip."""
    from matplotlib.collections import LineCollection
    heat = _array(heat, (1, 2), "a signal heatmap [T] or [C, T]")
    heat = heat[None] if heat.ndim == 1 else heat
    trace = heat if signal is None else _array(signal, (1, 2), "the signal").reshape(heat.shape)
    values = _normalized(heat, cmap, percentile)
    names = list(channel_names) if channel_names is not None else (
        [f"channel {c}" for c in range(len(heat))] if len(heat) > 1 else [""])
    time = np.arange(heat.shape[1]) / (sample_rate or 1.0)
    figure = _figure(900, 60 + 150 * len(heat))
    axes = figure.subplots(2 * len(heat), 1, sharex=True, gridspec_kw={"height_ratios": [4, 1] * len(heat)},
                           squeeze=False)[:, 0]
    for c in range(len(heat)):
        line, strip = axes[2 * c], axes[2 * c + 1]
        points = np.stack([time, trace[c]], axis=1)
        segments = np.stack([points[:-1], points[1:]], axis=1)
        # each segment in its sample's colour, as opaque as its |relevance|: the grey trace shows where it is 0
        colours = np.concatenate([viz._colours(values[c, :-1], cmap), np.abs(values[c, :-1, None])], axis=1)
        line.plot(time, trace[c], color="0.65", linewidth=0.6, zorder=0)
        line.add_collection(LineCollection(segments, colors=colours, linewidths=1.6))
        line.set_ylabel(names[c] or ("signal" if signal is not None else "relevance"), fontsize=8)
        strip.imshow(viz._colours(values[c][None], cmap), aspect="auto", interpolation="nearest",
                     extent=(time[0], time[-1] if len(time) > 1 else 1.0, 0, 1))
        strip.set_yticks([])
    axes[-1].set_xlabel("time (s)" if sample_rate else "sample", fontsize=8)
    return _save(figure, path)


def save_spectrogram(heat, path: str | os.PathLike, spectrogram=None, cmap: str = "signed",
                     percentile: float = viz.DEFAULT_PERCENTILE, alpha: float = 0.7) -> Path:
    """A spectrogram's relevance [F, T] (frequency bins up, time right): the spectrogram in grey, then the
    relevance over it (alone when no spectrogram is given)."""
    heat = _array(heat, 2, "a spectrogram heatmap [F, T]")
    values = viz.normalize(heat, cmap, percentile)
    base = None if spectrogram is None else _grey(_array(spectrogram, 2, "the spectrogram")[None], (1, *heat.shape))[0]
    panels = ([("spectrogram", np.repeat(base[..., None], 3, axis=2))] if base is not None else []) + \
        [("relevance", _blend(values, cmap, base, alpha) / 255.0)]
    figure = _figure(450 * len(panels), 320)
    for k, (title, picture) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        axes.imshow(picture, origin="lower", aspect="auto", interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("time frame", fontsize=8)
        axes.set_ylabel("frequency bin", fontsize=8)
    return _save(figure, path)
