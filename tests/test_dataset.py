"""lrpc explain-dataset: one rank vs two under torchrun, exactly-once units, bad files, crashes and resumption.

The reference is a single-process run in this process on one thread; torchrun's workers get
OMP_NUM_THREADS=1 (thread count and batch size change maps by ~4e-10, so only equal settings are bit-equal).
Every comparison is against that reference run, which is itself checked against lrpc.compile on the same
preprocessed images.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lrpc
from lrpc.commands import open_image
from lrpc.data import CLASSES, GROUNDTRUTH_IMAGE_SIZE, groundtruth_model, split_scenes
from lrpc.data.folder import preprocess_image
from lrpc.dataset_jobs import decode
from lrpc.dataset_jobs.store import encode
from lrpc.dataset_jobs.worklist import scan_images
from lrpc.metrics import insertion_deletion

zarr = pytest.importorskip("zarr")
pq = pytest.importorskip("pyarrow.parquet")

N_SCENES = 40
UNIT = 4
COMMON = dict(model="groundtruth", unit=UNIT, progress=False)
CLI_COMMON = ["--model", "groundtruth", "--unit", str(UNIT), "-q"]
BAD_FILES = {"square/truncated.png": "truncated", "triangle/notes.png": "cannot identify"}
RUN_COLUMNS = ("rank", "seconds")  # where a run may differ from another
SIZE, RESIZE = GROUNDTRUTH_IMAGE_SIZE, round(GROUNDTRUTH_IMAGE_SIZE * 256 / 224)  # the CLI's default preprocessing


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every in-process run on one thread, like the torchrun workers (and no oversubscribed cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_scenes(root: Path, n: int) -> None:
    from PIL import Image

    scenes = split_scenes("test", n)
    for k, (image, label) in enumerate(zip(scenes.images, scenes.labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"scene{k:03d}.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 scenes in class folders named like the model's classes, a truncated PNG and a text file named .png."""
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, N_SCENES)
    png = sorted((root / "disc").iterdir())[0].read_bytes()
    (root / "square" / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "triangle" / "notes.png").write_text("these are notes, not pixels\n")
    return root


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """One process, one thread."""
    job = tmp_path_factory.mktemp("jobs") / "reference"
    lrpc.explain_dataset(dataset, job, **COMMON)
    return job


@pytest.fixture(scope="module")
def compiled():
    """The model and explainer every job of these tests builds: the ground-truth model, default preset."""
    model = groundtruth_model()
    return model, lrpc.compile(model, "default", example_input=torch.zeros(1, 3, SIZE, SIZE))


def heatmaps(job: Path) -> np.ndarray:
    return zarr.open_group(str(job / "maps.zarr"), mode="r")["heatmap"][:]


def table(job: Path) -> dict:
    return pq.read_table(job / "table.parquet").to_pydict()


def assert_same_results(job: Path, reference: Path) -> None:
    """Bit-identical heatmaps; equal table columns (NaN equal to NaN), except where runs may differ."""
    got, want = heatmaps(job), heatmaps(reference)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), "heatmaps differ bitwise"
    got_table, want_table = table(job), table(reference)
    assert list(got_table) == list(want_table)
    for column, values in want_table.items():
        if column in RUN_COLUMNS:
            continue
        np.testing.assert_array_equal(np.array(got_table[column], dtype=object),
                                      np.array(values, dtype=object), err_msg=column)


