"""The glocal figure: the rows glocal_concepts computes, checked against independent readouts, and the CLI.

The channels must be the layer's most relevant for the input, most relevant first, with R_c as the plain
explainer reads it (keep=[node], summed over positions); each row's crops must be the job's reference crops.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrpc
import lrpc.crp
from lrpc.crp.figures import GlocalConcept, glocal_concepts, glocal_figure
from lrpc.data import GROUNDTRUTH_IMAGE_SIZE as SIZE, groundtruth_model
from lrpc.data.folder import preprocess_image

from test_dataset import write_scenes

pytest.importorskip("zarr")
pytest.importorskip("matplotlib")
K, TOP = 3, 4


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, 6)
    job = tmp_path_factory.mktemp("jobs") / "job"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lrpc.explain_dataset(root, job, model="groundtruth", unit=4, progress=False, concepts="layer2", top=TOP)
    finally:
        torch.set_num_threads(threads)
    return root, job


def test_rows_are_the_most_relevant_channels_with_their_maps_and_crops(job, tmp_path):
    root, job = job
    model = groundtruth_model()
    explainer = lrpc.compile(model, "default", example_input=torch.zeros(1, 3, SIZE, SIZE))
    image = sorted(root.rglob("*.png"))[0]
    x = preprocess_image(Image.open(image), round(SIZE * 256 / 224), SIZE)[None]
    rows = glocal_concepts(explainer, x, "layer2", k=K, job=job, crops=TOP)

    node = "layer2_1_relu_2"   # the output of model.layer2 (its last ReLU)
    kept = lrpc.compile(model, "default", example_input=torch.zeros(1, 3, SIZE, SIZE), keep=[node])(x)
    relevance = kept.relevances[node][0].double().sum((1, 2))
    assert [row.channel for row in rows] == relevance.argsort(descending=True)[:K].tolist()
    np.testing.assert_allclose([row.relevance for row in rows], relevance[[row.channel for row in rows]], rtol=1e-5)
    np.testing.assert_allclose([row.share for row in rows],
                               (relevance / relevance.abs().sum())[[row.channel for row in rows]], rtol=1e-5)
    for row in rows:
        assert row.heatmap.shape == (SIZE, SIZE) and np.isfinite(row.heatmap).all()
        want = lrpc.crp.reference_examples(job, "layer2", row.channel).crops()
        assert len(row.crops) == len(want) == TOP
        assert all(np.array_equal(got, crop) for got, crop in zip(row.crops, want))

    path = glocal_figure(x[0].permute(1, 2, 0).clamp(0, 1).numpy(), kept.heatmap()[0], rows, tmp_path / "g.png",
                         layer="layer2")
    with Image.open(path) as picture:
        assert picture.size[1] == (1 + K) * 184 and picture.size[0] >= 160 + 12 + TOP * 96
    with pytest.raises(lrpc.LrpcError, match="at least one concept"):
        glocal_figure(np.zeros((4, 4, 3)), np.zeros((4, 4)), [], tmp_path / "none.png")
    with pytest.raises(lrpc.LrpcError, match=r"x must be \[1"):
        glocal_concepts(explainer, x.repeat(2, 1, 1, 1), "layer2")
    assert isinstance(rows[0], GlocalConcept)


def test_cli_writes_the_figure(job, tmp_path, capsys):
    from lrpc.cli import main

    root, job = job
    image = str(sorted(root.rglob("*.png"))[0])
    out = tmp_path / "glocal.png"
    assert main(["concepts", image, "--model", "groundtruth", "--layer", "layer2", "--job", str(job), "-k", "2",
                 "-o", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.size[1] == 3 * 184
    assert main(["concepts", image, "--model", "groundtruth", "--layer", "layer2",
                 "-o", str(tmp_path / "maps.png")]) == 0
    assert main(["concepts", image, "--model", "groundtruth", "--layer", "layer3", "--job", str(job),
                 "-o", str(tmp_path / "bad.png")]) == 1
    assert "recorded concepts of layer2, not of 'layer3'" in capsys.readouterr().err
