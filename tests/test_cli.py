"""`lrpc explain` end to end on generated images with tiny models loaded as module:factory, and its errors."""
import json
import pkgutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import lrpc.commands
from lrpc.cli import build_parser, main
from lrpc.data import IMAGENET_MEAN, IMAGENET_STD

MODULE = "lrpc_test_cli_nets"
CLASSES = ("cat", "dog", "car")
NETS = textwrap.dedent(f"""
    import torch
    from torch import nn
    from lrpc.commands import model_input

    def linear():
        # one linear layer on the flattened 8x8 image: z+ relevance is a closed formula
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))

    @model_input(size=8, class_names={CLASSES!r})
    def declared():
        return linear()

    def conv():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3))

    def not_a_module():
        return "a string"

    def broken():
        raise RuntimeError("cannot build")
""")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    (root / f"{MODULE}.py").write_text(NETS)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three random 8x8 RGB images: two in a folder (with a non-image file), one on its own."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "folder").mkdir()
    for name in ("folder/a.png", "folder/b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name)
    (root / "folder" / "notes.txt").write_text("not an image")
    return root


def explain(*argv):
    return main(["explain", *map(str, argv)])


def zplus_relevance(pixels: np.ndarray, model: torch.nn.Module, mean, std):
    """Hand formula for one bias-ignoring z+ linear layer: R_i = (x_i w_ti)+ / sum_k (x_k w_tk)+ * softmax_t."""
    x = ((pixels / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1).reshape(-1)
    weight = model[1].weight.detach().double().numpy()
    logits = weight @ x + model[1].bias.detach().double().numpy()
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    target = int(np.argmax(logits))
    contributions = np.clip(x * weight[target], 0, None)
    return target, probabilities, (contributions / contributions.sum() * probabilities[target]).reshape(3, 8, 8)


def test_explain_writes_maps_relevance_and_summaries(nets, photos, tmp_path):
    out = tmp_path / "out"
    assert explain(photos / "folder", photos / "c.png", "--model", f"{MODULE}:linear", "--input-size", 8,
                   "--resize", 8, "--batch-size", 2, "-o", out) == 0
    model = __import__(MODULE).linear()
    for name, path in (("a", photos / "folder/a.png"), ("b", photos / "folder/b.png"), ("c", photos / "c.png")):
        pixels = np.asarray(Image.open(path), dtype=np.float64)
        target, probabilities, expected = zplus_relevance(pixels, model, IMAGENET_MEAN, IMAGENET_STD)
        relevance = np.load(out / f"{name}_relevance.npy")
        assert relevance.shape == (3, 8, 8) and relevance.dtype == np.float32
        np.testing.assert_allclose(relevance, expected, rtol=1e-4, atol=1e-7)
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["image"] == str(path)
        assert summary["predicted_class"] == summary["target_class"] == target
        assert summary["predicted_name"] is None  # a 3-class model that declares no names
        assert summary["probability"] == pytest.approx(probabilities[target], rel=1e-5)
        assert summary["start_relevance"] == pytest.approx(probabilities[target], rel=1e-5)
        assert summary["input_relevance_sum"] == pytest.approx(expected.sum(), rel=1e-4)
        assert summary["conservation_error"] < 1e-5
        for png in (out / f"{name}_overlay.png", out / f"{name}_heatmap.png"):
            with Image.open(png) as image:
                assert image.size == (8, 8)
    assert not (out / "notes.json").exists()


def test_declared_input_class_names_target_and_quantize(nets, photos, tmp_path):
    out = tmp_path / "out"
    assert explain(photos / "c.png", "--model", f"{MODULE}:declared", "--resize", 8, "--target", "DOG",
                   "--normalize", "none", "--quantize", 3, "-q", "-o", out) == 0
    summary = json.loads((out / "c.json").read_text())
    assert summary["input_size"] == 8 and summary["normalization"] == {"mean": [0, 0, 0], "std": [1, 1, 1]}
    assert summary["target_class"] == 1 and summary["target_name"] == "dog"
    assert summary["predicted_name"] == CLASSES[summary["predicted_class"]]
    with Image.open(out / "c_heatmap.png") as heatmap:
        assert len(heatmap.getcolors()) <= 3  # Heat Quantization with Q = 3 levels


def test_model_from_a_file_path_and_repeated_names(nets, photos, tmp_path):
    out = tmp_path / "out"
    assert explain(photos / "folder/a.png", photos / "folder/a.png", "--model", f"{nets / MODULE}.py:conv",
                   "--input-size", 16, "-q", "-o", out) == 0
    assert (out / "a.json").exists() and (out / "a-2.json").exists()
    with Image.open(out / "a-2_overlay.png") as image:
        assert image.size == (16, 16)


def test_python_dash_m_lrpc(nets, photos, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "lrpc", "explain", str(photos / "c.png"), "--model",
                             f"{MODULE}:conv", "--input-size", "8", "-o", str(out)],
                            cwd=nets, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "explaining" in result.stderr  # the progress bar over batches
    assert (out / "c_overlay.png").exists()


def test_every_command_module_with_register_is_a_subcommand():
    registering = [m.name for m in pkgutil.iter_modules(lrpc.commands.__path__)
                   if "def register(" in open(f"{lrpc.commands.__path__[0]}/{m.name}.py").read()]
    action = next(a for a in build_parser()._actions if a.dest == "command")
    assert "explain" in registering and len(action.choices) == len(registering)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "explain" in capsys.readouterr().err


def _bad_weights(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).state_dict(), path)
    return path


def _renamed_weights(tmp_path):
    path = tmp_path / "renamed.pth"
    state = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).state_dict()
    state["1.scale"] = state.pop("1.bias")
    torch.save(state, path)
    return path


