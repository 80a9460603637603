"""The shipped ground-truth checkpoints (the shapes ResNet and ViT, the texture task's residual CNN): safe to load,
small, and accurate on the fixed test split of their task."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.resnet import Bottleneck

from lrpc.data import GROUNDTRUTH_ARCHITECTURES, GROUNDTRUTH_CHECKPOINTS, groundtruth_model, groundtruth_scenes, normalize
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


# what each checkpoint reached on 2000 test scenes, less a margin (scripts/train_groundtruth.py prints it)
MIN_ACCURACY = {"resnet": 0.95, "vit": 0.95, "texture-resnet": 0.97}


@pytest.mark.parametrize("arch", GROUNDTRUTH_ARCHITECTURES)
def test_accuracy_on_the_fixed_test_split_of_its_task(arch):
    scenes = groundtruth_scenes(arch, "test", 2000)
    model = groundtruth_model(arch)
    with torch.inference_mode():
        predicted = torch.cat([model(normalize(scenes.images[i:i + 500])).argmax(1) for i in range(0, 2000, 500)])
    accuracy = (predicted.numpy() == scenes.labels).mean()
    assert accuracy >= MIN_ACCURACY[arch], f"{arch} test accuracy {accuracy:.4f}"


def test_unknown_architecture_is_named():
    with pytest.raises(LrpcError, match="'mlp'.*resnet"):
        groundtruth_model("mlp")
