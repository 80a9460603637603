"""Class-folder image datasets (ImageNet-val or CUB arranged as ``root/<class>/<image>``) with the paper's
preprocessing and its class-balanced sampling, for users who have the real data.

Preprocessing matches torchvision's ``Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet)`` on PIL
images (torchvision itself is not used): the shorter side is resized to 256 with PIL's bilinear filter (which
antialiases when shrinking, as torchvision's PIL path does), the longer side to ``int(256 * long / short)``,
then the centre 224x224 is cropped with torchvision's rounding. Pillow is imported on first use (it is an
optional dependency of lrpc).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import LrpcError
from .normalization import IMAGENET_MEAN, IMAGENET_STD, normalize

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "balanced_sample", "preprocess_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def preprocess_image(image: Image.Image, resize: int = 256, crop: int = 224,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """PIL image -> normalised float32 [3, crop, crop]: resize the shorter side, centre crop, normalise."""
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    image = image.resize(size, Image.BILINEAR)
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return normalize(pixels, mean, std)


class ImageFolderDataset(torch.utils.data.Dataset):
    """``root/<class name>/**/<image>``: classes are the sorted subfolder names, indexed from 0.

    Items are ``(normalised image [3, crop, crop], class index)``. ``labels`` lists every sample's class
    without opening any image, for :func:`balanced_sample`.
    """

    def __init__(self, root: str | Path, *, resize: int = 256, crop: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise LrpcError(f"dataset root {self.root} is not a directory")
        self.classes = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        if not self.classes:
            raise LrpcError(f"dataset root {self.root} has no class subfolders (expected root/<class>/<image>)")
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        suffixes = tuple(ext.lower() for ext in extensions)
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            for directory, _, files in sorted(os.walk(self.root / name, followlinks=True)):
                self.samples += [(Path(directory) / file, self.class_to_index[name])
                                 for file in sorted(files) if file.lower().endswith(suffixes)]
        if not self.samples:
            raise LrpcError(f"no images with extensions {suffixes} under {self.root}")
        self.labels = [label for _, label in self.samples]
        self._preprocess = dict(resize=resize, crop=crop, mean=mean, std=std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            return preprocess_image(image, **self._preprocess), label


def balanced_sample(labels: Sequence[int], per_class: int, seed: int) -> list[int]:
    """The paper's evaluation subset: the first ``per_class`` samples of each class met in a seeded shuffle.

    The shuffle is the order in which ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))``
    visits the dataset, as the authors' evaluation loop did (1 per class on ImageNet, 5 on CUB), so with the
    same torch version the same images are chosen. Returns dataset indices in visiting order.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = [int(label) for label in labels]
    counts = np.bincount(labels) if labels else np.zeros(0, int)
    short = {label: int(count) for label, count in enumerate(counts) if 0 < count < per_class}
    if short:
        raise ValueError(f"classes with fewer than {per_class} samples (class: count): {short}")
    visiting_order = torch.utils.data.DataLoader(range(len(labels)), batch_size=None, shuffle=True,
                                                 generator=torch.Generator().manual_seed(seed))
    taken = np.zeros(len(counts), int)
    chosen = []
    for index in visiting_order:
        label = labels[int(index)]
        if taken[label] < per_class:
            taken[label] += 1
            chosen.append(int(index))
    return chosen


def open_image(path: str | os.PathLike):
    """The image at ``path`` as an RGB PIL image, fully decoded, or an LrpcError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise LrpcError(f"image {path} does not exist") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LrpcError(f"cannot read image {path}: {exc}") from exc
