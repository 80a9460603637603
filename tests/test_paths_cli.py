"""Figures of lrpc.paths (PNG sizes) and the ``lrpc paths`` subcommand end to end on a tiny VGG-style model."""
import json

import numpy as np
import pytest
from PIL import Image

import lrpc
from lrpc import viz
from lrpc.cli import main
from lrpc.paths import path_heatmap, relevance_graph, select_k, top_k_paths
from lrpc.paths.figures import plot_graph, plot_k_curves, plot_k_path_panels, plot_relevance_vs_activation

from test_paths_flows import image, single_thread, tiny_cnn  # noqa: F401

MODEL_FILE = '''
import torch
from lrpc.models.testing import vgg_with_narrow_classifier


def build():
    torch.manual_seed(0)
    return vgg_with_narrow_classifier([4, "M", 8, "M", 512, "M"], num_classes=5, hidden=8)
'''


def png_size(path):
    with Image.open(path) as picture:
        return picture.size


@pytest.fixture(scope="module")
def analysed():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules="default", example_input=x)
    return explainer, x, select_k(explainer, x, ks=(1, 2, 4))


def test_graph_and_curve_figures_have_the_requested_size(analysed, tmp_path):
    explainer, x, selection = analysed
    best = top_k_paths(selection.graph, 3)
    assert png_size(plot_graph(selection.graph, best, tmp_path / "g.png", width=640, height=360)) == (640, 360)
    assert png_size(plot_graph(selection.graph, [], tmp_path / "g0.png", width=300, height=200)) == (300, 200)
    assert png_size(plot_k_curves(selection, tmp_path / "k.png", width=500, height=300)) == (500, 300)
    with pytest.raises(ValueError, match="50 x 50"):
        plot_k_curves(selection, tmp_path / "tiny.png", width=10, height=300)


def test_heatmap_panels_have_one_column_per_map(analysed, tmp_path):
    explainer, x, selection = analysed
    photo = np.random.default_rng(0).random((8, 8, 3))
    panel = 64
    path = plot_k_path_panels(photo, selection, tmp_path / "p.png", ks=[1, 4], panel_px=panel)
    assert png_size(path) == ((2 + 2) * panel, panel + viz.TITLE_PX)
    activation = top_k_paths(relevance_graph(explainer, x, mode="activation"), 2)
    path = plot_relevance_vs_activation(photo, selection.heatmaps[2], path_heatmap(explainer, x, activation,
                                                                                    combine="sum"),
                                        tmp_path / "ra.png", 2, full=selection.full, panel_px=panel)
    assert png_size(path) == (4 * panel, panel + viz.TITLE_PX)
    with pytest.raises(ValueError, match="not computed"):
        plot_k_path_panels(photo, selection, tmp_path / "p.png", ks=[3])


def test_lrpc_paths_writes_every_figure_and_a_summary(tmp_path, capsys):
    (tmp_path / "tinyvgg.py").write_text(MODEL_FILE)
    Image.fromarray((np.random.default_rng(1).random((40, 48, 3)) * 255).astype("uint8")).save(tmp_path / "a.png")
    out = tmp_path / "out"
    code = main(["paths", str(tmp_path / "a.png"), "--model", f"{tmp_path / 'tinyvgg.py'}:build",
                 "--input-size", "32", "--k", "2", "--ks", "1,2,4", "-o", str(out)])
    assert code == 0
    for name in ("graph.png", "paths.png", "relevance_vs_activation.png", "select_k.png", "deconvnet.png"):
        assert png_size(out / name)[0] > 0, name
    assert png_size(out / "paths.png") == ((2 + 3) * viz.PANEL_PX, viz.PANEL_PX + viz.TITLE_PX)
    summary = json.loads((out / "paths.json").read_text())
    assert summary["rules"] == "montavon-vgg16" and summary["select_k"]["ks"] == [1, 2, 4]
    assert summary["select_k"]["chosen"] in (1, 2, 4)
    assert len(summary["paths"]) == 2
    for entry in summary["paths"]:
        assert entry["nodes"][0] == "input" and entry["nodes"][-1] == "output"
    assert summary["paths"][0]["score"] >= summary["paths"][1]["score"]
    assert summary["deconvnet"]["layer"] == "features_6"
    assert "chosen K" in capsys.readouterr().out


def test_lrpc_paths_reports_bad_options(tmp_path, capsys):
    (tmp_path / "tinyvgg.py").write_text(MODEL_FILE)
    Image.fromarray(np.zeros((8, 8, 3), dtype="uint8")).save(tmp_path / "a.png")
    args = ["paths", str(tmp_path / "a.png"), "--model", f"{tmp_path / 'tinyvgg.py'}:build", "-o", str(tmp_path)]
    assert main(args + ["--k", "0"]) == 1
    assert "--k must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--ks", "1,x"])
    assert main(["paths", str(tmp_path / "missing.png"), "--model", "vgg11", "-o", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
