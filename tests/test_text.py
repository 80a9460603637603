"""lrpc.text: readable tokens from three tokenizer schemes, terminal and HTML token heatmaps, the generation
matrix figure — checked against the tokenizers' own decoding and against values computed by hand."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import lrpc
from lrpc import text

from text_models import TOKENIZERS

SAMPLES = ["the cat sat on the mat", "naïve café\nline two", "zebra quick!"]


@pytest.mark.parametrize("scheme", TOKENIZERS)
def test_readable_tokens_join_to_the_decoded_text_without_markers(scheme):
    tokenizer = TOKENIZERS[scheme]()
    for sample in SAMPLES:
        ids = tokenizer(sample)["input_ids"]
        pieces = text.readable_tokens(tokenizer, ids)
        assert len(pieces) == len(ids)
        assert "".join(pieces) == tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        assert not any(marker in piece for piece in pieces for marker in ("Ġ", "▁", "##", "Ċ", "\ufffd"))


def test_readable_tokens_put_spaces_where_the_markers_were():
    gpt2, sentencepiece = TOKENIZERS["byte-level"](), TOKENIZERS["metaspace"]()
    ids = gpt2("the cat")["input_ids"]
    assert gpt2.convert_ids_to_tokens(ids) == ["the", "Ġcat"] and text.readable_tokens(gpt2, ids) == ["the", " cat"]
    ids = sentencepiece("the cat")["input_ids"]
    assert sentencepiece.convert_ids_to_tokens(ids) == ["▁the", "▁cat"]
    assert text.readable_tokens(sentencepiece, ids) == ["the", " cat"]


def test_readable_tokens_from_a_vocabulary_list_and_bad_ids():
    assert text.readable_tokens(["a", "b", "c"], torch.tensor([2, 0])) == ["c", "a"]
    with pytest.raises(lrpc.LrpcError, match="outside the vocabulary"):
        text.readable_tokens(["a", "b"], [3])
    with pytest.raises(lrpc.LrpcError, match="one row"):
        text.readable_tokens(["a"], torch.zeros(2, 2, dtype=torch.long))


def test_ansi_text_colors_each_token_by_its_row_normalised_score():
    tokens, scores = ["a", " b", " c", "\n"], torch.tensor([2.0, -4.0, 0.0, 1.0])
    colored = text.ansi_tokens(tokens, scores)
    backgrounds = re.findall(r"\x1b\[48;2;(\d+);(\d+);(\d+)m\x1b\[38;2;0;0;0m(.*?)\x1b\[0m", colored)
    assert [b[3] for b in backgrounds] == ["a", " b", " c", "↵"]
    rgb = [tuple(map(int, b[:3])) for b in backgrounds]
    # normalised 0.5, -1, 0, 0.25 on the blue-white-red scale: half-red, full blue, white, quarter-red
    assert rgb == [(255, 128, 128), (0, 0, 255), (255, 255, 255), (255, 191, 191)]
    assert text.ansi_tokens(tokens, scores, color=False) == "a[+0.50]  b[-1.00]  c[+0.00] ↵[+0.25]"
    assert "\x1b" not in text.ansi_tokens(tokens, scores, color=False)
    assert text.ansi_tokens(tokens, scores * 10) == colored            # per-row normalisation
    assert text.ansi_tokens(["x"], [0.0], color=False) == "x[+0.00]"  # an all-zero row stays white, no NaN


class _Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.headings, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "row":
            self.rows.append([])
        elif tag == "span" and attrs.get("class") == "tok":
            self.rows[-1].append([attrs, ""])
            self._in = "span"
        elif tag == "h2":
            self.headings.append("")
            self._in = "h2"
        assert tag not in ("script", "link", "img", "iframe")   # self-contained, nothing fetched

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "span":
            self.rows[-1][-1][1] += data
        elif self._in == "h2":
            self.headings[-1] += data


def test_html_page_holds_one_span_per_token_with_its_score():
    rows = [("explains ' mat'", ["the", " <cat>", " &"], torch.tensor([0.5, -2.0, 1.0])),
            ("second", ["x", "y"], np.array([3.0, 0.0]))]
    page = text.html_tokens(rows, title="demo")
    parser = _Spans()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>") and "http" not in page
    assert parser.headings == ["explains ' mat'", "second"]
    assert [[t for _, t in row] for row in parser.rows] == [["the", " <cat>", " &"], ["x", "y"]]
    first = parser.rows[0]
    assert [float(a["data-score"]) for a, _ in first] == [0.5, -2.0, 1.0]
    assert [float(a["data-normalized"]) for a, _ in first] == [0.25, -1.0, 0.5]
    assert first[1][0]["style"] == "background:rgb(0,0,255)"
    assert text.html_tokens(rows, title="demo") == page   # deterministic


def test_save_html_writes_the_page(tmp_path):
    path = text.save_html(tmp_path / "t.html", [("row", ["a"], [1.0])])
    assert path.read_text(encoding="utf-8") == text.html_tokens([("row", ["a"], [1.0])])


def test_generation_figure_greys_what_a_row_cannot_see(tmp_path):
    matrix = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.5, 0.5, 2.0, 0.0]])
    figure = text.generation_figure(matrix, ["a", " b", " c", " d"], prompt_length=2)
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown.mask, [[False, False, True, True], [False, False, False, True]])
    np.testing.assert_allclose(shown[1, :3], [0.25, 0.25, 1.0])   # row-normalised
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == [" c", " d"]
    path = text.save_generation_figure(tmp_path / "m.png", matrix, ["a", " b", " c", " d"], 2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(lrpc.LrpcError, match="prompt_length"):
        text.generation_figure(matrix, ["a", "b", "c"], 2)
