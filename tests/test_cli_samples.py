"""``lrpc explain`` on tensor and audio files: a WAV through a 1-D CNN (and a [T] model), a multichannel series,
a video and a volume as .npy / .pt; relevance of the sample's shape, the modality's picture, closed accounting."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from lrpc.cli import main

MODULE = "lrpc_test_cli_modality_nets"
NETS = textwrap.dedent("""
    import torch
    from torch import nn

    def waveform_cnn():          # [B, 1, T]
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(1, 4, 9, stride=4), nn.ReLU(), nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(4),
                             nn.Flatten(), nn.Linear(16, 3))

    class Flat(nn.Module):       # [B, T]: no channel axis
        def __init__(self):
            super().__init__()
            self.net = waveform_cnn()
        def forward(self, x):
            return self.net(x.unsqueeze(1))

    def waveform_flat():
        return Flat()

    def video_cnn():             # [B, 3, T, H, W]
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
                             nn.Linear(4, 3))

    def volume_cnn():            # [B, 1, D, H, W]
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Flatten(),
                             nn.Linear(64, 3))
""")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    (root / f"{MODULE}.py").write_text(NETS)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop(MODULE, None)


def _check(out, name, shape, picture_suffixes):
    summary = json.loads((out / f"{name}.json").read_text())
    relevance = np.load(out / f"{name}_relevance.npy")
    assert relevance.shape == shape
    closed = float(relevance.sum()) + sum(summary["absorbed"].values())
    assert abs(closed - summary["start_relevance"]) < 1e-4 * abs(summary["start_relevance"])
    for suffix in picture_suffixes:
        assert suffix in "".join(summary["files"]["pictures"])
        with Image.open(out / f"{name}{suffix}") as picture:
            assert picture.size[0] > 100
    return summary


@pytest.mark.parametrize("factory", ["waveform_cnn", "waveform_flat"])
def test_wav_file_is_explained_as_a_waveform(nets, tmp_path, factory):
    soundfile = pytest.importorskip("soundfile")
    generator = np.random.default_rng(0)
    soundfile.write(tmp_path / "clip.wav", generator.uniform(-0.5, 0.5, 400).astype(np.float32), 8000)
    assert main(["explain", str(tmp_path / "clip.wav"), "--model", f"{MODULE}:{factory}", "-o",
                 str(tmp_path / "out"), "-q"]) == 0
    shape = (1, 400)   # the file's [C, T]; the [T] model got it squeezed
    summary = _check(tmp_path / "out", "clip", shape, ["_waveform.png"])
    assert summary["sample_rate"] == 8000 and summary["modality"] == "audio"


def test_npy_and_pt_files_get_their_modalitys_picture(nets, tmp_path):
    generator = torch.Generator().manual_seed(0)
    np.save(tmp_path / "clip.npy", torch.randn(3, 4, 8, 8, generator=generator).numpy())
    torch.save(torch.randn(1, 4, 4, 8, generator=generator), tmp_path / "scan.pt")
    assert main(["explain", str(tmp_path / "clip.npy"), "--model", f"{MODULE}:video_cnn", "-o",
                 str(tmp_path / "video"), "-q"]) == 0
    _check(tmp_path / "video", "clip", (3, 4, 8, 8), ["_frames.png", ".gif"])
    assert main(["explain", str(tmp_path / "scan.pt"), "--model", f"{MODULE}:volume_cnn", "-o",
                 str(tmp_path / "volume"), "-q"]) == 0
    _check(tmp_path / "volume", "scan", (1, 4, 4, 8), ["_slices.png"])


def test_files_of_another_shape_or_mixed_with_images_are_refused(nets, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 400), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((1, 300), dtype=np.float32))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    args = ["--model", f"{MODULE}:waveform_cnn", "-o", str(tmp_path / "out"), "-q"]
    assert main(["explain", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), *args]) == 1
    assert main(["explain", str(tmp_path / "a.npy"), str(tmp_path / "c.png"), *args]) == 1
