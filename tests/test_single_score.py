"""Single-score heads ([B] or [B, 1]: regression, binary classification) are explained as the score: from the
raw score (start="score") or the sigmoid probability (start="sigmoid"), checked against the dense reference
written from the equations (tests/reference.py) and for conservation."""
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.testing import assert_close

import lrpc
from lrpc import LrpcError
from lrpc.cli import main
from lrpc.commands import load_model, open_image
from lrpc.data import IMAGENET_MEAN, IMAGENET_STD
from lrpc.data.folder import preprocess_image
from lrpc.rules import Epsilon, Zero

from reference import dense, lrp_dense


class Scorer(nn.Module):
    """Bias-free conv → ReLU → linear → ReLU → one output; ``flat`` returns [B] instead of [B, 1]."""

    def __init__(self, flat: bool):
        super().__init__()
        self.flat = flat
        self.conv = nn.Conv2d(2, 3, 3, bias=False)
        self.hidden = nn.Linear(3 * 3 * 3, 4, bias=False)
        self.score = nn.Linear(4, 1, bias=False)

    def forward(self, x):
        h = torch.relu(self.hidden(torch.flatten(torch.relu(self.conv(x)), 1)))
        s = self.score(h)
        return s.squeeze(1) if self.flat else s


def _model(flat: bool) -> Scorer:
    torch.manual_seed(3)
    return Scorer(flat).double().eval()


X = torch.randn(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(11))


def _reference(model: Scorer, x: torch.Tensor, rule: str, start: str, eps: float) -> torch.Tensor:
    """Per sample, the chain of dense LRP steps from the start relevance down to the input."""
    conv = dense(lambda b: nn.functional.conv2d(b, model.conv.weight), (2, 5, 5))
    hidden, score = model.hidden.weight, model.score.weight
    out = []
    for a0 in x.reshape(len(x), -1):
        a1 = torch.relu(conv @ a0)
        a2 = torch.relu(hidden @ a1)
        s = score @ a2
        r = s if start == "score" else torch.sigmoid(s)
        for weight, a in ((score, a2), (hidden, a1), (conv, a0)):
            r = lrp_dense(rule, weight, torch.zeros(weight.shape[0], dtype=weight.dtype), a, r, eps=eps)
        out.append(r.reshape(x.shape[1:]))
    return torch.stack(out)


@pytest.mark.parametrize("flat", [False, True], ids=["[B,1]", "[B]"])
@pytest.mark.parametrize("start", ["score", "sigmoid"])
@pytest.mark.parametrize("rule,eps", [("zero", 0.0), ("epsilon", 0.25)])
def test_single_score_head_matches_the_dense_reference(flat, start, rule, eps):
    model = _model(flat)
    layer_rule = Zero() if rule == "zero" else Epsilon(epsilon=eps)
    rules = lrpc.Rules(conv=layer_rule, linear=layer_rule, pool=layer_rule, start=start)
    explainer = lrpc.compile(model, rules, example_input=X[:1])
    assert explainer.num_classes == 1
    exp = explainer(X)
    scores = model(X).reshape(-1)
    assert exp.logits.shape == ((4,) if flat else (4, 1))
    assert torch.equal(exp.target, torch.zeros(4, dtype=torch.long))
    assert_close(exp.start, scores if start == "score" else torch.sigmoid(scores))
    assert_close(exp.relevance, _reference(model, X, rule, start, eps))
    if rule == "zero":   # bias-free LRP-0 conserves: the input relevance sums to the start at every layer
        assert_close(exp.relevance.sum((1, 2, 3)), exp.start)
        assert float(exp.conservation_error().max()) < 1e-10


@pytest.mark.parametrize("flat", [False, True], ids=["[B,1]", "[B]"])
def test_single_score_targets_are_none_or_zero(flat):
    explainer = lrpc.compile(_model(flat), "default", example_input=X[:1], start="score")
    assert_close(explainer(X, 0).relevance, explainer(X).relevance)
    with pytest.raises(LrpcError, match=r"target \[1\] out of range for 1 classes"):
        explainer(X[:1], 1)


def test_softmax_over_a_single_score_is_refused_with_the_modes_that_make_sense():
    with pytest.raises(LrpcError, match="softmax is always 1.*start='score'.*start='sigmoid'"):
        lrpc.compile(_model(True), "default", example_input=X[:1])   # the default preset starts from softmax


def test_sigmoid_start_on_a_multi_class_head_is_the_target_probability_of_a_multi_label_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).double().eval()
    x = torch.randn(2, 6, dtype=torch.float64)
    exp = lrpc.compile(model, "default", example_input=x[:1], start="sigmoid")(x, 2)
    assert_close(exp.start, torch.sigmoid(model(x)[:, 2]))


SCORER = textwrap.dedent("""
    import torch
    from torch import nn

    def scorer():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 1))
""")


def test_lrpc_explain_a_single_score_model_from_its_sigmoid(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(SCORER)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    factory = f"{tmp_path / 'nets.py'}:scorer"
    common = ["explain", str(tmp_path / "p.png"), "--model", factory, "--input-size", "8", "--resize", "8", "-q"]
    assert main([*common, "-o", str(tmp_path / "refused")]) == 1   # the default preset starts from a softmax
    assert "--start score" in capsys.readouterr().err
    assert main([*common, "--start", "sigmoid", "-o", str(tmp_path / "out")]) == 0
    x = preprocess_image(open_image(tmp_path / "p.png"), 8, 8, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        probability = float(torch.sigmoid(load_model(factory, None).model.eval()(x[None]))[0, 0])
    summary = json.loads((tmp_path / "out" / "p.json").read_text())
    assert summary["start"] == "sigmoid" and summary["predicted_class"] == summary["target_class"] == 0
    assert summary["probability"] == pytest.approx(probability, rel=1e-6)
    assert summary["start_relevance"] == pytest.approx(probability, rel=1e-6)
    assert summary["input_relevance_sum"] == pytest.approx(probability, rel=1e-5)   # `default` conserves
