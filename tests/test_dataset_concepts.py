"""explain-dataset --concepts: per-channel reference examples, against a brute-force loop over the same images.

The brute force explains the job's units itself (lrpc.compile with keep=[node], the same batches, so the same
bits), sums each channel's relevance / activation over positions in float64 and sorts every channel's images in
Python. A two-rank torchrun job and a killed-and-resumed job must give exactly the reference job's ranking.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrpc
import lrpc.crp
from lrpc.data import GROUNDTRUTH_IMAGE_SIZE, groundtruth_model
from lrpc.data.folder import preprocess_image
from lrpc.receptive_field import receptive_field

from test_dataset import write_scenes

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("zarr")

N_SCENES, UNIT, TOP = 14, 4, 5
LAYERS = ("layer2", "layer4")
COMMON = dict(model="groundtruth", unit=UNIT, progress=False, concepts=",".join(LAYERS), top=TOP)
SIZE, RESIZE = GROUNDTRUTH_IMAGE_SIZE, round(GROUNDTRUTH_IMAGE_SIZE * 256 / 224)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, N_SCENES)
    (root / "square" / "broken.png").write_text("not an image\n")   # a failed image must never rank
    return root


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("jobs") / "reference"
    lrpc.explain_dataset(dataset, job, **COMMON)
    return job


def concepts_table(job: Path) -> dict:
    return pq.read_table(job / "concepts.parquet").to_pydict()


def brute_force(dataset: Path, job: Path) -> dict:
    """Every (layer, channel, mode, statistic): the sorted list of (index, score, position) over good images."""
    model = groundtruth_model()
    rows = pq.read_table(job / "table.parquet").to_pydict()
    # the node a module path means is the module's output: checked against a forward hook on the module
    hooked = {}
    handles = [getattr(model, layer).register_forward_hook(
        lambda module, args, out, layer=layer: hooked.__setitem__(layer, out)) for layer in LAYERS]
    nodes = {layer: json.loads((job / "job.json").read_text())["concepts"][layer]["node"] for layer in LAYERS}
    explainer = lrpc.compile(model, "default", example_input=torch.zeros(1, 3, SIZE, SIZE), keep=nodes.values())
    scores: dict = {}
    for start in range(0, len(rows["index"]), UNIT):
        batch = [i for i in range(start, min(start + UNIT, len(rows["index"]))) if rows["error"][i] is None]
        x = torch.stack([preprocess_image(Image.open(dataset / rows["path"][i]), RESIZE, SIZE) for i in batch])
        exp = explainer(x)
        model(x)
        for layer, node in nodes.items():
            assert torch.equal(exp.activations[node], hooked[layer])
            for mode, values in (("relevance", exp.relevances[node]), ("activation", exp.activations[node])):
                flat = values.double().flatten(2).numpy()
                for k, index in enumerate(batch):
                    for channel in range(flat.shape[1]):
                        for statistic, value in (("sum", flat[k, channel].sum()), ("max", flat[k, channel].max())):
                            scores.setdefault((layer, channel, mode, statistic), []).append(
                                (index, value, int(flat[k, channel].argmax())))
    for handle in handles:
        handle.remove()
    return {key: sorted(values, key=lambda item: (-item[1], item[0]))[:TOP] for key, values in scores.items()}


def assert_same_ranking(job: Path, reference: Path) -> None:
    got, want = concepts_table(job), concepts_table(reference)
    assert got == want


def test_reference_job_equals_brute_force(reference, dataset):
    table = concepts_table(reference)
    expected = brute_force(dataset, reference)
    layers = json.loads((reference / "job.json").read_text())["concepts"]
    assert sum(len(v) for v in expected.values()) == len(table["index"])
    explainer = lrpc.compile(groundtruth_model(), "default", example_input=torch.zeros(1, 3, SIZE, SIZE))
    fields = {layer: receptive_field(explainer, layers[layer]["node"]) for layer in LAYERS}
    rows: dict = {}
    for k in range(len(table["index"])):
        key = (table["layer"][k], table["channel"][k], table["mode"][k], table["statistic"][k])
        rows.setdefault(key, []).append(k)
    assert set(rows) == set(expected)
    for key, want in expected.items():
        ks = rows[key]
        assert [table["rank"][k] for k in ks] == list(range(TOP))
        assert [table["index"][k] for k in ks] == [index for index, _, _ in want], key
        np.testing.assert_allclose([table["score"][k] for k in ks], [score for _, score, _ in want], rtol=1e-5)
        field = fields[key[0]]
        positions = [position for _, _, position in want]
        assert [(table["y"][k], table["x"][k]) for k in ks] == [np.unravel_index(p, field.grid) for p in positions]
        boxes = field.boxes(positions)
        assert [[table["top"][k], table["bottom"][k], table["left"][k], table["right"][k]] for k in ks] == \
            boxes.reshape(-1, 4).tolist()
    broken = json.loads((reference / "summary.json").read_text())["failures"][0]["path"]
    assert broken not in table["path"] and broken == "square/broken.png"
    # layer2's 8x8 grid: boxes smaller than the image, so the crops are real crops
    assert any(table["bottom"][k] - table["top"][k] < SIZE for k in range(len(table["index"]))
               if table["layer"][k] == "layer2")


@pytest.mark.slow
def test_two_ranks_and_a_resumed_job_give_the_same_ranking(reference, dataset, tmp_path):
    job = tmp_path / "two-ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lrpc",
               "explain-dataset", str(dataset), "-o", str(job), "--model", "groundtruth", "--unit", str(UNIT),
               "--concepts", ",".join(LAYERS), "--top", str(TOP), "-q"]
    inherited = {key: value for key, value in os.environ.items() if key != "LRPC_TEST_EXIT_AFTER_UNITS"}
    result = subprocess.run(command, env={**inherited, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(pq.read_table(job / "table.parquet").column("rank").to_pylist()) == {0, 1}
    assert_same_ranking(job, reference)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "lrpc", "explain-dataset", str(dataset), "-o", str(killed), "--model",
               "groundtruth", "--unit", str(UNIT), "--concepts", ",".join(LAYERS), "--top", str(TOP), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**inherited, "OMP_NUM_THREADS": "1", "LRPC_TEST_EXIT_AFTER_UNITS": "2"})
    assert result.returncode != 0 and not (killed / "concepts.parquet").exists()
    summary = lrpc.explain_dataset(dataset, killed, **COMMON)
    assert summary["run"]["units"] == -(-(N_SCENES + 1) // UNIT) - 2
    assert_same_ranking(killed, reference)


def test_reference_examples_read_back(reference, dataset):
    table = concepts_table(reference)
    examples = lrpc.crp.reference_examples(reference, "layer2", 3, mode="activation", statistic="max")
    ks = [k for k in range(len(table["index"])) if (table["layer"][k], table["channel"][k], table["mode"][k],
                                                     table["statistic"][k]) == ("layer2", 3, "activation", "max")]
    assert examples.indices.tolist() == [table["index"][k] for k in ks] and len(examples) == TOP
    assert examples.scores.tolist() == [table["score"][k] for k in ks]
    assert list(examples.paths) == [table["path"][k] for k in ks]
    default = lrpc.crp.reference_examples(reference, "layer2", 3)
    assert (default.mode, default.statistic) == ("relevance", "sum")
    crops = examples.crops()
    for crop, (top, left, bottom, right), path in zip(crops, examples.boxes, examples.paths):
        assert crop.shape == (bottom - top, right - left, 3)
        whole = preprocess_image(Image.open(dataset / path), RESIZE, SIZE, (0, 0, 0), (1, 1, 1))
        np.testing.assert_array_equal(crop, whole[:, top:bottom, left:right].permute(1, 2, 0).numpy())
    for kwargs, match in ((dict(layer="layer9", channel=0), "not of 'layer9'"),
                          (dict(layer="layer2", channel=64), "out of range.*64 channels"),
                          (dict(layer="layer2", channel=0, mode="gradient"), "mode"),
                          (dict(layer="layer2", channel=0, statistic="mean"), "statistic")):
        with pytest.raises(lrpc.LrpcError, match=match):
            lrpc.crp.reference_examples(reference, **kwargs)


def test_bad_concept_settings_are_refused(dataset, tmp_path):
    for bad, match in ((dict(concepts="layer9"), "unknown layer 'layer9'"), (dict(top=0), "top"),
                       (dict(concepts="layer2,layer2"), "distinct")):
        with pytest.raises(lrpc.LrpcError, match=match):
            lrpc.explain_dataset(dataset, tmp_path / "job", **{**COMMON, **bad})
    plain = tmp_path / "plain"
    lrpc.explain_dataset(dataset, plain, model="groundtruth", unit=8, progress=False)
    with pytest.raises(lrpc.LrpcError, match="no concepts"):
        lrpc.crp.reference_examples(plain, "layer2", 0)
