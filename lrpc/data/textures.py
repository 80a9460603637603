"""A second seeded ground-truth task: the class is the *texture* of one object among several, partly occluded.

Each scene holds one *object*, an ellipse (random size, aspect and rotation) filled with a two-colour texture
whose kind is the class (stripes, checkerboard, dots, concentric rings; random period, orientation, phase and
colours), and 2 to 4 *distractor* ellipses filled with textures of no class (a solid colour, a linear colour
gradient, coarse colour speckle). The background is smooth colour noise. Distractors are drawn after the object,
so about half of the scenes have the object partly *occluded*; a distractor that would hide more than 35 % of
the object is dropped. The object mask holds the object's visible pixels only. The counterfactual is the same
scene rendered without the object (background and distractors, occluders in the same places): it equals the
image outside the mask.

Unlike the shapes task (``lrpc.data.procedural``), the class evidence is a texture spread over the whole object
rather than its outline, the object's silhouette says nothing about the class (every object is an ellipse), and
the object competes with several textured regions. Rendering is vectorised and seeded per chunk like the shapes
task, so ``render_texture_scenes(n, seed)`` is a prefix of ``render_texture_scenes(m, seed)`` for n < m.
"""
from __future__ import annotations

import numpy as np

from .procedural import ShapeScenes, _allocate, _bilinear_matrix, _contrasting_colours, _local_frame

__all__ = ["TEXTURE_CLASSES", "TEXTURE_DISTRACTORS", "TEXTURE_SPLIT_SEEDS", "render_texture_scenes",
           "texture_split_scenes"]

TEXTURE_CLASSES: tuple[str, ...] = ("stripes", "checker", "dots", "rings")
TEXTURE_DISTRACTORS: tuple[str, ...] = ("solid", "gradient", "speckle")
# Far from the shapes task's seeds, so that no scene of one task shares a random stream with the other.
TEXTURE_SPLIT_SEEDS: dict[str, int] = {"train": 2_000_000, "val": 11, "test": 12}

_CHUNK = 256
_OBJECT_RADIUS = (0.2, 0.3)        # semi-major axis, fraction of the side
_DISTRACTOR_RADIUS = (0.1, 0.2)
_ASPECT = (0.6, 1.0)               # minor / major semi-axis
_PERIOD = (5.0, 9.0)               # texture period in pixels
_MAX_OCCLUSION = 0.35
_PIXEL_NOISE_STD = 0.03


def render_texture_scenes(n: int, seed: int, image_size: int = 64) -> ShapeScenes:
    """Render ``n`` scenes deterministically from ``seed``; labels are balanced within every full chunk of 256."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    parts = [_render_chunk(np.random.default_rng([int(seed), chunk]), int(image_size))
             for chunk in range((n + _CHUNK - 1) // _CHUNK)]
    if not parts:
        return _allocate(0, int(image_size))
    return ShapeScenes(*(np.concatenate([getattr(p, name) for p in parts])[:n]
                         for name in ("images", "counterfactuals", "masks", "labels")))


def texture_split_scenes(split: str, n: int, image_size: int = 64) -> ShapeScenes:
    """The fixed ``val`` or ``test`` split of the texture task."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' (training draws fresh scenes per epoch), got {split!r}")
    return render_texture_scenes(n, TEXTURE_SPLIT_SEEDS[split], image_size)


