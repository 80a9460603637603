"""lrpc.quantus.explain_func under Quantus's metrics, and lrpc's localisation metrics against Quantus's on the same maps.

Where they differ by definition, the test states how (docs/integrations.md): lrpc's relevance mass counts positive
relevance only, Quantus's the signed sum; lrpc's pointing game has a tolerance (15/224 of the side by default, 0
here) and scores a tied maximum by the share of maximal pixels that hit, Quantus's by whether any does; lrpc's rank
accuracy is the expectation over tie-breaks, Quantus's one tie-break of its sort.
"""
from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lrpc
from lrpc import LrpcError
from lrpc.baselines import explain_baseline
from lrpc.data import groundtruth_model, normalize, split_scenes
from lrpc.metrics import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from lrpc.quantus import explain_func

RULES = "epsilon-plus"


@pytest.fixture(scope="module")
def scenes():
    data = split_scenes("test", 12)
    return groundtruth_model(), normalize(data.images), torch.from_numpy(data.labels), torch.from_numpy(data.masks)


@pytest.fixture(scope="module")
def reference(scenes):
    """A compile of its own, independent of explain_func's cache."""
    model, images, labels, _ = scenes
    return lrpc.compile(model, RULES, example_input=images[:1])(images, labels)


@pytest.fixture(scope="module")
def lrpc_maps(scenes):
    model, images, labels, masks = scenes
    return torch.from_numpy(explain_func(model, images.numpy(), labels.numpy(), rules=RULES)[:, 0])


def _quantus(metric, maps: torch.Tensor, masks: torch.Tensor, scenes_) -> np.ndarray:
    model, images, labels, _ = scenes_
    scores = metric(disable_warnings=True)(model=model, x_batch=images.numpy(), y_batch=labels.numpy(),
                                           a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy().astype(float),
                                           device="cpu")
    return np.asarray(scores, dtype=float)


def test_explain_func_is_the_heatmap_and_quantus_metrics_reuse_one_compile(scenes, reference, lrpc_maps,
                                                                          monkeypatch):
    model, images, labels, masks = scenes
    torch.testing.assert_close(lrpc_maps, reference.heatmap())
    compiles = []
    compile_ = lrpc.compiler.compile
    monkeypatch.setattr(lrpc.compiler, "compile", lambda *a, **k: compiles.append(1) or compile_(*a, **k))
    x, y = images[:4].numpy(), labels[:4].numpy()
    kwargs = {"rules": RULES}
    sensitivity = quantus.MaxSensitivity(nr_samples=2, disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, explain_func=explain_func, explain_func_kwargs=kwargs, device="cpu")
    random_logit = quantus.RandomLogit(num_classes=4, disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, explain_func=explain_func, explain_func_kwargs=kwargs, device="cpu")
    rank = quantus.RelevanceRankAccuracy(disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, s_batch=masks[:4, None].numpy().astype(float), explain_func=explain_func,
        explain_func_kwargs=kwargs, device="cpu")
    assert compiles == []   # the explainer compiled for lrpc_maps served every call
    for scores in (sensitivity, random_logit, rank):
        assert len(scores) == 4 and np.isfinite(scores).all()
    np.testing.assert_allclose(rank, relevance_rank_accuracy(lrpc_maps[:4], masks[:4]).numpy(), atol=1e-12)


