"""The shipped ground-truth checkpoints (ResNet and ViT): safe to load, small, and accurate on the fixed test split."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.resnet import Bottleneck

from lrpc.data import GROUNDTRUTH_ARCHITECTURES, GROUNDTRUTH_CHECKPOINTS, groundtruth_model, normalize, split_scenes
from lrpc.errors import LrpcError


@pytest.mark.parametrize("arch", GROUNDTRUTH_ARCHITECTURES)
def test_checkpoint_is_a_small_plain_state_dict(arch):
    assert GROUNDTRUTH_CHECKPOINTS[arch].stat().st_size < 2_000_000
    state = torch.load(GROUNDTRUTH_CHECKPOINTS[arch], map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(value, torch.Tensor) for value in state.values())


def test_resnet_has_identity_and_projection_shortcuts_and_loads_in_eval_mode():
    model = groundtruth_model()
    assert not model.training
    blocks = [module for module in model.modules() if isinstance(module, Bottleneck)]
    assert any(block.downsample is None for block in blocks)
    assert any(block.downsample is not None for block in blocks)


def test_vit_is_torchvisions_class_with_multihead_attention():
    model = groundtruth_model("vit")
    assert isinstance(model, torchvision.models.VisionTransformer) and not model.training
    assert sum(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules()) == 4


@pytest.mark.parametrize("arch", GROUNDTRUTH_ARCHITECTURES)
def test_accuracy_on_the_fixed_test_split_is_at_least_95_percent(arch):
    scenes = split_scenes("test", 2000)
    model = groundtruth_model(arch)
    with torch.inference_mode():
        predicted = torch.cat([model(normalize(scenes.images[i:i + 500])).argmax(1) for i in range(0, 2000, 500)])
    accuracy = (predicted.numpy() == scenes.labels).mean()
    assert accuracy >= 0.95, f"{arch} test accuracy {accuracy:.4f}"


def test_unknown_architecture_is_named():
    with pytest.raises(LrpcError, match="'mlp'.*resnet"):
        groundtruth_model("mlp")
