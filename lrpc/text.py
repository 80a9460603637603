"""Token heatmaps for people: readable tokens, colored terminal text, a self-contained HTML page, and the
generation relevance matrix as a figure.

Relevance per token (``exp.heatmap()[k]``, one row of a generation matrix) is normalised **per row** to [-1, 1]
by its largest |R| and shown with :mod:`lrpc.viz`'s ``"signed"`` colormap: red for positive relevance, blue for
negative, white for none. Each row is normalised alone because each row starts from its own logit: colours
compare tokens within a row, not across rows.

Tokens are shown as the text they stand for, read from the tokenizer's own decoder (:func:`readable_tokens`), so
GPT-2's byte-level ``Ġ``, SentencePiece's ``▁`` and WordPiece's ``##`` come out as the spaces they mean.

Nothing here needs a network or external assets; the figure needs matplotlib (imported on use).
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from . import viz
from .errors import LrpcError

__all__ = ["ansi_tokens", "generation_figure", "html_tokens", "normalize_row", "readable_tokens",
           "save_generation_figure", "save_html"]

# Characters that would break a one-line token display, shown as visible marks instead.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "→"})


def readable_tokens(tokenizer, ids) -> list[str]:
    """The text each token id stands for, spaces included (``" world"``, not ``"Ġworld"`` or ``"▁world"``).

    ``tokenizer`` is a Hugging Face tokenizer or a plain sequence of strings indexed by id (a vocabulary list).
    A Hugging Face token's text is what decoding the ids up to it adds to decoding the ids before it, so the
    tokenizer's own decoder resolves byte-level, SentencePiece and WordPiece markers. A character split over
    several byte tokens belongs to the token that completes it; where decoding is not a plain extension of the
    text before, the token decodes alone.
    """
    ids = _as_ids(ids)
    if isinstance(tokenizer, Sequence) and not isinstance(tokenizer, str):
        if ids and max(ids) >= len(tokenizer):
            raise LrpcError(f"token id {max(ids)} is outside the vocabulary of {len(tokenizer)} words")
        return [str(tokenizer[i]) for i in ids]
    if not callable(getattr(tokenizer, "decode", None)):
        raise LrpcError(f"cannot read tokens with a {type(tokenizer).__name__}: give a Hugging Face tokenizer or "
                        "a list of token strings")
    pieces, before = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if end < len(ids):   # bytes of a character the next tokens complete decode as U+FFFD: leave them to those
            text = text.rstrip("\ufffd")
        if text.startswith(before):
            pieces.append(text[len(before):])
        else:
            pieces.append(tokenizer.decode(ids[end - 1:end], skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False))
        before = text
    return pieces


def _as_ids(ids) -> list[int]:
    array = torch.as_tensor(ids)
    if array.dim() != 1 or array.is_floating_point():
        raise LrpcError(f"token ids must be one row of integers [T], got {tuple(array.shape)} {array.dtype}")
    return [int(i) for i in array.tolist()]


def normalize_row(scores) -> np.ndarray:
    """Relevance of one row [T] divided by its largest |R|, in [-1, 1]; an all-zero row stays zero."""
    row = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if row.ndim != 1:
        raise LrpcError(f"token relevance must be one row [T], got shape {row.shape}")
    return viz.normalize(row[None], "signed", percentile=100.0)[0]


def _row_colours(tokens: Sequence[str], scores) -> tuple[np.ndarray, np.ndarray]:
    normalized = normalize_row(scores)
    if len(tokens) != len(normalized):
        raise LrpcError(f"{len(tokens)} tokens but {len(normalized)} relevance values")
    rgb = viz.colorize(normalized[None], "signed", percentile=100.0)[0].astype(int)
    return normalized, rgb


def ansi_tokens(tokens: Sequence[str], scores, *, color: bool = True) -> str:
    """One row of tokens as terminal text: a 24-bit ANSI background per token (red +, blue −), or without
    ``color`` each token followed by its normalised relevance, ``hello[+0.53]``."""
    normalized, rgb = _row_colours(tokens, scores)
    parts = []
    for token, value, (r, g, b) in zip(tokens, normalized, rgb):
        text = token.translate(_VISIBLE)
        if color:
            parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m")
        else:
            parts.append(f"{text}[{value:+.2f}]")
    return ("" if color else " ").join(parts)


_PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
h2 { font-size: 1em; margin: 1.5em 0 0.3em; }
.row { font-family: monospace; font-size: 1.1em; line-height: 1.9; white-space: pre-wrap; }
.tok { white-space: pre; border-radius: 2px; padding: 1px 0; color: #000; }
.legend { color: #555; font-size: 0.9em; }
"""


