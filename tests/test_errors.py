"""Every bad input gets an error that names the problem."""
import pytest
import torch
import torchvision
from torch import nn

import lrpc
from lrpc import LrpcError


@pytest.fixture(scope="module")
def explainer():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    return lrpc.compile(model, rules="default", example_input=torch.randn(1, 3, 32, 32))


def test_wrong_rank(explainer):
    with pytest.raises(LrpcError, match=r"3 dimensions .* \(add a batch dimension\?\)"):
        explainer(torch.randn(3, 32, 32))


def test_wrong_channels(explainer):
    with pytest.raises(LrpcError, match=r"1 channels .* expects 3"):
        explainer(torch.randn(2, 1, 32, 32))


def test_nan_and_inf_input(explainer):
    x = torch.randn(2, 3, 32, 32)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(LrpcError, match="NaN or Inf"):
        explainer(x)
    x[1, 0, 3, 3] = float("inf")
    with pytest.raises(LrpcError, match="NaN or Inf"):
        explainer(x)


def test_integer_input(explainer):
    with pytest.raises(LrpcError, match="floating-point"):
        explainer(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("target,pattern", [
    (5, r"target \[5, 5\] out of range for 5 classes"),
    (-1, r"target \[-1, -1\] out of range"),
    (torch.tensor([0, 1, 2]), "3 entries for a batch of 2"),
    (torch.tensor([0.0, 1.0]), "LongTensor"),
    ("cat", "must be None, an int or a LongTensor"),
])
def test_bad_targets(explainer, target, pattern):
    with pytest.raises(LrpcError, match=pattern):
        explainer(torch.randn(2, 3, 32, 32), target)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(LrpcError, match="unknown preset 'otsuki'.*otsuki2024"):
        lrpc.preset("otsuki")


def test_preset_that_needs_bounds():
    with pytest.raises(LrpcError, match="low= and high="):
        lrpc.preset("epsilon-gamma-box")


def test_bad_rules_type():
    with pytest.raises(TypeError, match="preset name or an lrpc.Rules"):
        lrpc.compile(nn.Linear(2, 2).eval(), rules=42, example_input=torch.randn(1, 2))


def test_missing_example_input():
    with pytest.raises(TypeError, match="example_input"):
        lrpc.compile(nn.Linear(2, 2).eval(), rules="default")


def test_training_mode_is_refused():
    with pytest.raises(LrpcError, match=r"training mode: call model.eval\(\)"):
        lrpc.compile(nn.Sequential(nn.Linear(2, 2)), example_input=torch.randn(1, 2))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.fc(x)


def test_uncapturable_model_names_the_line_and_the_fix():
    with pytest.raises(LrpcError) as info:
        lrpc.compile(DataDependent().eval(), example_input=torch.randn(1, 4))
    message = str(info.value)
    assert "test_errors.py" in message and "if x.sum() > 0:" in message
    assert "torch.where or torch.cond" in message


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.sin(self.conv(x))
        x = torch.exp(x)
        return self.fc(x.mean((2, 3)))


def test_unsupported_ops_are_all_listed_with_op_target_and_shape():
    with pytest.raises(LrpcError) as info:
        lrpc.compile(Unsupported().eval(), example_input=torch.randn(1, 3, 8, 8))
    message = str(info.value)
    assert "2 node(s) on the relevance path have no relevance op" in message
    assert "node 'sin'" in message and "target=aten.sin" in message and "shape=(1, 4, 6, 6)" in message
    assert "node 'exp'" in message and "target=aten.exp" in message
    assert "never falls back to the gradient" in message


def test_model_must_return_logits():
    class TwoOutputs(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(LrpcError, match=r"returns several tensors \(0, 1\); say which one holds the scores"):
        lrpc.compile(TwoOutputs().eval(), example_input=torch.randn(1, 3))
    explainer = lrpc.compile(nn.Sequential(nn.Linear(3, 2)).eval(), example_input=torch.randn(1, 3))
    assert explainer.num_classes == 2
    with pytest.raises(LrpcError, match=r"output='scores' is not among .*outputs: 0, 1"):
        lrpc.compile(TwoOutputs().eval(), example_input=torch.randn(1, 3), output="scores")


def test_example_input_that_does_not_fit():
    with pytest.raises(LrpcError, match=r"failed on example_input of shape \(1, 5\)"):
        lrpc.compile(nn.Linear(4, 2).eval(), example_input=torch.randn(1, 5))


def test_bad_rule_parameters():
    with pytest.raises(LrpcError, match="alpha - beta = 1"):
        lrpc.rules.AlphaBeta(alpha=2.0, beta=0.5)
    with pytest.raises(LrpcError, match="unknown splitting mode"):
        lrpc.Splitting("halves")
    with pytest.raises(LrpcError, match="unknown maxpool mode"):
        lrpc.Rules(maxpool="average")


def test_rule_that_does_not_fit_its_layer():
    rules = lrpc.Rules(pool=lrpc.rules.Gamma())
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(LrpcError, match="rule gamma needs weights but adaptive_avg_pool2d has none"):
        lrpc.compile(model, rules=rules, example_input=torch.randn(1, 3, 8, 8))


def test_maxpool_stand_in_that_does_not_fit():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 9, 9))
    with pytest.raises(LrpcError, match="2x2 average stand-in"):
        lrpc.compile(model.eval(), rules="otsuki2024", example_input=torch.randn(1, 3, 9, 9))


