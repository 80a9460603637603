"""Input modalities: which axis of an input holds its channels, and the view of the relevance people read.

The relevance always has the input's shape. ``exp.heatmap()`` sums it over the input's channel axis, where the
input has one to sum over, and keeps every other axis:

| input | heatmap |
|---|---|
| waveform ``[B, T]`` or ``[B, 1, T]`` | ``[B, T]`` |
| multichannel signal / spectrogram ``[B, C, T]`` (``C > 1``; EEG, ECG, ``[B, F, T]``) | ``[B, C, T]`` unchanged: one row per channel or frequency |
| image ``[B, C, H, W]``; spectrogram image ``[B, 1, F, T]`` | ``[B, H, W]`` / ``[B, F, T]`` |
| video ``[B, C, T, H, W]`` or ``[B, T, C, H, W]``; volume ``[B, C, D, H, W]`` | ``[B, T, H, W]`` / ``[B, D, H, W]`` |

A multichannel signal keeps its channels because a channel sum of EEG or ECG leads would cancel what each lead
shows; ``signal_sum`` gives the summed ``[B, T]`` trace. Which axis holds the channels of a 4-D or 5-D input is
read from the model: the input axis whose size is the first convolution's input channels (Hugging Face video
models take ``[B, T, C, H, W]``, torchvision's ``[B, C, T, H, W]``); ``explainer.channel_axis = k`` overrides it.
"""
from __future__ import annotations

import torch

from .op_kinds import kind_of
from .ops import packet

aten = torch.ops.aten
MODALITIES = ("audio", "spectrogram", "timeseries", "image", "video", "volume")
_CONVS = (aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution)


def channel_axis(input_shape: tuple[int, ...], plans: dict) -> int:
    """The input axis holding channels: the one whose size the first convolution reads as channels when exactly
    one axis has that size, else 1 (the PyTorch convention [B, C, ...])."""
    for plan in plans.values():
        if kind_of(plan).applies_rule and packet(plan.node) in _CONVS and plan.info.weight is not None:
            channels = plan.info.weight.shape[1] * plan.info.args[3]   # in-channels per group x groups
            axes = [k for k in range(1, len(input_shape)) if input_shape[k] == channels]
            return axes[0] if len(axes) == 1 else 1
    return 1


def heatmap(relevance: torch.Tensor, channel_axis: int = 1) -> torch.Tensor:
    """The view of ``relevance`` [B, ...] people read (see the module's table)."""
    if relevance.dim() <= 2:
        return relevance
    if relevance.dim() == 3:
        return relevance.squeeze(1) if relevance.shape[1] == 1 else relevance
    return relevance.sum(channel_axis)


def signal_sum(relevance: torch.Tensor) -> torch.Tensor:
    """A signal's relevance summed over its channels [B, C, T] -> [B, T] (a 2-D input passes unchanged)."""
    return relevance.sum(1) if relevance.dim() == 3 else relevance


def guess(sample_shape: tuple[int, ...], channel_axis: int = 0) -> str:
    """The modality a picture of one sample's heatmap shows, by the sample's shape (no batch dimension):
    [T] audio; [C, T] a time series (one row per channel); [C, H, W] an image; [C, T, H, W] a video with 3
    channels, else a volume. ``lrpc explain --modality`` and the picture functions take it explicitly."""
    rank = len(sample_shape)
    if rank == 1 or (rank == 2 and sample_shape[0] == 1):
        return "audio"
    if rank == 2:
        return "timeseries"
    if rank == 3:
        return "image"
    return "video" if sample_shape[channel_axis] == 3 else "volume"