def _garbage_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    return tmp_path / "broken.png"


def _empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _file(tmp_path):
    (tmp_path / "taken").write_text("")
    return tmp_path / "taken"


OK_MODEL = ["--model", f"{MODULE}:linear", "--input-size", "8"]
# (images, extra arguments, expected exit code, words the message must contain); callables get tmp_path
BAD_INPUTS = {
    "unreadable image": (_garbage_image, OK_MODEL, 1, ["cannot read image", "broken.png"]),
    "missing image": (lambda t: t / "nowhere.png", OK_MODEL, 1, ["nowhere.png", "does not exist"]),
    "folder without images": (_empty_dir, OK_MODEL, 1, ["holds no images"]),
    "unknown model": (None, ["--model", "resnet9000"], 1, ["unknown model 'resnet9000'", "module:factory"]),
    "unimportable module": (None, ["--model", "no_such_module_xyz:build"], 1,
                            ["cannot import 'no_such_module_xyz'", "ModuleNotFoundError"]),
    "missing factory": (None, ["--model", f"{MODULE}:nothing"], 1, ["has no callable 'nothing'"]),
    "factory returns no module": (None, ["--model", f"{MODULE}:not_a_module"], 1, ["not a torch.nn.Module"]),
    "factory raises": (None, ["--model", f"{MODULE}:broken"], 1, ["RuntimeError", "cannot build"]),
    "weights of another shape": (None, OK_MODEL + ["--weights", _bad_weights], 1,
                                 ["do not match", "1.weight", "(5, 192)", "(3, 192)"]),
    "weights with other keys": (None, OK_MODEL + ["--weights", _renamed_weights], 1,
                                ["missing keys ['1.bias']", "unexpected keys ['1.scale']"]),
    "missing weights": (None, OK_MODEL + ["--weights", lambda t: t / "none.pth"], 1, ["weights file not found"]),
    "output is a file": (None, OK_MODEL + ["-o", _file], 1, ["output directory", "a file of that name exists"]),
    "output under a file": (None, OK_MODEL + ["-o", lambda t: _file(t) / "sub"], 1,
                            ["output directory", "not writable"]),
    "target out of range": (None, OK_MODEL + ["--target", "7"], 1, ["out of range for 3 classes"]),
    "unknown target name": (None, OK_MODEL + ["--target", "zebra"], 1, ["'zebra' is neither"]),
    "zero batch size": (None, OK_MODEL + ["--batch-size", "0"], 1, ["--batch-size must be a positive"]),
    "one quantization level": (None, OK_MODEL + ["--quantize", "1"], 1, ["at least 2 levels"]),
    "unknown preset": (None, OK_MODEL + ["--rules", "magic"], 2, ["invalid choice: 'magic'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_with_a_clear_message(case, nets, photos, tmp_path, capsys):
    image, extra, code, words = BAD_INPUTS[case]
    image = photos / "c.png" if image is None else image(tmp_path)
    extra = [str(a(tmp_path)) if callable(a) else a for a in extra]
    if "-o" not in extra:
        extra += ["-o", str(tmp_path / "out")]
    if code == 2:  # argparse usage errors exit through SystemExit
        with pytest.raises(SystemExit) as exit_info:
            explain(image, *extra)
        assert exit_info.value.code == 2
    else:
        assert explain(image, *extra, "-q") == code
    message = capsys.readouterr().err
    for word in words:
        assert word in message, message
    assert "Traceback" not in message


def test_the_shipped_vit_is_a_named_model(tmp_path):
    """``--model groundtruth-vit`` declares its input and class names; its prediction and start (the target
    logit under attnlrp) equal the model's on the same pixels."""
    from lrpc.data import CLASSES as SHAPES, groundtruth_model, normalize, split_scenes
    scenes = split_scenes("test", 2)
    pixels = np.round(scenes.images.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"scene{k}.png")
    out = tmp_path / "out"
    assert explain(tmp_path / "scene0.png", tmp_path / "scene1.png", "--model", "groundtruth-vit", "--rules",
                   "attnlrp", "--resize", 64, "-q", "-o", out) == 0
    with torch.no_grad():
        logits = groundtruth_model("vit")(normalize(pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255))
    for k in range(2):
        summary = json.loads((out / f"scene{k}.json").read_text())
        assert summary["predicted_class"] == int(logits[k].argmax())
        assert summary["predicted_name"] == SHAPES[summary["predicted_class"]]
        assert summary["start_relevance"] == pytest.approx(float(logits[k].max()), rel=1e-4)
