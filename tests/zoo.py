"""Small, randomly initialised third-party model definitions for the zoo tests and benchmarks/coverage.py:
Hugging Face ``transformers`` image classifiers (``from_config``) and timm architectures, each with the input
size it is tested at. Nothing is downloaded."""
from __future__ import annotations

import torch

NUM_LABELS = 5


def _hf(config_name: str, size: int, architecture: str | None = None, attention: str | None = None, **config):
    def build():
        import transformers
        torch.manual_seed(0)
        cfg = getattr(transformers, config_name)(num_labels=NUM_LABELS, **config)
        options = {"attn_implementation": attention} if attention else {}
        if architecture:   # the auto class lists two heads for some configs and picks none
            model = getattr(transformers, architecture)._from_config(cfg, **options)
        else:
            model = transformers.AutoModelForImageClassification.from_config(cfg, **options)
        return model.eval(), torch.randn(1, 3, size, size)
    return build


_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8)
HF_MODELS = {
    "vit": _hf("ViTConfig", 32, **_VIT),
    "vit_eager_attention": _hf("ViTConfig", 32, attention="eager", **_VIT),
    "deit": _hf("DeiTConfig", 32, architecture="DeiTForImageClassificationWithTeacher", **_VIT),
    "beit": _hf("BeitConfig", 32, **_VIT, use_relative_position_bias=True, layer_scale_init_value=0.1),
    "dinov2": _hf("Dinov2Config", 32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                  image_size=32, patch_size=8),
    "swin": _hf("SwinConfig", 32, image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                window_size=4),
    "convnext": _hf("ConvNextConfig", 32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    "resnet": _hf("ResNetConfig", 32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    "regnet": _hf("RegNetConfig", 32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8),
    "mobilenet_v2": _hf("MobileNetV2Config", 32, depth_multiplier=0.35),
    "efficientnet": _hf("EfficientNetConfig", 32, width_coefficient=0.25, depth_coefficient=0.1, image_size=32,
                        hidden_dim=320),
    "mobilevit": _hf("MobileViTConfig", 32, image_size=32, hidden_sizes=[16, 24, 32],
                     neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_attention_heads=2),
}

# one or two architectures per timm family (random weights, the model's own input size)
TIMM_MODELS = [
    "densenet121", "mobilenetv2_100", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "convnext_atto",
    "ghostnet_100", "inception_v3", "xception41", "repvgg_a0", "rexnet_100", "cspresnet50", "hrnet_w18_small",
    "nfnet_l0", "edgenext_xx_small", "fastvit_t8", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224", "mobilevit_xxs", "levit_128s", "poolformer_s12", "mixer_s16_224",
    "resmlp_12_224", "coat_lite_tiny", "efficientformer_l1", "pit_ti_224", "convit_tiny", "cait_xxs24_224",
    "beit_base_patch16_224", "botnet26t_256", "resnet18", "vgg11", "dla34", "res2net50_26w_4s", "selecsls42b",
    "dpn68", "tresnet_m", "eca_resnet33ts", "regnety_002", "mnasnet_100", "tinynet_e", "lcnet_050",
    "maxvit_tiny_rw_224", "twins_svt_small", "crossvit_tiny_240", "volo_d1_224", "gcvit_xxtiny",
]


def timm_model(name: str):
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    return model, torch.randn(1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))
