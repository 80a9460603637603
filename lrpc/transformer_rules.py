"""Relevance kernels for the non-linear ops of transformers under the ``cp-lrp`` and ``attnlrp`` rule sets
(docs/transformers.md). Each is the gradient × input form LXT computes, written as a relevance op:

- LayerNorm with σ frozen: y = (x − μ)/σ · w + β, so with g = w ⊙ R/(σ·y), R_x = x ⊙ (g − mean(g)); β absorbs.
- a hand-written LayerNorm's ``x − mean(x)``: the z-rule of the centering map, R_x = x ⊙ (g − mean(g)), g = R/y;
  its division by σ (frozen), scale and shift then make the same map as LayerNorm's own rule.
- ``x + c`` with c a constant (a positional embedding): the z-rule of the add, R_x = x ⊙ R / y; c absorbs the rest.
- eval BatchNorm (a conv stem's) y = a·x + c per channel: the same z-rule, R_x = a·x ⊙ R / y; the shift absorbs.
- softmax (AttnLRP): R_x = x ⊙ (R − s·ΣR); the difference to ΣR is absorbed by the softmax.
- scaled dot-product attention (AttnLRP): O = softmax(q kᵀ·scale + mask) V computed as its pieces: the z-rule on
  A V shared half-and-half, the softmax rule, then the z-rule on q kᵀ shared half-and-half. An explicit
  ``q @ k.transpose`` → ``softmax`` → ``@ v`` spelling runs the same rules op by op, so both give the same maps.

Divisions follow LRP-0: r / y with 0/0 := 0.
"""
from __future__ import annotations

import torch

from .kernels import attention_weights, group_heads, in_place, owned_times, ungroup_heads
from .stabilizers import divide


def _ratio(r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return divide(r, y, "none", 0.0)


def layernorm_frozen_std(r, x, out, weight, *, normalized_shape, eps):
    """LayerNorm with its standard deviation a constant (biased variance, σ = √(var + eps), as in LXT)."""
    dims = tuple(range(-len(normalized_shape), 0))
    # 1/σ as LayerNorm's own kernel computes it: on CPU 5x faster than x.var over a short last dimension
    inverse_std = torch.native_layer_norm(x, normalized_shape, None, None, eps)[2].to(x.dtype)
    g = owned_times(_ratio(r, out), inverse_std)
    if weight is not None:
        g = owned_times(g, weight)
    return _centered_times(g, x, dims)


def centering_relevance(r, x, out, *, dims):
    """y = x − mean(x) over ``dims`` (a hand-written LayerNorm): the z-rule of that linear map,
    R_x = x ⊙ (g − mean(g)) with g = R / y, so that it equals ``layernorm_frozen_std`` op by op."""
    return _centered_times(_ratio(r, out), x, dims)


def _centered_times(g: torch.Tensor, x: torch.Tensor, dims) -> torch.Tensor:
    """x ⊙ (g − mean(g)) over ``dims``, in g's storage where the kernel owns g."""
    if in_place() and g.shape == x.shape:
        return g.sub_(g.mean(dims, keepdim=True)).mul_(x)
    return x * (g - g.mean(dims, keepdim=True))


def constant_add_share(r, x, out, *, coefficient):
    """y = coefficient·x + c with c constant: x's proportional share coefficient·x·R/y (summed back where x was
    broadcast); the constant keeps the rest."""
    return (coefficient * x * _ratio(r, out)).sum_to_size(x.shape)


def batchnorm_share(r, x, out, running_var, weight, *, eps):
    """Eval BatchNorm y = a·x + c per channel (a = weight/√(var + eps)): the z-rule of that map, R_x = a·x·R/y;
    the shift c absorbs the rest. This is gradient × input through BatchNorm, LXT's treatment of a conv stem."""
    scale = (running_var + eps).rsqrt()
    if weight is not None:
        scale = scale * weight
    return constant_add_share(r, x, out, coefficient=scale.view(-1, *([1] * (x.dim() - 2))))


def softmax_relevance(r, x, s, *, dim):
    """AttnLRP's softmax rule R_x = x ⊙ (R − s·ΣR). A masked logit (−inf, s = 0) receives nothing."""
    rel = x * (r - s * r.sum(dim, keepdim=True))
    return torch.where(torch.isfinite(x), rel, 0.0)


def attnlrp_attention(r, q, k, v, mask, out, *, is_causal: bool, scale):
    """(R_q, R_k, R_v) of O = softmax(q kᵀ·scale + mask) V under AttnLRP; an additive mask absorbs its share."""
    k_heads, v_heads = group_heads(q, k, v)             # grouped-query attention: shared heads repeated
    a, scale = attention_weights(q, k_heads, mask, is_causal=is_causal, scale=scale)
    g_out = 0.5 * _ratio(r, out)                       # the z-rule on A V, half to each factor
    r_v = v_heads * (a.transpose(-1, -2) @ g_out).sum_to_size(v_heads.shape)
    r_a = a * (g_out @ v_heads.transpose(-1, -2))
    g_logits = r_a - a * r_a.sum(-1, keepdim=True)     # softmax rule, divided by its input: R_x / x
    g_scores = 0.5 * scale * g_logits                  # the z-rule on q kᵀ, half to each factor
    r_q = q * (g_scores @ k_heads).sum_to_size(q.shape)
    r_k = k_heads * (g_scores.transpose(-1, -2) @ q).sum_to_size(k_heads.shape)
    return r_q, ungroup_heads(r_k, k), ungroup_heads(r_v, v)
