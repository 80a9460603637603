"""Devices: the GPU path (tests marked ``cuda``, skipped where torch sees no CUDA device) agrees with the CPU, and
the device options of ``lrpc explain`` and ``benchmarks/speed.py`` work on the CPU and fail clearly elsewhere."""
import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.testing import assert_close

import lrpc
from lrpc import LrpcError
from lrpc.cli import main

from conftest import randomize_batchnorm

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
NETS = textwrap.dedent("""
    import torch
    from torch import nn

    def conv():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3))
""")


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn0(self.stem(x))))
        x = torch.relu(x + self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(TinyResNet()).eval().to(dtype)


X = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def photo_and_nets(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", f"{tmp_path / 'nets.py'}:conv"


def _explain(photo, model, out, *extra):
    return main(["explain", str(photo), "--model", model, "--input-size", "8", "--resize", "8", "-q",
                 "-o", str(out), *extra])


# ------------------------------------------------------------------------------------------------------ GPU
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("preset", ["otsuki2024", "default", "epsilon-plus-flat"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gpu_relevance_equals_cpu_relevance(preset, dtype, monkeypatch):
    # float32 convolutions in float32, not TF32 (matmuls are by default)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = _model(dtype)
    x = X.to(dtype)
    want = lrpc.compile(model, preset, example_input=x[:1])(x)
    gpu = copy.deepcopy(model).cuda()
    got = lrpc.compile(gpu, preset, example_input=x[:1].cuda())(x.cuda())
    tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    assert_close(got.logits.cpu(), want.logits, **tol)
    assert_close(got.relevance.cpu(), want.relevance, **tol)
    assert_close(got.layer_sum_matrix.cpu(), want.layer_sum_matrix, **tol)


@pytest.mark.cuda
@needs_cuda
def test_an_explainer_follows_its_model_to_the_gpu_and_back():
    model = _model()
    explainer = lrpc.compile(model, "otsuki2024", example_input=X[:1])
    model.cuda()
    got = explainer(X.cuda())
    assert_close(got.relevance, lrpc.compile(model, "otsuki2024", example_input=X[:1].cuda())(X.cuda()).relevance)
    with pytest.raises(LrpcError, match="input is on cpu, the explainer's model on cuda"):
        explainer(X)
    with torch.no_grad():
        model.conv1.weight.mul_(-1.0)
    assert_close(explainer(X.cuda()).relevance,
                 lrpc.compile(model, "otsuki2024", example_input=X[:1].cuda())(X.cuda()).relevance)
    explainer.to("cpu")
    assert_close(explainer(X).relevance, lrpc.compile(model, "otsuki2024", example_input=X[:1])(X).relevance)


@pytest.mark.cuda
@needs_cuda
def test_explain_on_the_gpu_writes_what_the_cpu_writes(photo_and_nets, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    photo, model = photo_and_nets
    assert _explain(photo, model, tmp_path / "cpu", "--device", "cpu") == 0
    assert _explain(photo, model, tmp_path / "gpu", "--device", "cuda") == 0
    np.testing.assert_allclose(np.load(tmp_path / "gpu" / "photo_relevance.npy"),
                               np.load(tmp_path / "cpu" / "photo_relevance.npy"), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------------------ CPU
@pytest.mark.parametrize("preset,tol", [("otsuki2024", 0.03), ("default", 0.15), ("epsilon-plus-flat", 0.2)])
def test_bfloat16_explanations_run_and_approximate_float32(preset, tol):
    """bfloat16 (the GPU benchmark's fast dtype) keeps 8 bits of mantissa: its maps are approximate, within
    ``tol`` of the largest float32 value (measured: 0.008, 0.06, 0.08)."""
    model = _model(torch.float32)
    x = X.float()
    want = lrpc.compile(model, preset, example_input=x[:1])(x).relevance
    got = lrpc.compile(copy.deepcopy(model).bfloat16(), preset, example_input=x[:1].bfloat16())(x.bfloat16())
    assert got.relevance.dtype == torch.bfloat16 and bool(torch.isfinite(got.relevance).all())
    assert float((got.relevance.float() - want).abs().max()) <= tol * float(want.abs().max())


def test_explain_on_the_cpu_device_equals_the_default(photo_and_nets, tmp_path):
    photo, model = photo_and_nets
    assert _explain(photo, model, tmp_path / "default") == 0
    assert _explain(photo, model, tmp_path / "cpu", "--device", "cpu") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "cpu" / "photo_relevance.npy"),
                                  np.load(tmp_path / "default" / "photo_relevance.npy"))


@pytest.mark.parametrize("device,words", [
    ("gpu7", "--device 'gpu7' is not a device torch knows"),
    pytest.param("cuda", "sees no CUDA device", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA: the error case cannot happen here"))])
def test_explain_on_an_unusable_device_fails_clearly(device, words, photo_and_nets, tmp_path, capsys):
    photo, model = photo_and_nets
    assert _explain(photo, model, tmp_path / "out", "--device", device) == 1
    message = capsys.readouterr().err
    assert words in message and "Traceback" not in message


@pytest.mark.slow   # a benchmark run / a ResNet through inductor: minutes on 2 cores; `make test-slow`
def test_speed_benchmark_device_and_dtype_options_on_the_cpu(tmp_path):
    """One lrpc row of ResNet-18 at batch 1 with --device cpu --dtype float32: the same code path as a
    --device cuda run, but for the synchronisation and the GPU memory counters."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--models", "resnet18",
                             "--batches", "1", "--repeats", "1", "--no-compile", "--no-compile-time", "--targets", "1", "--memory-batch",
                             "0", "--methods", "lrpc default", "--device", "cpu", "--dtype", "float32",
                             "--json", str(tmp_path / "speed.json")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["environment"]["device"] == "cpu" and saved["environment"]["dtype"] == "float32"
    row = next(r for r in saved["rows"] if r["method"] == "lrpc default")
    assert row["conservation_error"] < 1e-4 and row["images_per_s"] > 0
    assert "cpu, float32" in result.stdout
