"""Path heatmaps, channel selection, the choice of K and deconvnet against independent references (float64)."""
import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.errors import LrpcError
from lrpc.models.testing import vgg_with_narrow_classifier
from lrpc.paths import (deconvnet, heatmap_mse, heatmap_smape, knee, path_heatmap, relevance_graph,
                        select_channels, select_k, top_k_paths)

from test_paths_flows import MONTAVON_LIKE, TinyResNet, image, single_thread, tiny_cnn  # noqa: F401

TOL = 1e-12


def all_paths(graph):
    return list(nx.all_simple_paths(graph, "input", "output"))


@pytest.mark.parametrize("rules", ["montavon-like", "montavon-vgg16", "default", "epsilon-plus"])
def test_all_paths_together_give_back_the_full_heatmap(rules):
    model, x = tiny_cnn(pool=nn.AdaptiveAvgPool2d(2)), image()
    explainer = lrpc.compile(model, rules=MONTAVON_LIKE if rules == "montavon-like" else rules, example_input=x)
    graph = relevance_graph(explainer, x, max_in_edges=None)
    paths = all_paths(graph)
    assert len(paths) > 100
    full = explainer(x).heatmap()[0]
    assert torch.allclose(path_heatmap(explainer, x, paths, combine="sum"), full, rtol=0, atol=TOL)
    each = path_heatmap(explainer, x, paths, combine="each")
    assert each.shape == (len(paths), 8, 8)
    assert torch.allclose(each.sum(0), full, rtol=0, atol=TOL)


@pytest.mark.parametrize("preset", ["default", "otsuki2024"])
def test_all_paths_of_a_residual_net_give_back_the_full_heatmap(preset):
    model = TinyResNet().eval().double()
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    explainer = lrpc.compile(model, rules=preset, example_input=x)
    graph = relevance_graph(explainer, x, max_in_edges=None)
    paths = all_paths(graph)
    assert any(len(p) < max(map(len, paths)) for p in paths)  # some paths take skips
    full = explainer(x).heatmap()[0]
    assert torch.allclose(path_heatmap(explainer, x, paths, combine="sum"), full, rtol=0, atol=TOL)


def test_each_path_equals_the_compiled_pass_masked_to_it():
    """Single-channel propagation against the generated module with every layer masked to the path's channel."""
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules=MONTAVON_LIKE, example_input=x)
    best = top_k_paths(relevance_graph(explainer, x), 6, "product")
    each = path_heatmap(explainer, x, best)
    for k, path in enumerate(best):
        alone = path_heatmap(explainer, x, [path], combine="union")
        assert torch.allclose(each[k], alone, rtol=0, atol=TOL)
    union = path_heatmap(explainer, x, best, combine="union")
    assert torch.allclose(path_heatmap(explainer, x, best, combine="sum"), each.sum(0))
    assert not torch.allclose(union, each.sum(0))  # the union mask also admits crossing paths


def test_vgg16_paths_equal_masked_passes_and_rows_hold():
    model = vgg_with_narrow_classifier("vgg16", num_classes=10, hidden=32).eval().double().requires_grad_(False)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    convs = [f"features_{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    explainer = lrpc.compile(model, rules="montavon-vgg16", example_input=x, keep=convs)
    exp = explainer(x)
    graph = relevance_graph(explainer, x)
    assert graph.number_of_nodes() == 2 + 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512 + 32 + 32 + 10
    for (lower, upper), f in graph.graph["flows"].items():
        if lower in convs:
            r = exp.relevances[lower][0].sum((1, 2))
            assert torch.allclose(f.sum(1), r, rtol=0, atol=1e-9 * float(r.abs().max())), lower
    best = top_k_paths(graph, 3)
    each = path_heatmap(explainer, x, best)
    for k, path in enumerate(best):
        alone = path_heatmap(explainer, x, [path], combine="union")
        assert torch.allclose(each[k], alone, rtol=0, atol=1e-12 * float(alone.abs().max()))


def test_path_heatmap_refuses_bad_paths():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules="default", example_input=x)
    with pytest.raises(LrpcError, match="does not feed"):
        path_heatmap(explainer, x, [["input", ("_3", 0), ("_5", 0), ("_8", 0), ("_10", 0), "output"]])
    with pytest.raises(LrpcError, match="channels"):
        path_heatmap(explainer, x, [["input", ("_0", 9), ("_3", 0), ("_5", 0), ("_8", 0), ("_10", 0), "output"]])
    with pytest.raises(LrpcError, match="from 'input' to 'output'"):
        path_heatmap(explainer, x, [[("_0", 0), "output"]])
    with pytest.raises(LrpcError, match="combine"):
        path_heatmap(explainer, x, [], combine="max")


