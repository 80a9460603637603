"""Relevance ops of the ATen op table against an independent reference: gradient × input.

On a bias-free network of linear maps, copy ops and ReLUs, LRP-0 with proportional (z-rule) splitting is
gradient × input exactly; a frozen factor (an attention matrix, a gate, a normalising divisor) is a detached
tensor in that identity, and the half-and-half product rule is the gradient of ``½(a·b̄ + ā·b)``. Each model
below has a ``reference`` form that spells those choices with ``detach`` for autograd, so the reference never
runs lrpc's code. Everything in float64.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.rules import Zero

LRP0 = lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), splitting=lrpc.Splitting("proportional"),
                  start="logit", name="lrp0")


class Net(nn.Module):
    """A bias-free conv stem and linear head around ``body``; ``reference=True`` runs the detached spelling."""

    def __init__(self, body, channels: int = 4, size: int = 8, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.body = body
        with torch.no_grad():
            features = body(torch.zeros(1, channels, size, size), False).flatten(1).shape[1]
        self.head = nn.Linear(features, classes, bias=False)
        self.reference = False

    def forward(self, x):
        return self.head(self.body(self.stem(x), self.reference).flatten(1))


def _frozen(t, reference):
    return t.detach() if reference else t


def _half_product(a, b, reference):
    return 0.5 * (a * b.detach() + a.detach() * b) if reference else a * b


BODIES = {
    "transpose_permute_reshape": lambda h, ref: h.transpose(2, 3).permute(0, 2, 3, 1).reshape(h.shape[0], -1, 4),
    "expand_and_sum_back": lambda h, ref: h.mean(1, keepdim=True).expand(-1, 3, -1, -1) * 1.0 + h[:, :3],
    "slice_select_cat": lambda h, ref: torch.cat([h[:, 1:3, ::2], h[:, 0, 1::2].unsqueeze(1)], 1),
    "split_chunk_unbind_stack": lambda h, ref: torch.stack(
        [*h.split([1, 3], 1)[1].unbind(1), *h.chunk(2, 1)[0].unbind(1)], 1),
    "index_gather_twice": lambda h, ref: h.flatten(2)[:, :, torch.tensor([0, 5, 5, 63, 10])],
    "roll_flip_repeat": lambda h, ref: h.roll(2, 3).flip(2).repeat(1, 2, 1, 1),
    "pixel_shuffle": lambda h, ref: F.pixel_shuffle(h, 2),
    "upsample_nearest_bilinear": lambda h, ref: F.relu(
        F.interpolate(h, scale_factor=2, mode="nearest")[:, :2] + F.interpolate(h, size=(16, 16), mode="bilinear")[:, 2:]),
    "avg_pools_and_means": lambda h, ref: F.avg_pool2d(h, 2) + F.adaptive_avg_pool2d(h, 4) + h.mean((2, 3), keepdim=True),
    "product_of_two_signals": lambda h, ref: _half_product(h[:, :2], h[:, 2:], ref),
    "broadcast_gate": lambda h, ref: h * _frozen(torch.sigmoid(h.mean((2, 3), keepdim=True)), ref),
    "divide_by_a_statistic": lambda h, ref: h / _frozen(h.pow(2).mean(1, keepdim=True).add(1).sqrt(), ref),
    "write_into_a_slice": lambda h, ref: _write_into_slice(h),   # GhostNet-style; export turns it into a scatter
    "difference_of_two_signals": lambda h, ref: F.avg_pool2d(h, 3, 1, 1) - h,   # PoolFormer's token mixer
    "mean_over_a_stack": lambda h, ref: torch.stack([h[:, :2], h[:, 2:]]).mean(0),   # batch in dimension 1
    "addcmul_layer_scale": lambda h, ref: torch.addcmul(torch.zeros(4, 1, 1, dtype=h.dtype),
                                                        torch.linspace(0.5, 2, 4, dtype=h.dtype).view(4, 1, 1), h),
}


def _write_into_slice(h):
    out = h.clone()
    out[:, :2] = h[:, 2:] * 2.0
    return out


def _attention(h, ref, sdpa: bool):
    tokens = h.flatten(2).transpose(1, 2)                # [B, 64, 4]
    q, k, v = tokens, tokens * 0.5, tokens.flip(2)
    if sdpa and not ref:
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
    weights = (q @ k.transpose(-2, -1) / 2.0).softmax(-1)
    return _frozen(weights, ref) @ v


BODIES["attention_sdpa"] = lambda h, ref: _attention(h, ref, sdpa=True)
BODIES["attention_explicit_softmax"] = lambda h, ref: _attention(h, ref, sdpa=False)
BODIES["attention_product_of_signals"] = lambda h, ref: (
    0.5 * (h.flatten(2) @ h.flatten(2).transpose(1, 2).detach() + h.flatten(2).detach() @ h.flatten(2).transpose(1, 2))
    if ref else h.flatten(2) @ h.flatten(2).transpose(1, 2))


def _matmul_half(a, b):
    return 0.5 * (a @ b.detach() + a.detach() @ b)


def _baddbmm(h, reference):
    """β·input + α·(b₁ @ b₂) fused in one op (WavLM adds its attention's position bias so), every part a signal."""
    tokens = h.flatten(2).transpose(1, 2)                # [B, 64, 4]
    if reference:
        return 0.5 * _matmul_half(tokens.flip(2), tokens.transpose(1, 2)) + 2.0 * _matmul_half(tokens, tokens.transpose(1, 2))
    return torch.baddbmm(tokens.flip(2) @ tokens.transpose(1, 2), tokens, tokens.transpose(1, 2), beta=0.5, alpha=2.0)


BODIES["baddbmm_fused_product_and_sum"] = _baddbmm
# a signal broadcast by a constant factor (WavLM gates its position bias so): its copies' relevance adds up
BODIES["broadcast_by_a_constant_factor"] = lambda h, ref: h[:, :1] * torch.linspace(
    0.5, 2, 4, dtype=h.dtype).view(1, 4, 1, 1)


class Body(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, h, reference):
        return self.fn(h, reference)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_relevance_equals_gradient_times_input_of_the_reference_spelling(name):
    model = Net(Body(BODIES[name])).double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.double)
    exp = lrpc.compile(model, LRP0, example_input=x[:1])(x)

    model.reference = True
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    torch.testing.assert_close(exp.logits, logits.detach(), rtol=1e-12, atol=1e-12)
    logits.gather(1, exp.target.clone()[:, None]).sum().backward()   # an inference tensor cannot be saved
    torch.testing.assert_close(exp.relevance, (xr * xr.grad).detach(), rtol=1e-9, atol=1e-12)


