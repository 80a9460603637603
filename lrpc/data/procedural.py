"""A seeded procedural image task with known ground truth: which pixels hold the evidence for the class.

Each scene is one filled *object* whose shape defines the class (disc, square, triangle, cross) drawn over
textured clutter (smooth colour noise plus an oriented grating) and up to 4 *distractors* of shapes that belong
to no class (ring, bar, hollow square frame): 2 to 4 are drawn and placed clear of the object, and the few
(about 7 %) that find no room are dropped. Colours of object and distractors come from the same distribution,
and object areas are matched across classes, so only the object's shape tells the class apart. Every sample
carries the object mask and a counterfactual render of the same scene without the object (the clutter the
object covered). The counterfactual is exactly equal to the image outside the mask.

Rendering is vectorised over a chunk of scenes; chunks are seeded from (seed, chunk index) so that
``render_scenes(n, seed)`` is a prefix of ``render_scenes(m, seed)`` for n < m.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLASSES", "DISTRACTORS", "SPLIT_SEEDS", "ShapeScenes", "render_scenes", "split_scenes"]

CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross")
DISTRACTORS: tuple[str, ...] = ("ring", "bar", "frame")
# Fixed seeds of the splits the shipped checkpoint was trained and tested on (train uses one seed per epoch
# counted up from its base, far away from val/test).
SPLIT_SEEDS: dict[str, int] = {"train": 1_000_000, "val": 1, "test": 2}

_CHUNK = 256
# Size parameters r as fractions of the image side (objects cover pi * r^2 pixels).
_OBJECT_SIZE = (0.16, 0.24)
_DISTRACTOR_SIZE = (0.07, 0.12)
# Area-matched sizes: every class covers pi * r^2 pixels for a size parameter r.
_SQUARE_HALF_SIDE = np.sqrt(np.pi) / 2  # (2s)^2 = pi r^2
_TRIANGLE_INRADIUS = np.sqrt(np.pi / (3 * np.sqrt(3)))  # equilateral area 3*sqrt(3)*rin^2 = pi r^2
_CROSS_ARM_RATIO = 0.35  # half-width / half-length of a cross arm
_CROSS_HALF_LENGTH = np.sqrt(np.pi / (8 * _CROSS_ARM_RATIO - 4 * _CROSS_ARM_RATIO ** 2))
# Farthest extent of each shape from its centre, in units of its size parameter, used to keep shapes inside
# the image and distractors clear of the object.
_OBJECT_EXTENT = np.array([1.0, _SQUARE_HALF_SIDE * np.sqrt(2), 2 * _TRIANGLE_INRADIUS,
                           _CROSS_HALF_LENGTH * np.hypot(1.0, _CROSS_ARM_RATIO)], np.float32)
_BAR_HALF_LENGTH, _BAR_HALF_WIDTH = 1.4, 0.2
_DISTRACTOR_EXTENT = np.array([1.0, np.hypot(_BAR_HALF_LENGTH, _BAR_HALF_WIDTH), np.sqrt(2)], np.float32)
_MIN_COLOUR_CONTRAST = 0.45  # Euclidean RGB distance from the mean background colour
_PIXEL_NOISE_STD = 0.03


@dataclass(frozen=True)
class ShapeScenes:
    """A batch of scenes. images/counterfactuals: float32 [N,3,H,W] in [0,1]; masks: bool [N,H,W]; labels: int64 [N]."""

    images: np.ndarray
    counterfactuals: np.ndarray
    masks: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice | np.ndarray) -> "ShapeScenes":
        """A sub-batch: a slice (views into these arrays) or an index/boolean array (copies)."""
        if isinstance(index, (int, np.integer)):
            raise TypeError("index ShapeScenes with a slice or an index array; a sub-batch keeps its batch axis")
        return ShapeScenes(self.images[index], self.counterfactuals[index], self.masks[index], self.labels[index])


def render_scenes(n: int, seed: int, image_size: int = 64) -> ShapeScenes:
    """Render ``n`` scenes deterministically from ``seed``; labels are balanced within every full chunk of 256."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    size = int(image_size)
    # Chunks render straight into the output arrays: allocating and concatenating per-chunk copies costs
    # more than the rendering itself.
    scenes = _allocate(n, size)
    for chunk_index, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([int(seed), chunk_index])
        if n - start >= _CHUNK:
            _render_chunk(rng, scenes[start:start + _CHUNK])
        else:
            # A partial chunk is rendered whole and cut, so its scenes do not depend on n.
            full = _allocate(_CHUNK, size)
            _render_chunk(rng, full)
            for name in ("images", "counterfactuals", "masks", "labels"):
                getattr(scenes, name)[start:] = getattr(full, name)[:n - start]
    return scenes


