"""The small classifiers trained on lrpc's ground-truth tasks, shipped with the package: a ResNet and a ViT on the
procedural shapes task (``lrpc.data.procedural``), and a residual CNN on the texture task (``lrpc.data.textures``).

``scripts/train_groundtruth.py`` produced ``lrpc/assets/groundtruth_<arch>.pth``; nothing here trains.
Both models take 64x64 scenes from :func:`lrpc.data.render_scenes` normalised with the ImageNet mean/std
(:func:`lrpc.data.normalize`): black (0 in [0,1] RGB) maps to (0 - mean) / std, exactly as in the paper's
ImageNet protocol, so the same canvases and first-layer bounds apply.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import LrpcError
from ..models import load_weights, torchvision_models
from .procedural import CLASSES, SPLIT_SEEDS, ShapeScenes, render_scenes
from .textures import TEXTURE_CLASSES, TEXTURE_SPLIT_SEEDS, render_texture_scenes

__all__ = ["GROUNDTRUTH_ARCHITECTURES", "GROUNDTRUTH_CHECKPOINT", "GROUNDTRUTH_CHECKPOINTS", "GROUNDTRUTH_IMAGE_SIZE",
           "GROUNDTRUTH_TASKS", "groundtruth_architecture", "groundtruth_classes", "groundtruth_model",
           "groundtruth_scenes"]

GROUNDTRUTH_IMAGE_SIZE = 64
GROUNDTRUTH_ARCHITECTURES = ("resnet", "vit", "texture-resnet")   # image classifiers; groundtruth_model("text") is the text one
# The task each shipped model was trained on: its renderer, its split seeds and its class names.
GROUNDTRUTH_TASKS = {"resnet": "shapes", "vit": "shapes", "texture-resnet": "textures"}
_RENDERERS = {"shapes": (render_scenes, SPLIT_SEEDS, CLASSES),
              "textures": (render_texture_scenes, TEXTURE_SPLIT_SEEDS, TEXTURE_CLASSES)}
_ASSETS = Path(__file__).resolve().parent.parent / "assets"
GROUNDTRUTH_CHECKPOINTS = {arch: _ASSETS / f"groundtruth_{arch}.pth" for arch in GROUNDTRUTH_ARCHITECTURES}
# the text model's checkpoint is Hugging Face's own format (its keys are the LlamaForCausalLM's)
GROUNDTRUTH_CHECKPOINTS["text"] = _ASSETS / "groundtruth_text.safetensors"
GROUNDTRUTH_CHECKPOINT = GROUNDTRUTH_CHECKPOINTS["resnet"]


def groundtruth_architecture(arch: str = "resnet") -> nn.Module:
    """Untrained network of a shipped checkpoint (torchvision for the images, transformers for the text).

    - ``"resnet"``: torchvision's ResNet with Bottleneck blocks at 1/8 of ResNet-50's width, two blocks per stage.
      The first block of every stage has a projection shortcut (conv1x1 + BN), the second an identity shortcut,
      so both kinds of residual add are exercised.
    - ``"texture-resnet"`` (the texture task): torchvision's ResNet with one BasicBlock per stage at 1/4 width
      (16, 32, 64, 128 channels) and a lighter stem, a 5x5 stride-2 convolution and no max pool, so that its last
      stage is 4x4 at 64x64 input (the shapes ResNet's is 2x2).
    - ``"vit"``: torchvision's ``VisionTransformer`` (the class LXT's ViT map targets): 64 tokens of 8x8 pixels and
      a cls token, 4 pre-norm blocks of width 64 with 4 heads and an MLP of width 128. The tokens come from
      torchvision's convolutional stem (three 3x3 stride-2 conv-BN-ReLU, Xiao et al. 2021) rather than one 8x8
      patch projection: trained from scratch on this task, the plain patch projection stayed at chance for
      thousands of steps, the stem starts learning at once.
    - ``"text"``: a Hugging Face ``LlamaForCausalLM`` (needs transformers) over the 31-word vocabulary of
      :mod:`lrpc.data.text_task`: 2 layers of width 32, 2 query heads sharing 1 key/value head (grouped-query
      attention), a SwiGLU MLP of width 64, rotary positions, untied output head, the default (SDPA) attention.
    """
    if arch == "text":
        return _text_architecture()
    models = torchvision_models()  # an LrpcError naming the install if torchvision is missing
    if arch == "resnet":
        from ..models.narrow_resnet import NarrowResNet

        return NarrowResNet(models.resnet.Bottleneck, [2, 2, 2, 2], num_classes=len(CLASSES), width=8)
    if arch == "vit":
        stem = [models.vision_transformer.ConvStemConfig(channels, kernel_size=3, stride=2) for channels in (16, 32, 64)]
        return models.VisionTransformer(image_size=GROUNDTRUTH_IMAGE_SIZE, patch_size=8, num_layers=4, num_heads=4,
                                        hidden_dim=64, mlp_dim=128, num_classes=len(CLASSES), conv_stem_configs=stem)
    if arch == "texture-resnet":
        from ..models.narrow_resnet import NarrowResNet

        model = NarrowResNet(models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=len(TEXTURE_CLASSES), width=16)
        model.conv1 = nn.Conv2d(3, 16, kernel_size=5, stride=2, padding=2, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        return model
    raise LrpcError(f"unknown ground-truth architecture {arch!r}; choose one of {(*GROUNDTRUTH_ARCHITECTURES, 'text')}")


def _text_architecture() -> nn.Module:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise LrpcError("the text ground-truth model is a Hugging Face Llama: pip install transformers") from exc
    from .text_task import VOCABULARY
    config = LlamaConfig(vocab_size=len(VOCABULARY), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForCausalLM(config)


def groundtruth_scenes(arch: str, split: str, n: int, epoch: int = 0) -> ShapeScenes:
    """``n`` scenes of the task ``arch`` was trained on: the fixed ``"val"`` / ``"test"`` split, or the fresh
    ``"train"`` scenes of one ``epoch``."""
    if arch not in GROUNDTRUTH_TASKS:
        raise LrpcError(f"unknown ground-truth architecture {arch!r}; choose one of {GROUNDTRUTH_ARCHITECTURES}")
    render, seeds, _ = _RENDERERS[GROUNDTRUTH_TASKS[arch]]
    if split not in seeds:
        raise LrpcError(f"split must be one of {tuple(seeds)}, got {split!r}")
    return render(n, seeds[split] + (epoch if split == "train" else 0), GROUNDTRUTH_IMAGE_SIZE)


def groundtruth_classes(arch: str) -> tuple[str, ...]:
    """Class names of the task ``arch`` was trained on."""
    return _RENDERERS[GROUNDTRUTH_TASKS[arch]][2]


def groundtruth_model(arch: str = "resnet") -> nn.Module:
    """A trained model of a ground-truth task in eval mode.

    ``"resnet"`` / ``"vit"``: the shapes classifiers, input ImageNet-normalised [B, 3, 64, 64].
    ``"text"``: the causal LM of :mod:`lrpc.data.text_task`, input token ids [B, T]; its next-token logit after
    the final ``?`` answers ``yes`` or ``no``.
    """
    model = groundtruth_architecture(arch)
    return load_weights(model, GROUNDTRUTH_CHECKPOINTS[arch]).eval()
