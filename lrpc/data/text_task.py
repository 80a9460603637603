"""A seeded procedural token task with known ground truth: which context tokens decide the answer.

Each sequence is ``TEXT_LENGTH`` tokens: filler tokens drawn uniformly from ``FILLERS``, two distinct *key*
tokens from ``KEYS`` and two *distractors* from ``DISTRACTORS`` (lower-case look-alikes of the keys that never
change the answer) at four random positions, and the query token ``?`` last. The answer, the next token after
``?``, is ``yes`` when the two keys appear in alphabetical order (``A`` … ``C`` reads yes, ``C`` … ``A`` no) and
``no`` otherwise. Labels are balanced. So the answer depends on the identity **and** the order of exactly the two
key tokens, and their positions (``TokenTexts.deciding``) are the ground truth an explanation should point at:
the fillers, the distractors and the query token carry no information about the answer.

The vocabulary is a fixed list of 31 words (``VOCABULARY``); token id = list index. A causal language model trained
on the task is scored on the logit of the token after ``?`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ANSWERS", "groundtruth_text_model", "DISTRACTORS", "FILLERS", "KEYS", "QUERY", "TEXT_LENGTH", "TEXT_SPLIT_SEEDS", "VOCABULARY", "TokenTexts",
           "make_texts", "split_texts"]

KEYS: tuple[str, ...] = ("A", "B", "C", "D")
DISTRACTORS: tuple[str, ...] = ("a", "b", "c", "d")
FILLERS: tuple[str, ...] = tuple(f"w{i}" for i in range(20))
QUERY = "?"
ANSWERS: tuple[str, ...] = ("yes", "no")
VOCABULARY: tuple[str, ...] = (*FILLERS, *KEYS, *DISTRACTORS, QUERY, *ANSWERS)
TEXT_LENGTH = 16
TEXT_SPLIT_SEEDS: dict[str, int] = {"train": 1_000_000, "val": 1, "test": 2}

_KEY_IDS = torch.tensor([VOCABULARY.index(k) for k in KEYS])
_DISTRACTOR_IDS = torch.tensor([VOCABULARY.index(d) for d in DISTRACTORS])
_QUERY_ID = VOCABULARY.index(QUERY)
ANSWER_IDS: tuple[int, ...] = tuple(VOCABULARY.index(a) for a in ANSWERS)


@dataclass(frozen=True)
class TokenTexts:
    """ids: int64 [N, T] (last token ``?``); answers: int64 [N], the answer's token id; deciding: bool [N, T],
    True at the two key positions."""

    ids: torch.Tensor
    answers: torch.Tensor
    deciding: torch.Tensor

    def __len__(self) -> int:
        return len(self.answers)

    def words(self, row: int) -> list[str]:
        return [VOCABULARY[i] for i in self.ids[row].tolist()]


def make_texts(n: int, seed: int, length: int = TEXT_LENGTH) -> TokenTexts:
    """``n`` sequences drawn deterministically from ``seed`` (a local generator; global RNG untouched)."""
    if n < 0 or length < 5:
        raise ValueError(f"need n >= 0 and length >= 5, got n={n}, length={length}")
    generator = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(len(FILLERS), (n, length), generator=generator)
    ids[:, -1] = _QUERY_ID
    # four distinct positions among the first length-1: two keys (in position order), then two distractors
    slots = torch.rand(n, length - 1, generator=generator).argsort(1)[:, :4]
    positions = slots[:, :2].sort(1).values
    pair = torch.rand(n, len(KEYS), generator=generator).argsort(1)[:, :2]   # two distinct keys
    yes = torch.arange(n) % 2 == 0                                           # balanced labels
    first, second = pair.min(1).values, pair.max(1).values
    first, second = torch.where(yes, first, second), torch.where(yes, second, first)
    rows = torch.arange(n)
    ids[rows, positions[:, 0]] = _KEY_IDS[first]
    ids[rows, positions[:, 1]] = _KEY_IDS[second]
    ids[rows[:, None], slots[:, 2:]] = _DISTRACTOR_IDS[torch.randint(len(DISTRACTORS), (n, 2), generator=generator)]
    answers = torch.where(yes, ANSWER_IDS[0], ANSWER_IDS[1])
    deciding = torch.zeros(n, length, dtype=torch.bool)
    deciding[rows[:, None], positions] = True
    shuffle = torch.randperm(n, generator=generator)   # yes/no not alternating
    return TokenTexts(ids[shuffle], answers[shuffle], deciding[shuffle])


def split_texts(split: str, n: int) -> TokenTexts:
    """The fixed ``train`` / ``val`` / ``test`` splits (different seeds)."""
    if split not in TEXT_SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(TEXT_SPLIT_SEEDS)}")
    return make_texts(n, TEXT_SPLIT_SEEDS[split])


def groundtruth_text_model():
    """The shipped model of this task with its word tokenizer (``lrpc.models.text_sources.TextModel``): what
    ``lrpc explain-text --model groundtruth-text`` loads."""
    from ..models.text_sources import TextModel, WordTokenizer
    from .groundtruth import groundtruth_model
    return TextModel(groundtruth_model("text"), WordTokenizer(VOCABULARY), "groundtruth-text")