def html_tokens(rows: Iterable[tuple[str, Sequence[str], object]], *, title: str = "lrpc token relevance") -> str:
    """A self-contained HTML page (no scripts, no external assets): for every ``(label, tokens, scores)`` a
    heading and one ``<span class="tok">`` per token, colored like :func:`ansi_tokens`, carrying its raw
    relevance in ``data-score`` and the normalised one in ``data-normalized`` (also in its tooltip)."""
    body = []
    for label, tokens, scores in rows:
        normalized, rgb = _row_colours(tokens, scores)
        raw = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        spans = "".join(
            f'<span class="tok" style="background:rgb({r},{g},{b})" data-score="{s:.6g}" '
            f'data-normalized="{v:+.4f}" title="{html.escape(repr(t))}: {s:.4g} ({v:+.2f})">'
            f"{html.escape(t.translate(_VISIBLE))}</span>"
            for t, s, v, (r, g, b) in zip(tokens, raw, normalized, rgb))
        body.append(f'<h2>{html.escape(label)}</h2>\n<div class="row">{spans}</div>')
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_PAGE_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class=\"legend\">red: positive relevance, blue: negative; each row "
            "normalised by its largest |relevance|. Hover a token for its value.</p>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")


def save_html(path: str | os.PathLike, rows: Iterable[tuple[str, Sequence[str], object]], *,
              title: str = "lrpc token relevance") -> Path:
    path = Path(path)
    path.write_text(html_tokens(rows, title=title), encoding="utf-8")
    return path


def generation_figure(matrix, tokens: Sequence[str], prompt_length: int, *, title: str | None = None):
    """The relevance matrix of a generation, ``[new tokens × all tokens]``, as a matplotlib ``Figure``.

    Row i explains generated token ``tokens[prompt_length + i]``; its columns are every token of the text. Each
    row is normalised by its own largest |R|. Cells a row cannot depend on (the token it predicts and the ones
    after) are grey; a line marks where the prompt ends.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    new, total = values.shape if values.ndim == 2 else (None, None)
    if new is None or total != len(tokens) or not 0 < prompt_length <= total - new:
        raise LrpcError(f"a generation matrix [new, all] needs len(tokens) == all and prompt_length + new <= all; "
                        f"got matrix {values.shape}, {len(tokens)} tokens, prompt_length {prompt_length}")
    shown = np.ma.masked_array(np.stack([normalize_row(row) for row in values]) if new else values,
                               mask=np.arange(total)[None, :] >= prompt_length + np.arange(new)[:, None])
    cell = 0.32
    figure = Figure(figsize=(max(5.5, 2.0 + total * cell), max(2.5, 1.6 + new * cell)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    cmap = colormaps["bwr"].with_extremes(bad="#d9d9d9")
    image = axes.imshow(shown, cmap=cmap, vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
    labels = [t.translate(_VISIBLE) for t in tokens]
    axes.set_xticks(range(total), labels, rotation=90, fontsize=8, fontfamily="monospace")
    axes.set_yticks(range(new), labels[prompt_length:prompt_length + new], fontsize=8, fontfamily="monospace")
    axes.axvline(prompt_length - 0.5, color="black", linewidth=1)
    axes.set_xlabel("input token")
    axes.set_ylabel("generated token")
    axes.set_title(title or "relevance per generated token (each row normalised)", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    figure.tight_layout()
    return figure


def save_generation_figure(path: str | os.PathLike, matrix, tokens: Sequence[str], prompt_length: int, *,
                           title: str | None = None) -> Path:
    path = Path(path)
    generation_figure(matrix, tokens, prompt_length, title=title).savefig(path)
    return path