def _allocate(n: int, size: int) -> ShapeScenes:
    return ShapeScenes(np.empty((n, 3, size, size), np.float32), np.empty((n, 3, size, size), np.float32),
                       np.empty((n, size, size), bool), np.empty(n, np.int64))


def split_scenes(split: str, n: int, image_size: int = 64) -> ShapeScenes:
    """The fixed ``val`` or ``test`` split the shipped checkpoint is evaluated on."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' (training draws fresh scenes per epoch), got {split!r}")
    return render_scenes(n, SPLIT_SEEDS[split], image_size)


def _render_chunk(rng: np.random.Generator, out: ShapeScenes) -> None:
    n, size = len(out), out.images.shape[-1]
    coords = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = coords[:, None], coords[None, :]

    scene = out.counterfactuals
    scene[...] = _clutter(rng, n, size, xs, ys)
    mean_background = scene.mean(axis=(2, 3))

    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    radius = size * rng.uniform(*_OBJECT_SIZE, n).astype(np.float32)
    margin = radius * _OBJECT_EXTENT[labels] + 1
    centre = rng.uniform(margin[:, None], size - margin[:, None], (n, 2)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    object_mask = _object_masks(labels, *_local_frame(xs, ys, centre, angle), radius)

    for slot in range(4):
        kind = rng.integers(0, len(DISTRACTORS), n)
        d_radius = size * rng.uniform(*_DISTRACTOR_SIZE, n).astype(np.float32)
        d_centre, placed = _place_away_from(rng, centre, margin, d_radius * _DISTRACTOR_EXTENT[kind] + 1, size)
        # Scenes draw 2 to 4 distractors: the last two are kept with probability 1/2 each.
        placed &= rng.random(n) < (1.0 if slot < 2 else 0.5)
        d_angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        d_mask = _distractor_masks(kind, *_local_frame(xs, ys, d_centre, d_angle), d_radius) & placed[:, None, None]
        np.copyto(scene, _contrasting_colours(rng, mean_background)[:, :, None, None], where=d_mask[:, None])

    image = out.images
    image[...] = scene
    np.copyto(image, _contrasting_colours(rng, mean_background)[:, :, None, None], where=object_mask[:, None])
    # One noise field on both renders keeps them equal outside the mask. Uniform, not Gaussian, noise: numpy's
    # float32 normal sampler is several times slower and dominated the rendering time.
    noise = rng.random(scene.shape, dtype=np.float32)
    noise -= 0.5
    noise *= _PIXEL_NOISE_STD * np.sqrt(12)
    image += noise
    scene += noise
    np.clip(image, 0, 1, out=image)
    np.clip(scene, 0, 1, out=scene)
    out.masks[...] = object_mask
    out.labels[...] = labels


def _clutter(rng: np.random.Generator, n: int, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Smooth colour noise (a bilinearly upsampled 5x5 grid) plus a random oriented luminance grating."""
    grid = 5
    knots = rng.uniform(0.1, 0.9, (n, 3, grid, grid)).astype(np.float32)
    upsample = _bilinear_matrix(grid, size)
    smooth = np.einsum("hi,ncij,wj->nchw", upsample, knots, upsample, optimize=True)
    frequency = rng.uniform(2, 8, n).astype(np.float32) * 2 * np.pi / size
    theta = rng.uniform(0, np.pi, n).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    amplitude = rng.uniform(0.05, 0.2, n).astype(np.float32)
    grating = amplitude[:, None, None] * np.sin(
        frequency[:, None, None] * (xs * np.cos(theta)[:, None, None] + ys * np.sin(theta)[:, None, None])
        + phase[:, None, None])
    return smooth + grating[:, None]


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of 1-D linear interpolation from n_in knots spread over n_out pixels."""
    position = np.linspace(0, n_in - 1, n_out)
    lower = np.clip(np.floor(position).astype(int), 0, n_in - 2)
    frac = position - lower
    matrix = np.zeros((n_out, n_in), np.float32)
    matrix[np.arange(n_out), lower] = 1 - frac
    matrix[np.arange(n_out), lower + 1] = frac
    return matrix


def _local_frame(xs, ys, centre, angle):
    """Per-scene rotated coordinates (u, v) of every pixel relative to ``centre``: [N,H,W] each."""
    dx = xs[None] - centre[:, 1, None, None]
    dy = ys[None] - centre[:, 0, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return dx * cos + dy * sin, dy * cos - dx * sin


def _object_masks(labels, u, v, radius) -> np.ndarray:
    r = radius[:, None, None]
    masks = np.zeros(u.shape, bool)
    for label, name in enumerate(CLASSES):
        pick = labels == label
        uu, vv, rr = u[pick], v[pick], r[pick]
        if name == "disc":
            inside = uu ** 2 + vv ** 2 <= rr ** 2
        elif name == "square":
            inside = np.maximum(np.abs(uu), np.abs(vv)) <= _SQUARE_HALF_SIDE * rr
        elif name == "triangle":
            inradius = _TRIANGLE_INRADIUS * rr
            inside = np.ones(uu.shape, bool)
            for k in range(3):
                normal = 2 * np.pi * k / 3
                inside &= uu * np.cos(normal) + vv * np.sin(normal) <= inradius
        else:  # cross
            half_length = _CROSS_HALF_LENGTH * rr
            half_width = _CROSS_ARM_RATIO * half_length
            au, av = np.abs(uu), np.abs(vv)
            inside = ((au <= half_length) & (av <= half_width)) | ((av <= half_length) & (au <= half_width))
        masks[pick] = inside
    return masks


def _distractor_masks(kinds, u, v, radius) -> np.ndarray:
    r = radius[:, None, None]
    thickness = np.maximum(1.5, 0.3 * r)
    masks = np.zeros(u.shape, bool)
    for kind, name in enumerate(DISTRACTORS):
        pick = kinds == kind
        uu, vv, rr, tt = u[pick], v[pick], r[pick], thickness[pick]
        if name == "ring":
            distance = np.sqrt(uu ** 2 + vv ** 2)
            inside = (distance <= rr) & (distance >= rr - tt)
        elif name == "bar":
            inside = (np.abs(uu) <= _BAR_HALF_LENGTH * rr) & (np.abs(vv) <= np.maximum(1.0, _BAR_HALF_WIDTH * rr))
        else:  # frame: a hollow square
            chebyshev = np.maximum(np.abs(uu), np.abs(vv))
            inside = (chebyshev <= rr) & (chebyshev >= rr - tt)
        masks[pick] = inside
    return masks


def _place_away_from(rng, centre, object_margin, extent, size, candidates: int = 32):
    """Centres for one distractor per scene that keep clear of the object; ``placed`` is False where none fit."""
    n = len(centre)
    low, high = extent[:, None, None], size - extent[:, None, None]
    proposals = rng.uniform(low, high, (n, candidates, 2)).astype(np.float32)
    clearance = np.linalg.norm(proposals - centre[:, None], axis=2)
    fits = clearance >= (object_margin + extent)[:, None]
    first = fits.argmax(axis=1)
    return proposals[np.arange(n), first], fits.any(axis=1)


def _contrasting_colours(rng: np.random.Generator, mean_background: np.ndarray) -> np.ndarray:
    """Uniform RGB colours, pushed away from the scene's mean background colour where they are too close."""
    colour = rng.uniform(0, 1, mean_background.shape).astype(np.float32)
    offset = colour - mean_background
    distance = np.linalg.norm(offset, axis=1, keepdims=True)
    direction = np.where(distance > 1e-6, offset / np.maximum(distance, 1e-6), np.float32(1 / np.sqrt(3)))
    pushed = np.clip(mean_background + _MIN_COLOUR_CONTRAST * direction, 0, 1)
    return np.where(distance < _MIN_COLOUR_CONTRAST, pushed, colour)