def test_channels_keep_returns_the_input_relevance(scenes, reference):
    model, images, labels, _ = scenes
    relevance = explain_func(model, images[:2], labels[:2], rules=RULES, channels="keep")   # tensors work too
    assert relevance.shape == (2, 3, 64, 64) and relevance.dtype == np.float32
    np.testing.assert_allclose(relevance, reference.relevance[:2].numpy(), rtol=1e-5, atol=1e-9)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def test_mprt_on_the_cached_explainer_equals_mprt_on_fresh_compiles(monkeypatch):
    # Quantus's MPRT re-initialises the layers of ONE model copy in place, one after another: the cached explainer
    # must follow every change (one compile per model state) and give what compiling afresh at every call gives.
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = np.random.default_rng(0).normal(size=(3, 3, 12, 12)).astype(np.float32)
    y = np.array([0, 1, 3])

    def compile_every_call(model, inputs, targets, rules, device=None):
        inputs = torch.as_tensor(inputs)
        explanation = lrpc.compile(model, rules, example_input=inputs[:1])(inputs, torch.as_tensor(targets))
        return explanation.relevance.sum(1, keepdim=True).numpy()

    compiles = []
    compile_ = lrpc.compiler.compile
    monkeypatch.setattr(lrpc.compiler, "compile", lambda *a, **k: compiles.append(1) or compile_(*a, **k))
    cached = quantus.MPRT(disable_warnings=True)(model=model, x_batch=x, y_batch=y, explain_func=explain_func,
                                                 explain_func_kwargs={"rules": RULES}, device="cpu")
    randomised = [name for name in cached if name != "original"]
    assert len(randomised) == 4   # conv, batch norm, conv, linear
    assert len(compiles) == 1 + len(randomised)   # the model, then its copy once per re-initialised layer
    fresh = quantus.MPRT(disable_warnings=True)(model=model, x_batch=x, y_batch=y, explain_func=compile_every_call,
                                                explain_func_kwargs={"rules": RULES}, device="cpu")
    assert cached.keys() == fresh.keys()
    for layer in cached:
        np.testing.assert_allclose(cached[layer], fresh[layer], rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def continuous_maps(scenes, lrpc_maps):
    """Signed LRP and uniform noise (pointing misses too), no ties at their maxima; Grad-CAM, non-negative, whose
    upsampled 2x2 map has a tied maximum (bilinear upsampling holds the border values)."""
    model, images, labels, masks = scenes
    cam = explain_baseline("gradcam", model, images, labels)
    noise = explain_baseline("random", model, images, seed=0)
    return {"lrpc": lrpc_maps, "gradcam": cam, "random": noise}


@pytest.mark.parametrize("kind", ["lrpc", "random"])
def test_pointing_game_and_rank_accuracy_agree_with_quantus_on_maps_without_ties(scenes, continuous_maps, kind):
    maps, masks = continuous_maps[kind], scenes[3]
    np.testing.assert_array_equal(_quantus(quantus.PointingGame, maps, masks, scenes),
                                  pointing_game(maps, masks, tolerance=0).numpy())
    np.testing.assert_allclose(_quantus(quantus.RelevanceRankAccuracy, maps, masks, scenes),
                               relevance_rank_accuracy(maps, masks).numpy(), atol=1e-12)


def test_pointing_game_misses_exist_in_the_cross_check(scenes, continuous_maps):
    # Otherwise agreement on hits alone would say little.
    assert pointing_game(continuous_maps["random"], scenes[3], tolerance=0).min() == 0


def test_relevance_mass_counts_positive_relevance_quantus_the_signed_sum(scenes, continuous_maps):
    maps, masks = continuous_maps["lrpc"], scenes[3]
    ours = relevance_mass_accuracy(maps, masks).numpy()
    np.testing.assert_allclose(_quantus(quantus.RelevanceMassAccuracy, maps.clamp(min=0), masks, scenes), ours,
                               rtol=1e-6)
    assert (maps < 0).any()   # epsilon-plus maps are signed, so the definitions part:
    signed = _quantus(quantus.RelevanceMassAccuracy, maps, masks, scenes)
    assert np.abs(signed - ours).max() > 1e-4
    cam = continuous_maps["gradcam"]   # non-negative: the same number either way
    np.testing.assert_allclose(_quantus(quantus.RelevanceMassAccuracy, cam, masks, scenes),
                               relevance_mass_accuracy(cam, masks).numpy(), rtol=1e-6)


def _on_a_grid(maps: torch.Tensor, levels: int = 1000) -> torch.Tensor:
    """``maps`` rounded to multiples of 1/levels of each map's maximum. Quantus divides a map by its maximum before
    looking for it, and a value one ulp below the maximum can round up to it there: a tie Quantus sees and lrpc
    does not, decided by the last bit of the upsampling (which varies with threads and alignment). On the grid,
    every tie is exact before and after the division."""
    scale = maps.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    return torch.round(maps / scale * levels)


def test_with_ties_lrpc_scores_the_expectation_over_tie_breaks_quantus_one_tie_break(scenes, lrpc_maps,
                                                                                   continuous_maps):
    masks = scenes[3]
    maps = lrpc.heat_quantize(lrpc_maps, 4)   # four levels: large ties
    # Pointing game: Quantus hits when any maximal pixel is in the mask; lrpc scores the share that is.
    shares = []
    for tied in (maps, _on_a_grid(continuous_maps["gradcam"])):
        hits = _quantus(quantus.PointingGame, tied, masks, scenes)
        shares.append(pointing_game(tied, masks, tolerance=0).numpy())
        np.testing.assert_array_equal(hits, shares[-1] > 0)
    assert any(((share > 0) & (share < 1)).any() for share in shares)   # partly hitting maxima occur
    # Rank accuracy: each random order of the pixels makes Quantus's sort break the ties differently; the mean
    # over orders approaches lrpc's expectation.
    generator = torch.Generator().manual_seed(0)
    runs = []
    for _ in range(100):
        order = torch.randperm(64 * 64, generator=generator)
        runs.append(_quantus(quantus.RelevanceRankAccuracy, maps.flatten(1)[:, order].view_as(maps),
                             masks.flatten(1)[:, order].view_as(masks), scenes))
    expectation = relevance_rank_accuracy(maps, masks).numpy()
    np.testing.assert_allclose(np.mean(runs, axis=0), expectation, atol=0.01)
    assert np.ptp(runs, axis=0).max() > 0.01   # the tie-break matters for a single run


def test_bad_arguments_are_named(scenes):
    model, images, labels, _ = scenes
    with pytest.raises(LrpcError, match=r"unknown arguments \['rule'\]"):
        explain_func(model, images[:1].numpy(), labels[:1].numpy(), rule=RULES)
    with pytest.raises(LrpcError, match="channels must be"):
        explain_func(model, images[:1].numpy(), labels[:1].numpy(), channels="mean")


def test_the_cache_keeps_the_last_models_and_clear_cache_forgets_them(monkeypatch):
    from lrpc.quantus import CACHE_SIZE, clear_cache

    compiles = []
    compile_ = lrpc.compiler.compile
    monkeypatch.setattr(lrpc.compiler, "compile", lambda *a, **k: compiles.append(1) or compile_(*a, **k))
    x, y = np.zeros((1, 3, 6, 6), np.float32), np.array([0])
    models = [TinyNet().eval() for _ in range(CACHE_SIZE + 1)]
    for model in models:
        explain_func(model, x, y)
    explain_func(models[-1], x, y)   # still kept
    assert len(compiles) == CACHE_SIZE + 1
    explain_func(models[0], x, y)    # the oldest was dropped
    assert len(compiles) == CACHE_SIZE + 2
    clear_cache()
    explain_func(models[0], x, y)
    assert len(compiles) == CACHE_SIZE + 3
