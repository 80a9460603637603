"""Models from torchvision, timm and Hugging Face folders by spec, with their own preprocessing, through
``lrpc.commands.load_model`` and ``lrpc explain`` end to end."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lrpc.cli import main
from lrpc.commands import load_model
from lrpc.errors import LrpcError


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A small ViT saved with save_pretrained, with an image processor config of its own (size 32, mean 0.5)."""
    import transformers
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "car"}, label2id={"cat": 0, "dog": 1, "car": 2})
    saved = transformers.ViTForImageClassification(config).eval()
    saved.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(folder)
    return folder, saved


def test_torchvision_spec_builds_torchvisions_model_with_imagenet_preprocessing():
    import torchvision
    loaded = load_model("torchvision:resnet18")
    assert type(loaded.model) is torchvision.models.ResNet and not loaded.model.training
    assert loaded.input.size == 224 and loaded.input.mean == pytest.approx((0.485, 0.456, 0.406))


def test_timm_spec_reads_the_models_pretrained_cfg():
    loaded = load_model("timm:inception_v3")
    cfg = loaded.model.pretrained_cfg
    assert loaded.input.size == cfg["input_size"][-1] == 299
    assert loaded.input.mean == pytest.approx(cfg["mean"]) and loaded.input.resize == int(299 / cfg["crop_pct"])


def test_hf_spec_loads_the_folder_offline_with_its_processor_and_labels(hf_folder):
    hf_folder, saved = hf_folder
    loaded = load_model(f"hf:{hf_folder}")
    assert loaded.input.size == 32 and loaded.input.mean == (0.5, 0.5, 0.5)
    assert list(loaded.input.class_names) == ["cat", "dog", "car"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():   # the folder's weights, not random ones
        torch.testing.assert_close(loaded.model(x).logits, saved(x).logits)


def test_unknown_specs_fail_clearly(tmp_path):
    with pytest.raises(LrpcError, match="torchvision has no model 'resnet7'"):
        load_model("torchvision:resnet7")
    with pytest.raises(LrpcError, match="timm has no model 'nonet'"):
        load_model("timm:nonet")
    with pytest.raises(LrpcError, match="not a Hugging Face save_pretrained folder"):
        load_model(f"hf:{tmp_path}")


def test_weights_from_a_timm_training_checkpoint(tmp_path):
    loaded = load_model("timm:resnet18")
    torch.manual_seed(3)
    trained = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in loaded.model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in trained.items()}}, tmp_path / "ckpt.pth")
    reloaded = load_model("timm:resnet18", tmp_path / "ckpt.pth")
    assert all(torch.equal(reloaded.model.state_dict()[k], v) for k, v in trained.items())


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:mobilenetv3_small_050", "hf"])
def test_cli_explains_models_from_each_library(spec, photo, hf_folder, tmp_path):
    spec = f"hf:{hf_folder[0]}" if spec == "hf" else spec
    size = [] if spec.startswith("hf") else ["--input-size", "64"]
    assert main(["explain", str(photo), "--model", spec, "--rules", "default", "-q", "-o", str(tmp_path),
                 *size]) == 0
    summary = json.loads((tmp_path / "photo.json").read_text())
    closed = summary["input_relevance_sum"] + sum(summary["absorbed"].values())
    assert closed == pytest.approx(summary["start_relevance"], rel=1e-4, abs=1e-6), summary
    if spec.startswith("hf"):   # the ViT's cls token absorbs its share; a CNN under default conserves
        assert summary["predicted_name"] in ("cat", "dog", "car") and summary["absorbed"]
    else:
        assert summary["conservation_error"] < 1e-4 and not summary["absorbed"]