# ------------------------------------------------------------------------------------------ channel selection
def test_select_channels_keeps_everything_or_nothing_at_the_extremes():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules=MONTAVON_LIKE, example_input=x)
    full = explainer(x).heatmap()[0]
    everything = select_channels(explainer, x, "_3", k_std=math.inf)
    assert bool(everything.keep.all()) and everything.channels.tolist() == list(range(5))
    assert torch.allclose(everything.heatmap, full, rtol=0, atol=TOL)
    nothing = select_channels(explainer, x, "_3", k_std=-math.inf)
    assert not bool(nothing.keep.any())
    assert bool((nothing.heatmap == 0).all())


@pytest.mark.parametrize("score", ["relevance", "activation", "act_minus_rel"])
def test_select_channels_threshold_and_heatmap(score):
    """Scores and the mean − k·std cut by numpy; the heatmap equals the sum of the maps of every path whose
    channel at the layer was kept."""
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules=MONTAVON_LIKE, example_input=x, keep=["_5"])
    exp = explainer(x)
    relevance = exp.relevances["_5"][0].sum((1, 2)).numpy()
    activation = exp.activations["_5"][0].clamp(min=0).sum((1, 2)).numpy()
    scores = {"relevance": relevance, "activation": activation, "act_minus_rel": activation - relevance}[score]
    k_std = 0.5
    selection = select_channels(explainer, x, "5", score=score, k_std=k_std)  # by module path
    assert selection.layer == "_5"
    np.testing.assert_allclose(selection.scores.numpy(), scores, rtol=1e-12)
    assert selection.threshold == pytest.approx(scores.mean() - k_std * scores.std())
    assert selection.keep.tolist() == (scores >= scores.mean() - k_std * scores.std()).tolist()
    assert 0 < int(selection.keep.sum()) < 6
    paths = [p for p in all_paths(relevance_graph(explainer, x, max_in_edges=None))
             if bool(selection.keep[p[3][1]])]
    assert torch.allclose(selection.heatmap, path_heatmap(explainer, x, paths, combine="sum"), rtol=0, atol=TOL)


def test_select_channels_refuses_unknown_layers_and_scores():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules="default", example_input=x)
    with pytest.raises(LrpcError, match="not a conv/linear layer"):
        select_channels(explainer, x, "_4")
    with pytest.raises(LrpcError, match="score"):
        select_channels(explainer, x, "_3", score="gradient")


# ------------------------------------------------------------------------------------------------ choosing K
def test_heatmap_metrics_by_hand():
    full = torch.tensor([[2.0, -2.0], [0.0, 0.0]])
    approx = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a, b = full / 4, approx / 2        # each divided by its total |relevance|
    assert heatmap_mse(full, approx) == pytest.approx(float(((a - b) ** 2).mean()))
    # pixels: |.5-.5|/.5 = 0, |-.5-0|/.25 = 2, 0/0 := 0, |0-.5|/.25 = 2
    assert heatmap_smape(full, approx, eps=0.0) == pytest.approx(100.0 * (0 + 2 + 0 + 2) / 4)
    assert heatmap_mse(full, 3 * full) == 0.0 and heatmap_smape(full, full) == 0.0
    assert heatmap_mse(full, torch.zeros(2, 2)) == pytest.approx(float((a ** 2).mean()))


