"""The shipped ground-truth checkpoint: safe to load, small, and accurate on the fixed test split."""
from __future__ import annotations

import torch
from torchvision.models.resnet import Bottleneck

from lrpc.data import GROUNDTRUTH_CHECKPOINT, groundtruth_model, normalize, split_scenes


def test_checkpoint_is_a_small_plain_state_dict():
    assert GROUNDTRUTH_CHECKPOINT.stat().st_size < 2_000_000
    state = torch.load(GROUNDTRUTH_CHECKPOINT, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(value, torch.Tensor) for value in state.values())


def test_model_has_identity_and_projection_shortcuts_and_loads_in_eval_mode():
    model = groundtruth_model()
    assert not model.training
    blocks = [module for module in model.modules() if isinstance(module, Bottleneck)]
    assert any(block.downsample is None for block in blocks)
    assert any(block.downsample is not None for block in blocks)


def test_accuracy_on_the_fixed_test_split_is_at_least_95_percent():
    scenes = split_scenes("test", 2000)
    model = groundtruth_model()
    with torch.inference_mode():
        predicted = torch.cat([model(normalize(scenes.images[i:i + 500])).argmax(1) for i in range(0, 2000, 500)])
    accuracy = (predicted.numpy() == scenes.labels).mean()
    assert accuracy >= 0.95, f"test accuracy {accuracy:.4f}"
