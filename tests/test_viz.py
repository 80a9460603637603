"""lrpc.viz: colormaps, normalisation, overlays, Heat-Quantized display and panels, checked by hand."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lrpc import viz

WHITE, RED, BLUE, BLACK = (255, 255, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0)


def test_symmetric_normalisation_divides_by_the_largest_magnitude():
    heat = np.array([[2.0, -4.0], [1.0, 0.0]])
    np.testing.assert_allclose(viz.normalize(heat, "signed", percentile=100), [[0.5, -1.0], [0.25, 0.0]])


def test_positive_normalisation_drops_negative_relevance():
    heat = torch.tensor([[2.0, -8.0], [4.0, 0.0]])
    np.testing.assert_allclose(viz.normalize(heat, "positive", percentile=100), [[0.5, 0.0], [1.0, 0.0]])


def test_percentile_saturates_the_top_values():
    # |values| 1, 2, 3, 4: their median is 2.5, so 3 and 4 saturate at 1
    heat = np.array([[1.0, -2.0], [3.0, 4.0]])
    np.testing.assert_allclose(viz.normalize(heat, percentile=50), [[0.4, -0.8], [1.0, 1.0]])


def test_sparse_and_zero_maps():
    sparse = np.zeros((10, 10))
    sparse[3, 4] = -5.0  # the 99.5th percentile of |R| is 0 here: fall back to the maximum
    assert viz.normalize(sparse)[3, 4] == -1.0
    assert not viz.normalize(np.zeros((4, 4))).any()
    assert (viz.colorize(np.zeros((4, 4))) == 255).all()


def test_signed_colormap_is_blue_white_red_centred_at_zero():
    heat = np.array([[-1.0, 0.0, 1.0, 0.5]])
    rgb = viz.colorize(heat, "signed", percentile=100)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert [tuple(c) for c in rgb[0, :3]] == [BLUE, WHITE, RED]
    # halfway between white and red: green and blue at 0.5 * 255 = 127.5, rounded half to even
    assert tuple(rgb[0, 3]) == (255, 128, 128)


def test_positive_colormap_runs_from_black_to_white():
    rgb = viz.colorize(np.array([[0.0, 1.0, -3.0]]), "positive", percentile=100)
    assert [tuple(c) for c in rgb[0]] == [BLACK, WHITE, BLACK]


def test_heat_quantized_display_has_q_levels():
    ramp = np.linspace(0.0, 1.0, 64).reshape(8, 8)
    # Q = 2: delta = max - min = 1, so every value below the maximum falls to the minimum, 0 (white)
    rgb = viz.colorize(ramp, quantize=2, percentile=100)
    assert (rgb.reshape(-1, 3)[:-1] == 255).all() and tuple(rgb[-1, -1]) == RED
    # Q = 4 on a ramp: exactly four colours
    assert len({tuple(c) for c in viz.colorize(ramp, quantize=4).reshape(-1, 3)}) == 4


def test_overlay_blends_by_relevance():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # pure red photo: grey value 0.299 * 255 = 76.2
    heat = np.array([[0.0, 1.0], [-1.0, 0.0]])
    out = viz.overlay(image, heat, alpha=1.0, percentile=100)
    assert tuple(out[0, 0]) == (76, 76, 76)        # no relevance: the greyed photo
    assert tuple(out[0, 1]) == RED and tuple(out[1, 0]) == BLUE
    half = viz.overlay(image, heat, alpha=0.5, percentile=100)
    assert tuple(half[0, 1]) == (166, 38, 38)     # 0.5 * 76.245 + 0.5 * (255, 0, 0), rounded


def test_overlay_resizes_the_map_to_the_image():
    image = np.full((30, 20, 3), 0.5)
    out = viz.overlay(image, np.random.default_rng(0).normal(size=(15, 10)))
    assert out.shape == (30, 20, 3) and out.dtype == np.uint8


def test_saved_pngs_have_the_right_size(tmp_path):
    heat = torch.randn(30, 20)
    image = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    with Image.open(viz.save_heatmap(heat, tmp_path / "h.png")) as png:
        assert png.size == (20, 30) and png.mode == "RGB"
    with Image.open(viz.save_overlay(image, heat, tmp_path / "o.png", quantize=8)) as png:
        assert png.size == (20, 30)


def test_panels_png_size(tmp_path):
    images = np.random.default_rng(2).random((3, 16, 16, 3))
    maps = {"a": torch.randn(3, 16, 16), "b": [np.ones((16, 16))] * 3}
    path = viz.panels(images, maps, tmp_path / "p.png", row_labels=["x", "y", "z"], panel_px=50)
    with Image.open(path) as png:
        # 1 photo column + 2 methods, each 50 px; 3 rows of 50 px plus a title strip
        assert png.size == (3 * 50, 3 * (50 + viz.TITLE_PX))
    one = viz.panels(images[0], {"a": np.ones((16, 16))}, tmp_path / "one.png", show_overlay=True, quantize=4)
    with Image.open(one) as png:
        assert png.size == (2 * viz.PANEL_PX, viz.PANEL_PX + viz.TITLE_PX)


@pytest.mark.parametrize("call, message", [
    (lambda: viz.colorize(np.ones((2, 3, 4))), "2-D"),
    (lambda: viz.colorize(np.array([[np.nan]])), "finite"),
    (lambda: viz.colorize(np.ones((2, 2)), "rainbow"), "unknown colormap"),
    (lambda: viz.normalize(np.ones((2, 2)), percentile=0), "percentile"),
    (lambda: viz.overlay(np.ones((2, 2, 4)), np.ones((2, 2))), "image"),
    (lambda: viz.overlay(np.ones((2, 2, 3)), np.ones((2, 2)), alpha=2), "alpha"),
    (lambda: viz.save_png(np.ones((2, 2, 3)), "x.png"), "uint8"),
    (lambda: viz.panels([np.ones((4, 4, 3))] * 2, {"a": [np.ones((4, 4))]}, "p.png"), "1 maps for 2 images"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_missing_optional_dependencies_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"lrpc\[viz\]"):
        viz.save_heatmap(np.ones((2, 2)), tmp_path / "h.png")
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"lrpc\[viz\]"):
        viz.panels(np.ones((4, 4, 3)), {"a": np.ones((4, 4))}, tmp_path / "p.png")


def test_importing_viz_does_not_import_matplotlib():
    code = "import sys, lrpc.viz; assert 'matplotlib' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
