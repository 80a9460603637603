"""The same tiny ViT in three attention spellings: torchvision (nn.MultiheadAttention), timm (qkv linear +
F.scaled_dot_product_attention or its explicit softmax) and Hugging Face eager attention, weights copied across."""
from __future__ import annotations

import pytest
import torch
import torchvision

DIM, HEADS, LAYERS = 32, 2, 2


def torchvision_vit(seed: int = 0, constants: bool = True) -> torch.nn.Module:
    """A tiny torchvision ViT in float64 with every parameter random (its head, cls token, biases and LayerNorm
    offsets are zero at init); ``constants=False`` zeroes biases, β, cls token and positional embedding."""
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=LAYERS, num_heads=HEADS,
                                                 hidden_dim=DIM, mlp_dim=2 * DIM, num_classes=5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            constant = p.dim() == 1 and not name.endswith(("ln_1.weight", "ln_2.weight", "ln.weight"))
            constant = constant or "token" in name or "pos_embedding" in name
            if constant and not constants:
                p.zero_()
            elif constant or "head" in name:
                p.normal_(0, 0.5 if constant else 0.3)
    return model.double().eval()


def timm_vit(source: torch.nn.Module, fused: bool = True) -> torch.nn.Module:
    """timm's ViT (qkv linear + F.scaled_dot_product_attention, or with ``fused=False`` its explicit
    q·kᵀ → softmax → ·v) holding ``source``'s weights."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=DIM,
                              depth=LAYERS, num_heads=HEADS, mlp_ratio=2, num_classes=5).double().eval()
    enc = source.encoder
    pairs = [(model.patch_embed.proj, source.conv_proj), (model.norm, enc.ln), (model.head, source.heads.head)]
    for block, layer in zip(model.blocks, enc.layers):
        pairs += [(block.norm1, layer.ln_1), (block.norm2, layer.ln_2), (block.attn.proj, layer.self_attention.out_proj),
                  (block.mlp.fc1, layer.mlp[0]), (block.mlp.fc2, layer.mlp[3])]
        block.attn.fused_attn = fused
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        for block, layer in zip(model.blocks, enc.layers):
            block.attn.qkv.weight.copy_(layer.self_attention.in_proj_weight)
            block.attn.qkv.bias.copy_(layer.self_attention.in_proj_bias)
        model.cls_token.copy_(source.class_token)
        model.pos_embed.copy_(enc.pos_embedding)
    return model


def hf_eager_vit(source: torch.nn.Module) -> torch.nn.Module:
    """Hugging Face's ViT with eager attention (separate q, k, v linears, matmul → softmax → matmul)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    intermediate_size=2 * DIM, image_size=32, patch_size=8, num_labels=5,
                                    layer_norm_eps=1e-6, hidden_act="gelu")
    model = transformers.ViTForImageClassification._from_config(config, attn_implementation="eager").double().eval()
    enc = source.encoder
    weights = {"vit.embeddings.cls_token": source.class_token, "vit.embeddings.position_embeddings": enc.pos_embedding,
               "vit.embeddings.patch_embeddings.projection.weight": source.conv_proj.weight,
               "vit.embeddings.patch_embeddings.projection.bias": source.conv_proj.bias,
               "vit.layernorm.weight": enc.ln.weight, "vit.layernorm.bias": enc.ln.bias,
               "classifier.weight": source.heads.head.weight, "classifier.bias": source.heads.head.bias}
    for i, layer in enumerate(enc.layers):
        mha, at = layer.self_attention, f"vit.layers.{i}."
        for part, w, b in zip("qkv", mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)):
            weights.update({f"{at}attention.{part}_proj.weight": w, f"{at}attention.{part}_proj.bias": b})
        for mine, theirs in (("attention.o_proj", mha.out_proj), ("layernorm_before", layer.ln_1),
                             ("layernorm_after", layer.ln_2), ("mlp.fc1", layer.mlp[0]), ("mlp.fc2", layer.mlp[3])):
            weights.update({f"{at}{mine}.weight": theirs.weight, f"{at}{mine}.bias": theirs.bias})
    missing = set(model.state_dict()) ^ set(weights)
    assert not missing, f"the Hugging Face ViT's parameter names changed: {sorted(missing)}"
    model.load_state_dict({k: v.detach() for k, v in weights.items()})
    return model
