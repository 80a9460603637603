"""The pictures of a report, as PNG data URIs: the page is one file that opens offline."""
from __future__ import annotations

import base64
import io

import numpy as np

from ..viz import colorize

__all__ = ["heatmap_uri", "png_uri"]


def png_uri(rgb: np.ndarray, size: int | None = None) -> str:
    """[H, W, 3] uint8 or floats in [0, 1] -> a ``data:image/png;base64,...`` URI, the longer side scaled to
    ``size`` pixels when given (nearest neighbour upwards, so small crops stay sharp; bilinear downwards)."""
    from PIL import Image

    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = Image.fromarray(array, mode="RGB")
    if size is not None and max(image.size) != size:
        scale = size / max(image.size)
        target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(target, Image.NEAREST if scale > 1 else Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_uri(heat: np.ndarray, size: int | None = None) -> str:
    """An [H, W] relevance map in lrpc's signed colours (blue - white - red, symmetric about zero)."""
    return png_uri(colorize(heat), size)
