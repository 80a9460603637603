"""``lrpc explain-text`` end to end on small random Llama, GPT-2 and BERT folders saved with save_pretrained and a
tokenizer trained here: tokens, targets and generations checked against the model and tokenizer themselves,
closed accounting in the written JSON, one HTML span per token."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
import torch

from lrpc.cli import main

from text_models import save_text_model

transformers = pytest.importorskip("transformers")
TEXT = "the cat sat on the"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    return {family: save_text_model(family, root / family, seed=k) for k, family in enumerate(("llama", "gpt2", "bert"))}


def load(folder):
    config = transformers.AutoConfig.from_pretrained(folder)
    model = getattr(transformers, config.architectures[0]).from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


class Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "row":
            self.rows.append([])
        elif tag == "span" and attrs.get("class") == "tok":
            self.rows[-1].append(float(attrs["data-score"]))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["explain-text", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_explains_a_saved_folder_end_to_end(family, folders, tmp_path, capsys):
    code, out, err = run_cli(capsys, TEXT, "--model", f"hf:{folders[family]}", "--color", "always", "-o", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    model, tokenizer = load(folders[family])
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert summary["token_ids"] == ids[0].tolist()
    assert "".join(summary["tokens"]) == tokenizer.decode(ids[0])
    with torch.no_grad():
        logits = model(ids).logits
    predicted = logits[0, -1].argmax() if family != "bert" else logits[0].argmax()
    assert summary["target"]["id"] == int(predicted)           # target=None: the model's own prediction
    relevance = torch.tensor(summary["relevance"], dtype=torch.float64)
    assert relevance.sum() + summary["absorbed"] == pytest.approx(summary["start"], rel=1e-4, abs=1e-6)
    parser = Spans()
    parser.feed((tmp_path / "text.html").read_text(encoding="utf-8"))
    assert parser.rows[0] == pytest.approx(summary["relevance"], rel=1e-5)
    assert len(re.findall(r"\x1b\[48;2;", out)) == len(summary["tokens"])


def test_target_token_and_generation(folders, tmp_path, capsys):
    folder = folders["llama"]
    model, tokenizer = load(folder)
    target = " mat"
    code, out, err = run_cli(capsys, TEXT, "--model", f"hf:{folder}", "--target", target, "--generate", 3,
                             "--color", "never", "-o", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    assert summary["target"]["id"] == tokenizer.convert_tokens_to_ids("▁mat")
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=3, do_sample=False)
    generation = summary["generation"]
    assert "".join(generation["tokens"]) == tokenizer.decode(expected[0])
    matrix = torch.tensor(generation["matrix"])
    assert matrix.shape == (3, expected.shape[1])
    assert (tmp_path / "generation.png").read_bytes()[:4] == b"\x89PNG"
    assert "\x1b" not in out
    parser = Spans()
    parser.feed((tmp_path / "text.html").read_text(encoding="utf-8"))
    assert [len(row) for row in parser.rows] == [ids.shape[1], ids.shape[1], ids.shape[1] + 1, ids.shape[1] + 2]


def test_user_errors_name_the_problem(folders, tmp_path, capsys):
    code, _, err = run_cli(capsys, TEXT, "--model", f"hf:{folders['bert']}", "--generate", 2, "-o", tmp_path)
    assert code == 1 and "--generate needs a causal language model" in err
    code, _, err = run_cli(capsys, TEXT, "--model", f"hf:{folders['gpt2']}", "--target", "zebra quick", "-o", tmp_path)
    assert code == 1 and "not one" in err
    code, _, err = run_cli(capsys, TEXT, "--model", f"hf:{tmp_path}", "-o", tmp_path / "o")
    assert code == 1 and "no config.json" in err
    code, _, err = run_cli(capsys, TEXT, "--model", "resnet50", "-o", tmp_path / "o")
    assert code == 1 and "hf:DIR" in err


def test_the_shipped_text_model_by_name(tmp_path, capsys):
    code, out, err = run_cli(capsys, "w1 C w3 d A w2 ?", "--model", "groundtruth-text", "--color", "never",
                             "-o", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    assert summary["target"]["label"] == "'no'"   # C before A: not in alphabetical order
    assert [t.strip() for t in summary["tokens"]] == "w1 C w3 d A w2 ?".split()
    code, _, err = run_cli(capsys, "w1 Z ?", "--model", "groundtruth-text", "-o", tmp_path)
    assert code == 1 and "'Z'" in err and "vocabulary" in err