def test_normalisations_pass_relevance_through_with_their_statistics_frozen():
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm, self.group_norm = nn.LayerNorm(8), nn.GroupNorm(2, 4)

        def forward(self, h, reference):
            return self.group_norm(self.layer_norm(h))

    model = Net(Norms()).double().eval()
    explainer = lrpc.compile(model, LRP0, example_input=torch.zeros(1, 3, 8, 8, dtype=torch.double),
                             keep=["stem", "body_layer_norm", "body_group_norm"])
    exp = explainer(torch.randn(2, 3, 8, 8, dtype=torch.double))
    assert explainer.plans["body_layer_norm"].info.kind == "pass"
    torch.testing.assert_close(exp.relevances["stem"], exp.relevances["body_group_norm"])


def test_denormal_and_all_zero_contributions_lose_no_relevance_in_float32():
    """Random float32 models underflow (a gate of 1e-43, a value projection of zeros): a denominator below the
    smallest normal number counts as zero, and zero-contribution outputs spread by the frozen weights."""
    class Tiny(nn.Module):
        def forward(self, h, reference):
            tokens = (h * 1e-40).flatten(2).transpose(1, 2)          # denormal activations
            weights = (tokens @ tokens.transpose(1, 2)).softmax(-1)
            return weights @ (tokens * 0.0) + tokens                 # attention over all-zero values

    model = Net(Tiny()).eval()
    exp = lrpc.compile(model, "default", example_input=torch.zeros(1, 3, 8, 8))(torch.randn(2, 3, 8, 8))
    assert torch.isfinite(exp.relevance).all()
    assert float(exp.conservation_error().max()) < 1e-4