def test_keep_with_an_unknown_node_lists_valid_names():
    with pytest.raises(LrpcError, match="keep= names .*layer9.*valid names: x, conv1"):
        lrpc.compile(torchvision.models.resnet18(weights=None, num_classes=3).eval(), example_input=torch.randn(1, 3, 32, 32),
                     keep=["layer9"])


def test_rule_and_rule_set_parameters_are_validated():
    with pytest.raises(LrpcError, match="unknown stabilizer_mode 'bogus'"):
        lrpc.rules.Epsilon(stabilizer_mode="bogus")
    with pytest.raises(LrpcError, match="epsilon must be >= 0"):
        lrpc.rules.Gamma(epsilon=-1.0)
    with pytest.raises(LrpcError, match="Rules.conv must be a rule object"):
        lrpc.Rules(conv="zplus")
    with pytest.raises(LrpcError, match=r"Rules.splitting must be lrpc.Splitting"):
        lrpc.preset("default", splitting="symmetric")
    with pytest.raises(LrpcError, match=r"\(selector, rule\) pairs"):
        lrpc.Rules(layers=(("first", "flat"),))


def test_a_submodule_in_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))
    model.eval()
    model[1].train()
    with pytest.raises(LrpcError, match="1 in training mode"):
        lrpc.compile(model, example_input=torch.randn(1, 3, 6, 6))


def test_epsilon_zero_with_a_sign_stabiliser_does_not_produce_nan():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16, 2)).eval()
    rules = lrpc.Rules(conv=lrpc.rules.Epsilon(0.0), linear=lrpc.rules.Epsilon(0.0))
    exp = lrpc.compile(model, rules=rules, example_input=torch.randn(1, 3, 6, 6))(torch.randn(4, 3, 6, 6))
    assert torch.isfinite(exp.relevance).all()


def test_input_of_another_size_that_the_graph_cannot_take():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).eval()
    explainer = lrpc.compile(model, rules="default", example_input=torch.randn(1, 3, 8, 8))
    with pytest.raises(LrpcError, match=r"\(2, 3, 10, 10\) differs in size from the example_input \(1, 3, 8, 8\)"):
        explainer(torch.randn(2, 3, 10, 10))


class BatchMean(torch.nn.Module):
    """Averages the logits over the batch (dimension 1 after a stack): a sample's score depends on the others."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return logits + torch.stack([logits, 2 * logits]).mean(1, keepdim=True)[0]


def test_a_reduction_over_the_batch_is_refused_wherever_the_batch_sits():
    with pytest.raises(LrpcError, match="a reduction over the batch dimension"):
        lrpc.compile(BatchMean().eval(), example_input=torch.randn(1, 3, 2, 2))
