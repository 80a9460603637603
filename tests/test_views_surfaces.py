"""The heatmap views (sign / smooth / quantize) through every surface that writes or scores maps: the CLI, the
dataset job, the Quantus adapter and insertion_deletion. References: the raw input relevance each surface also
returns or lrpc.compile gives, read with scipy's dense Gaussian filter and the views' definitions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

import lrpc
from lrpc import LrpcError, viz
from lrpc.cli import main
from lrpc.commands import open_image
from lrpc.data import CLASSES, GROUNDTRUTH_IMAGE_SIZE, groundtruth_model, normalize, split_scenes
from lrpc.data.folder import preprocess_image
from lrpc.metrics import insertion_deletion
from lrpc.quantus import explain_func

SIZE = GROUNDTRUTH_IMAGE_SIZE
STEM_SIGMA = np.sqrt(4 + 8 / 3)   # the ground-truth ResNet's torchvision stem: 7x7/2 conv, 3x3/2 max pool


def absolute_blurred(relevance: np.ndarray, sigma: float) -> np.ndarray:
    """|channel sum| blurred by scipy (reflected border, 4 σ), per map: the view sign='absolute', smooth=sigma."""
    heat = np.abs(relevance.astype(np.float64).sum(-3))
    return gaussian_filter(heat, (0,) * (heat.ndim - 2) + (sigma, sigma), mode="reflect", truncate=4.0)


@pytest.fixture(scope="module")
def scenes():
    data = split_scenes("test", 6)
    return groundtruth_model(), normalize(data.images), torch.from_numpy(data.labels), data


def test_cli_explain_writes_the_view_and_keeps_the_raw_relevance(scenes, tmp_path):
    *_, data = scenes
    path = tmp_path / "scene.png"
    Image.fromarray((data.images[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--model", "groundtruth", "--resize", str(SIZE), "--sign", "absolute",
                 "--smooth", "auto", "-q", "-o", str(out)]) == 0
    summary = json.loads((out / "scene.json").read_text())
    assert (summary["sign"], summary["smooth"], summary["quantize"]) == ("absolute", "auto", None)
    relevance = np.load(out / "scene_relevance.npy")
    assert summary["input_relevance_sum"] == pytest.approx(float(relevance.sum()), rel=1e-5)   # raw, not the view
    expected = viz.colorize(torch.from_numpy(absolute_blurred(relevance, STEM_SIGMA)), "signed")
    written = np.asarray(Image.open(out / "scene_heatmap.png").convert("RGB"), dtype=np.int16)
    assert np.abs(written - np.asarray(expected, dtype=np.int16)).max() <= 1


@pytest.mark.parametrize("argument, message", [(["--smooth", "-1"], "sigma must be a finite number >= 0"),
                                               (["--smooth", "wide"], "expected a sigma in pixels or 'auto'"),
                                               (["--sign", "negative"], "invalid choice")])
def test_cli_refuses_bad_views(argument, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["explain", str(tmp_path), "--model", "groundtruth", *argument, "-o", str(tmp_path / "out")])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_dataset_job_stores_and_scores_the_view(scenes, tmp_path):
    zarr = pytest.importorskip("zarr")
    pq = pytest.importorskip("pyarrow.parquet")
    *_, data = scenes
    root = tmp_path / "scenes"
    for k, (image, label) in enumerate(zip(data.images, data.labels)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            root / CLASSES[label] / f"s{k}.png")
    job = tmp_path / "job"
    lrpc.explain_dataset(root, job, model="groundtruth", unit=3, relevance=True, sign="absolute", smooth=1.5,
                         metrics="id", progress=False)
    stored = zarr.open_group(str(job / "maps.zarr"), mode="r")
    np.testing.assert_allclose(stored["heatmap"][:], absolute_blurred(stored["relevance"][:], 1.5), rtol=1e-4,
                               atol=1e-7)
    config = json.loads((job / "job.json").read_text())["config"]
    assert (config["sign"], config["smooth"], config["quantize"]) == ("absolute", 1.5, None)
    # the metric scored the stored view: the same ID as insertion_deletion on those maps
    rows = pq.read_table(job / "table.parquet").to_pydict()
    model = groundtruth_model()
    x = torch.stack([preprocess_image(open_image(root / p), round(SIZE * 256 / 224), SIZE) for p in rows["path"]])
    result = insertion_deletion(model, x, torch.from_numpy(stored["heatmap"][:]), protocol="fair",
                                labels=torch.tensor(rows["label"]), targets=torch.tensor(rows["target"]),
                                sample_ids=torch.tensor(rows["index"]))
    np.testing.assert_allclose(np.array(rows["id"], dtype=float), result.id.numpy(), atol=1e-6)
    with pytest.raises(LrpcError, match="sign must be one of"):
        lrpc.explain_dataset(root, tmp_path / "bad", model="groundtruth", sign="both", progress=False)


def test_quantus_explain_func_reads_the_same_views(scenes):
    model, images, labels, _ = scenes
    exp = lrpc.compile(model, "epsilon-plus", example_input=images[:1])(images, labels)
    for view in ({"sign": "positive", "smooth": "auto"}, {"sign": "absolute", "smooth": 2.0, "quantize": 5}):
        got = explain_func(model, images.numpy(), labels.numpy(), rules="epsilon-plus", **view)
        assert got.shape == (len(images), 1, SIZE, SIZE)
        torch.testing.assert_close(torch.from_numpy(got[:, 0]), exp.heatmap(**view).float())
    with pytest.raises(LrpcError, match="use them with channels='sum'"):
        explain_func(model, images.numpy(), labels.numpy(), rules="epsilon-plus", channels="keep", smooth=2.0)
    with pytest.raises(LrpcError, match="smooth: σ must be finite"):
        explain_func(model, images.numpy(), labels.numpy(), rules="epsilon-plus", smooth=-2.0)


def test_insertion_deletion_ranks_the_view(scenes):
    model, images, labels, _ = scenes
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    reference = torch.from_numpy(absolute_blurred(maps.numpy()[:, None], 2.0))
    options = dict(protocol="fair", labels=labels[:3], targets=labels[:3], tie_seeds=(0,))
    viewed = insertion_deletion(model, images[:3], maps, sign="absolute", smooth=2.0, **options)
    direct = insertion_deletion(model, images[:3], reference, **options)
    torch.testing.assert_close(viewed.id, direct.id)
    with pytest.raises(LrpcError, match="pass exp.heatmap"):
        insertion_deletion(model, images[:3], maps, smooth="auto", **options)