def _render_chunk(rng: np.random.Generator, size: int) -> ShapeScenes:
    n = _CHUNK
    coords = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = coords[:, None], coords[None, :]

    knots = rng.uniform(0.1, 0.9, (n, 3, 5, 5)).astype(np.float32)
    upsample = _bilinear_matrix(5, size)
    background = np.einsum("hi,ncij,wj->nchw", upsample, knots, upsample, optimize=True)
    mean_background = background.mean(axis=(2, 3))

    labels = rng.permutation(np.arange(n) % len(TEXTURE_CLASSES)).astype(np.int64)
    radius = size * rng.uniform(*_OBJECT_RADIUS, n).astype(np.float32)
    centre = rng.uniform(radius[:, None] + 1, size - radius[:, None] - 1, (n, 2)).astype(np.float32)
    object_mask, u, v = _ellipse(rng, xs, ys, centre, radius)
    texture = _class_texture(rng, labels, u, v)
    image = background.copy()
    _paint_two_colours(rng, image, texture, object_mask, mean_background)
    scene = background

    visible = object_mask.copy()
    object_area = object_mask.sum(axis=(1, 2))
    for slot in range(4):
        d_radius = size * rng.uniform(*_DISTRACTOR_RADIUS, n).astype(np.float32)
        d_centre = rng.uniform(d_radius[:, None], size - d_radius[:, None], (n, 2)).astype(np.float32)
        d_mask, du, dv = _ellipse(rng, xs, ys, d_centre, d_radius)
        hidden = (d_mask & visible).sum(axis=(1, 2))
        keep = (rng.random(n) < (1.0 if slot < 2 else 0.5)) & (hidden + object_area - visible.sum(axis=(1, 2))
                                                                <= _MAX_OCCLUSION * object_area)
        d_mask &= keep[:, None, None]
        fill = _distractor_fill(rng, rng.integers(0, len(TEXTURE_DISTRACTORS), n), du, dv, mean_background)
        np.copyto(scene, fill, where=d_mask[:, None])
        np.copyto(image, fill, where=d_mask[:, None])
        visible &= ~d_mask

    noise = (rng.random(scene.shape, dtype=np.float32) - 0.5) * (_PIXEL_NOISE_STD * np.sqrt(12))
    image = np.clip(image + noise, 0, 1)
    scene = np.clip(scene + noise, 0, 1)
    return ShapeScenes(image.astype(np.float32), scene.astype(np.float32), visible, labels)


def _ellipse(rng, xs, ys, centre, radius):
    """Masks [N, H, W] of rotated ellipses with semi-major axis ``radius``, and the rotated coordinates (u, v)."""
    n = len(radius)
    u, v = _local_frame(xs, ys, centre, rng.uniform(0, np.pi, n).astype(np.float32))
    minor = radius * rng.uniform(*_ASPECT, n).astype(np.float32)
    inside = (u / radius[:, None, None]) ** 2 + (v / minor[:, None, None]) ** 2 <= 1
    return inside, u, v


def _class_texture(rng, labels, u, v) -> np.ndarray:
    """[N, H, W] bool: which of the two texture colours each pixel takes, by class."""
    n = len(labels)
    frequency = (2 * np.pi / rng.uniform(*_PERIOD, n).astype(np.float32))[:, None, None]
    theta = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
    a = u * np.cos(theta) + v * np.sin(theta)            # texture axes, rotated independently of the ellipse
    b = v * np.cos(theta) - u * np.sin(theta)
    phase_a = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    phase_b = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    wave_a, wave_b = np.sin(frequency * a + phase_a), np.sin(frequency * b + phase_b)
    textures = {
        "stripes": wave_a > 0,
        "checker": wave_a * wave_b > 0,
        "dots": np.cos(frequency * a + phase_a) + np.cos(frequency * b + phase_b) > 1.0,
        "rings": np.sin(frequency * np.hypot(a, b) + phase_a) > 0,
    }
    out = np.zeros(u.shape, bool)
    for label, name in enumerate(TEXTURE_CLASSES):
        pick = labels == label
        out[pick] = textures[name][pick]
    return out


def _paint_two_colours(rng, image, texture, mask, mean_background) -> None:
    first = _contrasting_colours(rng, mean_background)
    second = _contrasting_colours(rng, first)   # the texture's two colours differ clearly from each other
    np.copyto(image, first[:, :, None, None], where=(mask & texture)[:, None])
    np.copyto(image, second[:, :, None, None], where=(mask & ~texture)[:, None])


def _distractor_fill(rng, kinds, u, v, mean_background) -> np.ndarray:
    """[N, 3, H, W] fills of no class: a solid colour, a linear gradient between two colours, coarse speckle."""
    n, size = len(kinds), u.shape[-1]
    first = _contrasting_colours(rng, mean_background)
    second = _contrasting_colours(rng, first)
    solid = np.broadcast_to(first[:, :, None, None], (n, 3, size, size))
    ramp = np.clip(u / size + 0.5, 0, 1)[:, None]
    gradient = first[:, :, None, None] * (1 - ramp) + second[:, :, None, None] * ramp
    cells = rng.uniform(0, 1, (n, 3, size // 4, size // 4)).astype(np.float32)
    speckle = np.repeat(np.repeat(cells, 4, axis=2), 4, axis=3)
    return np.where(kinds[:, None, None, None] == 0, solid,
                    np.where(kinds[:, None, None, None] == 1, gradient, speckle)).astype(np.float32)