def test_knee_of_a_falling_curve():
    ks = [1, 2, 3, 5, 10, 20, 50]
    assert knee(ks, [1.0, 0.5, 0.3, 0.1, 0.08, 0.07, 0.065]) == 5
    assert knee(ks, [0.2] * 7) == 1                       # flat: no reason to take more paths
    assert knee([1, 2], [1.0, 0.5]) == 2


def test_select_k_curves_end_at_zero_when_every_path_is_taken():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules=MONTAVON_LIKE, example_input=x)
    total = len(all_paths(relevance_graph(explainer, x, max_in_edges=None)))
    result = select_k(explainer, x, ks=(1, 2, 5, total), max_in_edges=None)
    assert result.ks == [1, 2, 5, total]
    assert result.mse[-1] == pytest.approx(0.0, abs=1e-20) and result.smape[-1] == pytest.approx(0.0, abs=1e-6)
    assert result.coverage[-1] == pytest.approx(1.0, rel=1e-9)
    assert torch.allclose(result.full, explainer(x).heatmap()[0])
    best = [p for p, _ in top_k_paths(result.graph, 5)]
    assert torch.allclose(result.heatmaps[5], path_heatmap(explainer, x, best, combine="sum"), rtol=0, atol=TOL)
    for k, mse, smape in zip(result.ks, result.mse, result.smape):
        assert mse == pytest.approx(heatmap_mse(result.full, result.heatmaps[k]))
        assert smape == pytest.approx(heatmap_smape(result.full, result.heatmaps[k]))
    assert result.chosen in result.ks and result.criterion == "knee"
    loose = select_k(explainer, x, ks=(1, 2, 5, total), tolerance=max(result.mse) + 1.0)
    assert (loose.chosen, loose.criterion) == (1, "tolerance")
    with pytest.raises(LrpcError, match="ks"):
        select_k(explainer, x, ks=(5, 2))


# --------------------------------------------------------------------------------------------------- deconvnet
def deconv_reference(model, x, channel, mode):
    """conv1 -> ReLU -> max-pool -> conv2, inverted by hand: transposed conv2, unpool, ReLU, transposed conv1."""
    conv1, conv2 = model[0], model[3]
    h1 = conv1(x)
    r1 = h1.relu()
    pooled, switches = F.max_pool2d(r1, 2, return_indices=True)
    h2 = conv2(pooled)
    feature = h2[0, channel].relu()
    if mode == "max":
        feature = torch.where(torch.arange(feature.numel()).reshape(feature.shape) == feature.argmax(), feature, 0.0)
    signal = torch.zeros_like(h2)
    signal[0, channel] = feature
    d = F.conv_transpose2d(signal, conv2.weight, padding=1)
    d = F.max_unpool2d(d, switches, 2, output_size=r1.shape[-2:])
    d = d.relu()
    return F.conv_transpose2d(d, conv1.weight, padding=1)[0]


@pytest.mark.parametrize("mode", ["map", "max"])
def test_deconvnet_equals_the_explicit_chain(mode):
    model, x = tiny_cnn(pool=nn.AdaptiveAvgPool2d(2)), image(size=16)
    channels = [0, 2, 4]
    got = deconvnet(model, x, "3", channels, mode=mode)            # module path, from the model
    assert got.shape == (3, 3, 16, 16)
    for row, c in enumerate(channels):
        assert torch.allclose(got[row], deconv_reference(model, x, c, mode), rtol=0, atol=TOL)
    explainer = lrpc.compile(model, example_input=x)
    assert torch.allclose(deconvnet(explainer, x, "_3", 2, mode=mode)[0], got[1], rtol=0, atol=TOL)


def test_deconvnet_refuses_bad_arguments():
    model, x = tiny_cnn(pool=nn.AdaptiveAvgPool2d(2)), image(size=16)
    explainer = lrpc.compile(model, example_input=x)
    with pytest.raises(LrpcError, match="channel"):
        deconvnet(explainer, x, "_3", 5)
    with pytest.raises(LrpcError, match="node name"):
        deconvnet(explainer, x, "conv9", 0)
    with pytest.raises(LrpcError, match="mode"):
        deconvnet(explainer, x, "_3", 0, mode="all")