def torchrun(job: Path, dataset: Path, *extra: str, max_restarts: int = 0, env: dict | None = None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", str(max_restarts), "-m", "lrpc", "explain-dataset", str(dataset), "-o", str(job),
               *CLI_COMMON, *extra]
    inherited = {key: value for key, value in os.environ.items() if key != "LRPC_TEST_EXIT_AFTER_UNITS"}
    environment = {**inherited, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def test_reference_matches_compiled_explainer_and_records_bad_files(reference, dataset, compiled):
    _, explainer = compiled
    rows = table(reference)
    assert rows["index"] == list(range(N_SCENES + len(BAD_FILES)))
    heat = heatmaps(reference)
    failed = {path: (index, error) for index, path, error in zip(rows["index"], rows["path"], rows["error"]) if error}
    assert set(failed) == set(BAD_FILES)
    for path, (index, error) in failed.items():
        assert BAD_FILES[path] in error and path in error
        assert np.isnan(heat[index]).all()
        assert rows["predicted"][index] is None and rows["probability"][index] is None
    good = [i for i in rows["index"] if rows["error"][i] is None]
    assert not np.isnan(heat[good]).any()
    # labels come from the folder names, in the model's class order
    assert all(rows["label"][i] == CLASSES.index(rows["path"][i].split("/")[0]) for i in good)

    # the maps are lrpc.compile's on the same preprocessed images, explained as the same unit batches
    for unit in range(0, len(rows["index"]), UNIT):
        batch = [i for i in range(unit, min(unit + UNIT, len(rows["index"]))) if i in good]
        x = torch.stack([preprocess_image(open_image(dataset / rows["path"][i]), RESIZE, SIZE) for i in batch])
        exp = explainer(x)
        assert np.array_equal(heat[batch], exp.heatmap().numpy())
        assert [rows["conservation_error"][i] for i in batch] == exp.conservation_error().tolist()
        assert [rows["start"][i] for i in batch] == exp.start.tolist()
        assert [rows["target"][i] for i in batch] == [rows["predicted"][i] for i in batch] == exp.target.tolist()

    summary = json.loads((reference / "summary.json").read_text())
    assert (summary["images"], summary["failed"]) == (N_SCENES + 2, 2)
    assert summary["statistics"]["probability"]["n"] == N_SCENES and (reference / "_SUCCESS").is_file()


def test_two_ranks_equal_one_rank_bit_for_bit(reference, dataset, tmp_path):
    job = tmp_path / "two-ranks"
    result = torchrun(job, dataset)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_results(job, reference)
    rows = table(job)
    assert rows["index"] == list(range(N_SCENES + 2))  # every index exactly once
    assert set(rows["rank"]) == {0, 1}
    # a unit is done by one rank: its rows share the rank
    assert all(len(set(rows["rank"][u:u + UNIT])) == 1 for u in range(0, len(rows["rank"]), UNIT))
    assert json.loads((job / "summary.json").read_text())["run"]["ranks"] == 2


def test_crashed_process_leaves_no_success_and_rerun_finishes_the_rest(reference, dataset, tmp_path):
    job = tmp_path / "crashed"
    command = [sys.executable, "-m", "lrpc", "explain-dataset", str(dataset), "-o", str(job), *CLI_COMMON]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "LRPC_TEST_EXIT_AFTER_UNITS": "2"})
    assert result.returncode != 0
    assert "rank 0 exits after 2 units" in result.stderr
    assert not (job / "_SUCCESS").exists() and not (job / "table.parquet").exists()
    assert sorted(path.name for path in (job / "parts").iterdir()) == ["unit-0000000.parquet", "unit-0000001.parquet"]

    summary = lrpc.explain_dataset(dataset, job, **COMMON)
    units = -(-(N_SCENES + 2) // UNIT)
    assert summary["run"]["units"] == units - 2
    assert (job / "_SUCCESS").is_file()
    assert_same_results(job, reference)


@pytest.mark.slow   # torchrun restarting a crashed worker; the in-process resumption above runs by default
def test_max_restarts_finishes_in_one_invocation(reference, dataset, tmp_path):
    job = tmp_path / "restarted"
    result = torchrun(job, dataset, max_restarts=1, env={"LRPC_TEST_EXIT_AFTER_UNITS": "1:2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 exits after 2 units" in result.stderr
    assert (job / "_SUCCESS").is_file()
    assert_same_results(job, reference)


def test_finished_job_reruns_as_noop(reference, dataset):
    stamps = {path: path.stat().st_mtime_ns for path in reference.rglob("*") if path.is_file()}
    summary = lrpc.explain_dataset(dataset, reference, **COMMON)
    assert summary["already_complete"] and summary["images"] == N_SCENES + 2
    assert stamps == {path: path.stat().st_mtime_ns for path in reference.rglob("*") if path.is_file()}


def test_other_settings_are_refused(reference, dataset):
    with pytest.raises(lrpc.LrpcError, match="rules"):
        lrpc.explain_dataset(dataset, reference, rules="otsuki2024", **COMMON)
    from lrpc.cli import main
    assert main(["explain-dataset", str(dataset), "-o", str(reference), "--rules", "otsuki2024", *CLI_COMMON]) == 1
    assert json.loads((reference / "job.json").read_text())["config"]["rules"] == "default"


def test_bad_folders_and_settings_are_refused(tmp_path):
    write_scenes(tmp_path / "classes", 4)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (tmp_path / "classes").rglob("*.png"):
        shutil.copy(path, flat / path.name)
    work = scan_images(flat, CLASSES)
    assert work.labels is None and list(work.paths) == sorted(path.name for path in flat.iterdir())
    with pytest.raises(lrpc.LrpcError, match="labels"):
        lrpc.explain_dataset(flat, tmp_path / "job", target="label", **COMMON)
    with pytest.raises(lrpc.LrpcError, match="labels"):
        lrpc.explain_dataset(flat, tmp_path / "job", metrics="id", protocol="fair", **COMMON)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    with pytest.raises(lrpc.LrpcError, match="holds no lrpc dataset job"):
        lrpc.explain_dataset(flat, busy, **COMMON)
    assert [path.name for path in busy.iterdir()] == ["thesis.tex"]
    shutil.copy(next(flat.iterdir()), tmp_path / "classes" / "loose.png")
    with pytest.raises(lrpc.LrpcError, match="both class folders and images"):
        lrpc.explain_dataset(tmp_path / "classes", tmp_path / "job", **COMMON)
    for bad, match in ((dict(metrics="insertion,auc"), "unknown metrics"), (dict(target="cat"), "target"),
                       (dict(dtype="bfloat16"), "dtype"), (dict(protocol="mine"), "protocol")):
        with pytest.raises(lrpc.LrpcError, match=match):
            lrpc.explain_dataset(flat, tmp_path / "job", **{**COMMON, **bad})
    from lrpc.cli import main
    assert main(["explain-dataset", str(tmp_path / "nowhere"), "-o", str(tmp_path / "job"), *CLI_COMMON]) == 1


def test_float16_store_scales_each_map(reference, dataset, tmp_path, compiled):
    job = tmp_path / "half"
    model, _ = compiled  # an nn.Module works as well as a spec (the same weights give the same maps)
    with pytest.raises(lrpc.LrpcError, match="weights"):
        lrpc.explain_dataset(dataset, job, **{**COMMON, "model": model, "weights": "model.pth"})
    lrpc.explain_dataset(dataset, job, relevance=True, dtype="float16", input_size=SIZE, **{**COMMON, "model": model})
    group = zarr.open_group(str(job / "maps.zarr"), mode="r")
    assert group["heatmap"].dtype == np.float16 and group["relevance"].dtype == np.float16
    exact = heatmaps(reference)
    good = ~np.isnan(exact).any((1, 2))
    stored = decode(group["heatmap"][:], group["heatmap_scale"][:])
    assert np.isnan(stored[~good]).all()
    largest = np.abs(exact[good]).max((1, 2), keepdims=True)
    assert (np.abs(stored[good] - exact[good]) / largest).max() < 1e-3  # float16: ~3.3 digits of each map's max
    # Scaling is what makes this independent of the maps' magnitude: raw LRP values of large inputs are tiny
    # (relevance 1 over 224x224x3 inputs), where float16 keeps few or no digits; the scaled maps keep theirs.
    tiny = exact[good] * np.float32(1e-4)
    top = np.abs(tiny) >= np.quantile(np.abs(tiny), 0.99)  # each map's largest values (the top percent)
    scaled_error = np.abs(decode(*encode(tiny, "float16"))[top] / tiny[top] - 1)
    raw_error = np.abs(tiny.astype(np.float16).astype(np.float32)[top] / tiny[top] - 1)
    assert scaled_error.max() < 1e-3 and np.median(raw_error) > 0.01
    relevance = decode(group["relevance"][:], group["relevance_scale"][:])
    np.testing.assert_allclose(relevance[good].sum(1), exact[good], atol=2e-3 * np.abs(exact[good]).max())
    values, scale = encode(np.zeros((1, 2, 2), np.float32), "float16")
    assert scale.tolist() == [1.0] and not values.any()  # an all-zero map stays zero


def test_sample_ids_make_metrics_independent_of_order(compiled):
    model, explainer = compiled
    scenes = split_scenes("test", 6)
    x = lrpc.data.normalize(torch.from_numpy(scenes.images))
    maps = lrpc.heat_quantize(explainer(x).heatmap(), 4)  # quantized: many ties for the random tie-breaks
    settings = dict(protocol="fair", step_fraction=0.1, targets=explainer(x).target)
    ids = torch.arange(100, 106)
    forward = insertion_deletion(model, x, maps, labels=scenes.labels, sample_ids=ids, **settings)
    flip = torch.arange(5, -1, -1)
    settings["targets"] = settings["targets"][flip]
    backward = insertion_deletion(model, x[flip], maps[flip], labels=scenes.labels[flip.numpy()],
                                  sample_ids=ids[flip], **settings)
    assert torch.equal(forward.id, backward.id[flip])
    by_position = insertion_deletion(model, x[flip], maps[flip], labels=scenes.labels[flip.numpy()], **settings)
    assert not torch.equal(forward.id, by_position.id[flip])  # without ids, the order changes the tie-breaks
    with pytest.raises(ValueError, match="sample_ids"):
        insertion_deletion(model, x, maps, labels=scenes.labels, sample_ids=[0.5] * 6,
                           **{**settings, "targets": forward.scored_class})


def test_metrics_per_image_then_changed_images_refused_and_overwrite(tmp_path, compiled):
    model, explainer = compiled
    root = tmp_path / "scenes"
    write_scenes(root, 6)
    job = tmp_path / "job"
    summary = lrpc.explain_dataset(root, job, metrics="insertion,deletion,id", protocol="fair", **COMMON)
    rows = table(job)
    assert [name for name in rows if "insertion" in name or "deletion" in name or name.endswith("id")] == [
        "insertion", "deletion", "id", "logit_insertion", "logit_deletion", "logit_id"]
    unit = list(range(UNIT, 6))  # the second unit: positions 0, 1 of its call, ids 4, 5
    x = torch.stack([preprocess_image(open_image(root / rows["path"][i]), RESIZE, SIZE) for i in unit])
    exp = explainer(x)
    expected = insertion_deletion(model, x, exp.heatmap(), protocol="fair", targets=exp.target,
                                  labels=[rows["label"][i] for i in unit], sample_ids=unit)
    for column, kind, score in (("insertion", "insertion", "softmax"), ("id", "id", "softmax"),
                                ("logit_deletion", "deletion", "logit")):
        assert [rows[column][i] for i in unit] == expected.auc(kind, score).tolist()
    assert summary["statistics"]["id"]["n"] == 6
    assert summary["statistics"]["id"]["mean"] == pytest.approx(np.mean(rows["id"]))

    shutil.copy(root / rows["path"][0], root / "disc" / "added.png")
    with pytest.raises(lrpc.LrpcError, match="image_list_sha256"):
        lrpc.explain_dataset(root, job, metrics="insertion,deletion,id", protocol="fair", **COMMON)
    summary = lrpc.explain_dataset(root, job, rules="otsuki2024", overwrite=True, **COMMON)
    assert summary["images"] == 7 and not summary.get("already_complete")
    assert json.loads((job / "job.json").read_text())["config"]["rules"] == "otsuki2024"
    rows = table(job)
    assert "id" not in rows and len(list((job / "parts").iterdir())) == 2
    # otsuki2024's 2x2-average max-pool stand-in absorbs relevance: the column accounts for all of it
    np.testing.assert_allclose(np.subtract(rows["start"], rows["relevance_sum"]), rows["absorbed"], atol=1e-6)
    assert max(rows["absorbed"]) > 1e-3


def test_missing_extra_names_the_install(monkeypatch):
    from lrpc.optional import require

    for module in ("zarr", "pyarrow.parquet", "tqdm"):
        monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
        with pytest.raises(lrpc.LrpcError, match=r"pip install 'lrpc\[dataset\]'"):
            require(module)
