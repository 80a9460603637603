"""The frozen work list of a dataset job: which images, in which order, with which labels, cut into units.

Index ``i`` of the list is row ``i`` of every array in the store and of the table, on every rank and in every
rerun, so the list must come out the same each time the folder is read: class folders are listed as
``lrpc.data.folder.ImageFolderDataset`` lists them (sorted class names, then sorted walk), a flat folder in
sorted name order. ``digest()`` hashes the list (relative paths and labels) so a rerun on a folder that changed
is noticed.

A *unit* is ``unit`` consecutive indices: one batch, one zarr chunk, one table part. Units never overlap, so a
unit has exactly one writer and is the grain of resumption.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from ..errors import LrpcError

__all__ = ["WorkList", "scan_images", "unit_count", "unit_indices"]

LABELS_BY_CLASS_NAME = "model class names"
LABELS_BY_FOLDER_ORDER = "sorted folder names"


@dataclass(frozen=True)
class WorkList:
    """``paths`` relative to ``root`` (POSIX separators); ``labels`` None for a folder without class folders."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...] = ()
    label_source: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, index: int) -> Path:
        return self.root / self.paths[index]

    def label(self, index: int) -> int | None:
        return None if self.labels is None else self.labels[index]

    def digest(self) -> str:
        """sha256 of the ordered (path, label) list: equal digests mean the same images in the same rows."""
        sha = hashlib.sha256()
        for index, path in enumerate(self.paths):
            sha.update(f"{path}\t{self.label(index)}\n".encode())
        return sha.hexdigest()


def scan_images(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> WorkList:
    """The images under ``root``: class folders ``root/<class>/**/<image>`` or image files directly in ``root``.

    Class folders are labelled by the model's own class index when every folder name is one of the model's
    ``class_names`` (case-insensitive), else by their position in sorted order (which is ImageNet's class order
    for its ``n01440764``-style folders and CUB's for its numbered ones).
    """
    root = Path(root)
    if not root.is_dir():
        raise LrpcError(f"dataset root {root} is not a directory")
    with os.scandir(root) as entries:
        entries = list(entries)
    folders = [entry for entry in entries if entry.is_dir()]
    loose = sorted(entry.name for entry in entries
                   if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
    if folders and loose:
        raise LrpcError(f"dataset root {root} holds both class folders and images ({loose[0]}, ...): put every "
                        "image into a class folder, or the images alone into a folder of their own")
    if not folders:
        if not loose:
            raise LrpcError(f"dataset root {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) "
                            "and no class folders")
        return WorkList(root, tuple(loose), None)

    dataset = ImageFolderDataset(root)
    paths = tuple(path.relative_to(root).as_posix() for path, _ in dataset.samples)
    by_name = {name.lower(): index for index, name in enumerate(class_names or ())}
    if by_name and all(name.lower() in by_name for name in dataset.classes):
        labels = tuple(by_name[dataset.classes[label].lower()] for label in dataset.labels)
        source = LABELS_BY_CLASS_NAME
    else:
        labels, source = tuple(dataset.labels), LABELS_BY_FOLDER_ORDER
    return WorkList(root, paths, labels, tuple(dataset.classes), source)


def unit_count(n_images: int, unit: int) -> int:
    return -(-n_images // unit)


def unit_indices(unit_id: int, unit: int, n_images: int) -> range:
    """The image indices of unit ``unit_id``: [unit_id * unit, min((unit_id + 1) * unit, n_images))."""
    return range(unit_id * unit, min((unit_id + 1) * unit, n_images))
