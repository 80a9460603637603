"""lrpc.captum.LRPC: captum's attribution interface over a compiled explainer, checked against the explainer itself,
against closed forms on a linear model, and through captum's own infidelity and sensitivity_max."""
from __future__ import annotations

import pytest
import torch
import torchvision
from captum.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from torch import nn

import lrpc
from lrpc import LrpcError
from lrpc.captum import LRPC

LRP_0 = lrpc.Rules(name="lrp-0", linear=lrpc.rules.Zero(), start="logit")


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, images, torch.tensor([1, 4, 7])


@pytest.fixture(scope="module")
def adapter(resnet18):
    """One adapter for the module's ResNet-18 tests: it compiles on its first call only."""
    return LRPC(resnet18[0], rules="epsilon-plus")


@pytest.fixture(scope="module")
def linear():
    """A bias-free linear classifier: LRP-0 relevance is exactly w_target * x."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5, bias=False)).eval()
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    return model, images, torch.tensor([0, 2, 4, 1])


def test_attribute_is_the_compiled_explainers_relevance_and_compiles_once(resnet18, adapter, monkeypatch):
    model, images, targets = resnet18
    first = adapter.attribute(images, target=targets)   # compiles, unless an earlier test's call did
    compiles = []
    compile_ = lrpc.compiler.compile
    monkeypatch.setattr(lrpc.compiler, "compile", lambda *a, **k: compiles.append(1) or compile_(*a, **k))
    again = adapter.attribute(images[:2], target=targets[:2].tolist())
    adapter.attribute(images, target=0)
    assert compiles == []   # another batch size or target reuses the compiled explainer
    want = compile_(model, "epsilon-plus", example_input=images[:1])(images, targets).relevance
    assert first.shape == images.shape and not first.is_inference()
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(again, want[:2])


def test_a_one_tensor_tuple_gives_a_one_tensor_tuple_and_the_delta_is_conservation(linear):
    # LRP-0 on a bias-free linear model conserves exactly: the input total is the target logit.
    model, images, targets = linear
    relevance, delta = LRPC(model, rules=LRP_0).attribute((images,), target=targets, return_convergence_delta=True)
    assert isinstance(relevance, tuple) and relevance[0].shape == images.shape
    with torch.no_grad():
        logits = model(images).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(relevance[0].flatten(1).sum(1), logits)
    assert delta.shape == (4,) and float(delta.abs().max()) <= 1e-5 * float(logits.abs().max())


def test_lrp_0_on_a_linear_model_is_weight_times_input(linear):
    model, images, targets = linear
    relevance = LRPC(model, rules=LRP_0).attribute(images, target=targets)
    weights = model[1].weight[targets].view(-1, 3, 8, 8)
    torch.testing.assert_close(relevance, weights * images)


def test_captum_infidelity_of_lrp_0_is_zero_on_a_linear_model(linear):
    # Removing a pixel subset S (perturbation = the subset mask, captum's multiply_by_inputs convention) changes
    # the logit by exactly the relevance of S, so infidelity vanishes; a shuffled map does not.
    model, images, targets = linear
    generator = torch.Generator().manual_seed(3)

    @infidelity_perturb_func_decorator(True)
    def remove_random_subset(inputs, baselines):
        keep = (torch.rand(inputs.shape, generator=generator) > 0.3).float()
        return inputs * keep + baselines * (1 - keep)

    relevance = LRPC(model, rules=LRP_0).attribute(images, target=targets)
    zeros = torch.zeros_like(images)
    scores = infidelity(model, remove_random_subset, images, relevance, baselines=zeros, target=targets,
                        n_perturb_samples=8)
    shuffled = relevance.flatten(1)[:, torch.randperm(relevance[0].numel(), generator=generator)].view_as(relevance)
    worse = infidelity(model, remove_random_subset, images, shuffled, baselines=zeros, target=targets,
                       n_perturb_samples=8)
    assert scores.shape == (4,) and float(scores.max()) < 1e-8
    assert float(worse.min()) > 1e-4


def test_captum_sensitivity_max_matches_the_closed_form_on_a_linear_model(linear):
    # LRP-0 maps of a linear model are w * x, so a shift delta changes them by w * delta: sensitivity_max is
    # ||w * delta|| / ||w * x|| per image.
    model, images, targets = linear
    delta = 0.01 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    scores = sensitivity_max(LRPC(model, rules=LRP_0).attribute, images, perturb_func=lambda x: x + delta,
                             n_perturb_samples=2, target=targets)
    weights = model[1].weight[targets].view(-1, 3, 8, 8)
    expected = (weights * delta).flatten(1).norm(dim=1) / (weights * images).flatten(1).norm(dim=1)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-7)


def test_captum_metrics_run_on_resnet18(resnet18, adapter):
    model, images, targets = resnet18
    relevance = adapter.attribute(images, target=targets)

    def gaussian_noise(inputs):
        noise = 0.05 * torch.randn(inputs.shape, generator=torch.Generator().manual_seed(5))
        return noise, inputs - noise

    scores = infidelity(model, gaussian_noise, images, relevance, target=targets, n_perturb_samples=2)
    sensitivity = sensitivity_max(adapter.attribute, images, n_perturb_samples=2, target=targets)
    for values in (scores, sensitivity):
        assert values.shape == (3,) and torch.isfinite(values).all() and (values >= 0).all()
    assert float(sensitivity.min()) > 0


def test_bad_inputs_and_targets_are_named(resnet18, adapter):
    model, images, targets = resnet18
    with pytest.raises(LrpcError, match="one input tensor"):
        adapter.attribute((images, images), target=targets)
    with pytest.raises(LrpcError, match="tuple targets"):
        adapter.attribute(images, target=(0, 1))
    with pytest.raises(LrpcError, match="torch.nn.Module"):
        LRPC(lambda x: x)
