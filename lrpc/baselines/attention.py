"""Attention-based explanations of vision transformers: attention rollout and Chefer et al.'s gradient-weighted
attention, the two baselines transformer LRP is usually compared with.

- **Attention rollout** (Abnar & Zuidema 2020): per layer the head-averaged attention plus the identity of the
  residual path, Â = ½ mean_h(A) + ½ I with rows renormalised, multiplied through the layers; the cls token's row
  is the map. Class-blind: every target gets the same map.
- **Gradient-weighted attention** (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability", their
  rule for self-attention encoders): R = I, then for every layer R ← R + Ā R with Ā = mean_h((∇A ⊙ A)⁺), ∇A the
  gradient of the target logit; the cls token's row is the map.

Both give one value per patch token. The map is that grid upsampled bilinearly to the image, as in both authors'
code. The attention probabilities must be tensors the output depends on, so that their gradient exists:
an explicit attention (timm with ``fused_attn=False``, whose ``attn_drop`` module receives the probabilities) is
hooked at its dropout; ``nn.MultiheadAttention`` (torchvision's ViT) returns only a detached-from-the-output copy
of its weights, so a forward hook replaces its output with the same self-attention computed explicitly from the
module's own projections. The hooks live for one call only; the model is never copied or changed.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LrpcError

__all__ = ["ATTENTION_METHODS", "attention_rollout", "gradient_weighted_attention", "rollout_matrix"]


@contextmanager
def _recorded_attention(model: nn.Module):
    """Collects every attention probability tensor [B, heads, T, T] computed inside the block, in call order."""
    recorded: list[torch.Tensor] = []
    handles = []

    def recompute_explicitly(module, args, kwargs, output):
        attention, probabilities = _explicit_self_attention(module, *args, **kwargs)
        recorded.append(probabilities)
        return attention, output[1]

    def keep_probabilities(module, args, output):
        recorded.append(output)

    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(recompute_explicitly, with_kwargs=True))
        elif hasattr(module, "attn_drop") and hasattr(module, "fused_attn"):   # timm's Attention
            if module.fused_attn:
                raise LrpcError(f"attention baselines need the attention probabilities, but {name} "
                                f"({type(module).__name__}) runs fused scaled_dot_product_attention: build the model "
                                "with fused attention off (timm: set module.fused_attn = False or "
                                "TIMM_FUSED_ATTN=0)")
            handles.append(module.attn_drop.register_forward_hook(keep_probabilities))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def _explicit_self_attention(module: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                             need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    """(output, probabilities [B, heads, T, T]) of ``module`` as softmax(q kᵀ/√d) v from its own weights."""
    if not (query is key is value) or not module.batch_first or not module._qkv_same_embed_dim:
        raise LrpcError("attention baselines read nn.MultiheadAttention as batch-first self-attention with one "
                        "in_proj (torchvision's ViT); this call is cross-attention, sequence-first or has separate "
                        "q/k/v projections")
    if key_padding_mask is not None or attn_mask is not None or is_causal or module.bias_k is not None:
        raise LrpcError("attention baselines do not handle masked or bias_kv attention")
    batch, tokens, width = query.shape
    heads = module.num_heads
    q, k, v = (part.reshape(batch, tokens, heads, width // heads).transpose(1, 2)
               for part in F.linear(query, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1))
    probabilities = (q @ k.transpose(-1, -2) * (width // heads) ** -0.5).softmax(-1)
    mixed = (probabilities @ v).transpose(1, 2).reshape(batch, tokens, width)
    return module.out_proj(mixed), probabilities


def _attention_layers(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None):
    """(attention per layer, their gradients of the target logits or None)."""
    with _recorded_attention(model) as recorded:
        with torch.set_grad_enabled(targets is not None):
            logits = model(images)
    if not recorded:
        raise LrpcError(f"{type(model).__name__} has no attention lrpc can read (nn.MultiheadAttention or an "
                        "explicit timm Attention); attention baselines apply to vision transformers")
    shapes = {tuple(a.shape) for a in recorded}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise LrpcError(f"attention baselines need the same [B, heads, T, T] attention in every layer, got {shapes}")
    if targets is None:
        return recorded, None
    score = logits.gather(1, targets[:, None]).sum()
    return recorded, torch.autograd.grad(score, recorded)


def _token_map(relevance_of_tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """[B, T] with the cls token first and a square patch grid after it -> [B, H, W] bilinearly upsampled."""
    patches = relevance_of_tokens[:, 1:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise LrpcError(f"attention baselines expect one cls token and a square grid of patch tokens; got "
                        f"{relevance_of_tokens.shape[1]} tokens")
    grid = patches.reshape(-1, 1, side, side)
    return F.interpolate(grid, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()


def attention_rollout(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Abnar & Zuidema's attention rollout [B, H, W] (``targets`` is accepted and ignored: rollout is class-blind)."""
    with torch.no_grad():
        attentions, _ = _attention_layers(model, images, None)
        return _token_map(rollout_matrix(attentions)[:, 0], images)


def rollout_matrix(attentions) -> torch.Tensor:
    """[B, T, T]: the layers' head-averaged attention [B, heads, T, T] plus the residual identity, rows
    renormalised, multiplied from the first layer up; row t is how much token t draws on every input token."""
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    rollout = identity.expand(attentions[0].shape[0], tokens, tokens)
    for attention in attentions:
        mixed = 0.5 * attention.mean(1) + 0.5 * identity
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def gradient_weighted_attention(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Chefer et al. (2021)'s relevance of the patch tokens for ``targets`` [B], as a map [B, H, W]."""
    attentions, gradients = _attention_layers(model, images, targets)
    with torch.no_grad():
        tokens = attentions[0].shape[-1]
        relevance = torch.eye(tokens, dtype=attentions[0].dtype, device=images.device).repeat(images.shape[0], 1, 1)
        for attention, gradient in zip(attentions, gradients):
            weighted = (gradient * attention).clamp(min=0).mean(1)
            relevance = relevance + weighted @ relevance
        return _token_map(relevance[:, 0], images)


ATTENTION_METHODS = {"attention_rollout": attention_rollout, "chefer2021": gradient_weighted_attention}
