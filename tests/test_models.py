"""lrpc.models are torchvision-compatible: torchvision's parameter counts and key names, safe checkpoint loading."""
import pytest
import torch

import lrpc
from lrpc import LrpcError
from lrpc.models import load_weights

# parameter counts published in torchvision's model documentation (ImageNet heads)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_parameter_counts_match_torchvision(name):
    with torch.device("meta"):
        model = lrpc.models.ARCHITECTURES[name]()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_torchvision_key_names():
    with torch.device("meta"):
        resnet, vgg = lrpc.models.resnet50(), lrpc.models.vgg16_bn()
    keys = set(resnet.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
            "layer4.2.bn3.num_batches_tracked", "fc.weight", "fc.bias"} <= keys
    assert len(keys) == 320
    keys = set(vgg.state_dict())
    assert {"features.0.weight", "features.1.running_mean", "classifier.0.weight", "classifier.6.bias"} <= keys


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = lrpc.models.resnet18(num_classes=7).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file(source.state_dict(), str(path))
    target = load_weights(lrpc.models.resnet18(num_classes=7), path).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(source(x), target(x))


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(lrpc.models.resnet18(num_classes=7).state_dict(), path)
    with pytest.raises(LrpcError, match=r"shape mismatches .*fc.weight: checkpoint \(7, 512\) vs model \(10, 512\)"):
        load_weights(lrpc.models.resnet18(num_classes=10), path)
    with pytest.raises(LrpcError, match=r"missing keys \['layer1.0.bn3.bias'"):
        load_weights(lrpc.models.resnet50(num_classes=7), path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(lrpc.models.resnet18(num_classes=2), path)  # a whole module, not a state_dict
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_weights(lrpc.models.resnet18(num_classes=2), path)
    with pytest.raises(LrpcError, match="not found"):
        load_weights(lrpc.models.resnet18(), tmp_path / "missing.pth")
