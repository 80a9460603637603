"""Attention rollout and Chefer et al.'s gradient-weighted attention against a reference written from the papers'
equations on an explicitly spelled-out forward pass of torchvision's ViT (its own weights, no hooks)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrpc.baselines import explain_baseline
from lrpc.errors import LrpcError

from vit_spellings import HEADS, timm_vit, torchvision_vit


def explicit_forward(vit, images):
    """(logits, attention probabilities per layer [B, heads, T, T]) of torchvision's ViT, written out by hand."""
    tokens = vit.conv_proj(images).flatten(2).transpose(1, 2)
    h = torch.cat([vit.class_token.expand(len(images), -1, -1), tokens], 1) + vit.encoder.pos_embedding
    attentions = []
    for layer in vit.encoder.layers:
        mha = layer.self_attention
        q, k, v = torch.einsum("bte,fe->btf", layer.ln_1(h), mha.in_proj_weight).add(mha.in_proj_bias).chunk(3, -1)
        split = lambda t: t.unflatten(-1, (HEADS, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        attention = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) / q.shape[-1] ** 0.5, -1)
        attentions.append(attention)
        mixed = torch.einsum("bhij,bhjd->bhid", attention, v).transpose(1, 2).flatten(2)
        h = h + mha.out_proj(mixed)
        h = h + layer.mlp(layer.ln_2(h))
    return vit.heads(vit.encoder.ln(h)[:, 0]), attentions


def upsampled(cls_row, images):
    side = int((cls_row.shape[-1] - 1) ** 0.5)
    return F.interpolate(cls_row[:, 1:].reshape(-1, 1, side, side), size=images.shape[-2:], mode="bilinear")[:, 0]


@pytest.fixture(scope="module")
def vit():
    return torchvision_vit()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(3)
    return torch.randn(3, 3, 32, 32, dtype=torch.float64)


def test_rollout_follows_abnar_and_zuidema(vit, images):
    _, attentions = explicit_forward(vit, images)
    expected = []
    for b in range(len(images)):
        rollout = torch.eye(attentions[0].shape[-1], dtype=torch.float64)
        for attention in attentions:
            mixed = 0.5 * attention[b].mean(0) + 0.5 * torch.eye(len(rollout), dtype=torch.float64)
            rollout = (mixed / mixed.sum(1, keepdim=True)) @ rollout
        expected.append(rollout[0])
    maps = explain_baseline("attention_rollout", vit, images, targets=0)
    assert torch.allclose(maps, upsampled(torch.stack(expected), images), rtol=1e-10, atol=1e-12)
    assert torch.equal(maps, explain_baseline("attention_rollout", vit, images, targets=4))   # class-blind


def test_gradient_weighted_attention_follows_chefer_et_al(vit, images):
    targets = torch.tensor([0, 3, 4])
    logits, attentions = explicit_forward(vit, images)
    gradients = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), attentions)
    expected = []
    for b in range(len(images)):
        relevance = torch.eye(attentions[0].shape[-1], dtype=torch.float64)
        for attention, gradient in zip(attentions, gradients):
            relevance = relevance + (attention[b] * gradient[b]).clamp(min=0).mean(0) @ relevance
        expected.append(relevance[0])
    maps = explain_baseline("chefer2021", vit, images, targets=targets)
    assert torch.allclose(maps, upsampled(torch.stack(expected), images).detach(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(maps, explain_baseline("chefer2021", vit, images, targets=torch.tensor([1, 1, 1])))


def test_timm_explicit_attention_gives_the_same_maps_and_fused_attention_is_refused(vit, images):
    targets = torch.tensor([2, 0, 1])
    explicit = timm_vit(vit, fused=False)
    for method in ("attention_rollout", "chefer2021"):
        assert torch.allclose(explain_baseline(method, explicit, images, targets),
                              explain_baseline(method, vit, images, targets), rtol=1e-9, atol=1e-12)
    with pytest.raises(LrpcError, match="fused_attn"):
        explain_baseline("chefer2021", timm_vit(vit, fused=True), images, targets)


def test_input_x_gradient_is_the_input_times_its_gradient(vit, images):
    targets = torch.tensor([1, 2, 3])
    x = images.clone().requires_grad_(True)
    vit(x).gather(1, targets[:, None]).sum().backward()
    assert torch.allclose(explain_baseline("input_x_gradient", vit, images, targets), (x * x.grad).sum(1).detach(),
                          rtol=1e-10, atol=1e-12)


def test_attention_baselines_refuse_a_model_without_attention():
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    cnn(torch.zeros(1, 3, 8, 8))
    with pytest.raises(LrpcError, match="no attention"):
        explain_baseline("attention_rollout", cnn.eval(), torch.zeros(2, 3, 8, 8))
