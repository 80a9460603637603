"""lrpc.models builds torchvision's own models by name and loads checkpoints safely; the ground-truth model's
narrow ResNet is torchvision's ResNet with nothing changed but its widths."""
import subprocess
import sys

import pytest
import torch
import torchvision

import lrpc
from lrpc import LrpcError
from lrpc.models import load_weights
from lrpc.models.narrow_resnet import NarrowResNet

# parameter counts published in torchvision's model documentation (ImageNet heads)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_each_name_builds_that_torchvision_model(name):
    with torch.device("meta"):
        model = lrpc.models.ARCHITECTURES[name]()
        narrow_head = lrpc.models.ARCHITECTURES[name](num_classes=7)
    assert isinstance(model, (torchvision.models.ResNet, torchvision.models.VGG))
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    assert list(narrow_head.modules())[-1].out_features == 7


def test_narrow_resnet_at_full_width_is_torchvisions_resnet50():
    with torch.device("meta"):
        narrow = NarrowResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], num_classes=10, width=64)
        reference = torchvision.models.resnet50(num_classes=10)
    assert {k: v.shape for k, v in narrow.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}


def test_missing_torchvision_is_an_lrpc_error_and_import_lrpc_does_not_need_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(LrpcError, match=r"torchvision cannot be imported .*pip install 'lrpc\[zoo\]'"):
        lrpc.models.resnet18()
    code = ("import sys; sys.modules['torchvision'] = None; import lrpc, lrpc.models, lrpc.data, lrpc.cli; "
            "print(sorted(lrpc.models.ARCHITECTURES))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "resnet50" in done.stdout, done.stderr


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
