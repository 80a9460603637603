"""One model input per file, for inputs that are not photos: tensors (``.npy``, ``.pt``) and audio files.

A file holds one sample without the batch dimension: a waveform [T] or [C, T], a spectrogram [F, T], a
multichannel series [C, T], a video [C, T, H, W] (or [T, C, H, W]), a volume [C, D, H, W]. Audio files (WAV,
FLAC, OGG) are read with ``soundfile`` (``pip install 'lrpc[audio]'``) as float32 [C, T], C = 1 for mono; their
sample rate comes back too. Nothing is resampled or normalised: the model sees the file's values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LrpcError

TENSOR_EXTENSIONS = (".npy", ".pt")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SAMPLE_EXTENSIONS = TENSOR_EXTENSIONS + AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    path: Path
    values: torch.Tensor            # one sample, no batch dimension
    sample_rate: int | None = None  # audio files only


def is_sample_file(path: Path) -> bool:
    return path.suffix.lower() in SAMPLE_EXTENSIONS


def load_sample(path: str | Path) -> Sample:
    """The sample in ``path``, as a float tensor; a message naming the file for anything unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            values, rate = torch.from_numpy(np.load(path, allow_pickle=False)), None
        elif suffix == ".pt":
            values, rate = torch.load(path, map_location="cpu", weights_only=True), None
            if not isinstance(values, torch.Tensor):
                raise LrpcError(f"{path} holds a {type(values).__name__}, not one tensor")
        elif suffix in AUDIO_EXTENSIONS:
            values, rate = _read_audio(path)
        else:
            raise LrpcError(f"{path}: not a sample file ({', '.join(SAMPLE_EXTENSIONS)})")
    except LrpcError:
        raise
    except Exception as exc:
        raise LrpcError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if values.dim() == 0 or values.numel() == 0:
        raise LrpcError(f"{path} holds an empty or scalar tensor {tuple(values.shape)}")
    if not values.is_floating_point():
        values = values.float()
    if not bool(torch.isfinite(values).all()):
        raise LrpcError(f"{path} contains NaN or Inf values")
    return Sample(path, values, rate)


def _read_audio(path: Path) -> tuple[torch.Tensor, int]:
    try:
        import soundfile
    except ImportError as exc:
        raise LrpcError(f"reading {path} needs soundfile: pip install 'lrpc[audio]'") from exc
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)   # [T, C]
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)
