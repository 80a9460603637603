"""A naive LRP reference written from the equations (docs/rules.md, docs/splitting.md, Otsuki et al. Eq. 3–7).

Every linear layer is turned into a dense matrix W [n_out, n_in] by pushing the basis vectors through the
layer's forward function, and every rule is the textbook per-connection formula on the contribution matrix
c_ji = W_ji · a_i. Nothing here uses lrpc's kernels, transposes or stabilisers.
"""
from __future__ import annotations

import torch


def dense(forward, in_shape):
    """The matrix of a bias-free linear map given as a function of one sample [*in_shape]."""
    n_in = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    return forward(basis).reshape(n_in, -1).T.contiguous()


def _sign_stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def _share(num, den, r):
    """Σ_j num_ji / den_j · r_j, with 0/0 := 0."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    factor = torch.where(den == 0, torch.zeros_like(den), r / safe)
    return (num * factor[:, None]).sum(0)


def lrp_dense(rule: str, W, b, a, r, **p):
    """Relevance of the inputs a [n_in] of y = W a + b, given output relevance r [n_out]."""
    c = W * a[None, :]
    eps = p.get("eps", 0.0)
    if rule == "zero":
        return _share(c, c.sum(1) + b, r)
    if rule == "epsilon":
        return _share(c, _sign_stab(c.sum(1) + b, eps), r)
    if rule == "epsilon_rms":  # Montavon et al.: z + eps·RMS(z) + 1e-9, RMS over the whole layer output
        z = c.sum(1) + b
        return _share(c, z + eps * z.square().mean().sqrt() + 1e-9, r)
    if rule in ("zplus", "alphabeta"):
        alpha, beta = p.get("alpha", 1.0), p.get("beta", 0.0)
        bp, bn = (b.clamp(min=0), b.clamp(max=0)) if p.get("bias", True) else (0 * b, 0 * b)
        cp, cn = c.clamp(min=0), c.clamp(max=0)
        out = alpha * _share(cp, _sign_stab(cp.sum(1) + bp, eps), r)
        if p.get("fallback"):  # outputs without positive contributions pass through their negative ones
            orphan = r * ((cp.sum(1) + bp) == 0)
            out = out + _share(cn, _sign_stab(cn.sum(1), eps), orphan)
            empty = orphan * (cn.sum(1) == 0)
            structure = p.get("structure", (W != 0).to(W))
            out = out + _share(structure, structure.sum(1), empty)
        if beta:
            out = out - beta * _share(cn, _sign_stab(cn.sum(1) + bn, eps), r)
        return out
    if rule == "zplus_ones":  # Otsuki et al. first layer: input replaced by ones, W⁺, +eps
        cp = W.clamp(min=0)
        return _share(cp, cp.sum(1) + eps, r)
    if rule == "gamma":
        g = p["gamma"]
        up, down = c + g * c.clamp(min=0), c + g * c.clamp(max=0)
        bu, bd = b + g * b.clamp(min=0), b + g * b.clamp(max=0)
        z = c.sum(1) + b
        return (_share(up, _sign_stab(up.sum(1) + bu, eps), r * (z > 0))
                + _share(down, _sign_stab(down.sum(1) + bd, eps), r * (z < 0)))
    if rule == "gamma_original":
        g = p["gamma"]
        up = c + g * c.clamp(min=0)
        return _share(up, _sign_stab(up.sum(1) + b + g * b.clamp(min=0), eps), r)
    if rule == "zbox":
        low, high = p["low"], p["high"]
        num = c - W.clamp(min=0) * low[None, :] - W.clamp(max=0) * high[None, :]
        return _share(num, _sign_stab(num.sum(1), eps), r)
    if rule == "flat":
        ones = (W != 0).to(W) if p.get("structure") is None else p["structure"]
        return _share(ones, _sign_stab(ones.sum(1), eps), r)
    if rule == "wsquare":
        w2 = W * W
        return _share(w2, _sign_stab(w2.sum(1) + b * b, eps), r)
    raise ValueError(rule)


def split(mode: str, r, h_main, h_skip, identity_silent: bool, eps: float = 0.0):
    """(R_main, R_skip) at y = h_main + h_skip, elementwise, from Eq. 4–6."""
    if identity_silent:
        return r, torch.zeros_like(r)
    if mode == "symmetric":
        return r / 2, r / 2
    if mode == "ratio":
        total = h_main.abs() + h_skip.abs()
        share = torch.where(total > 0, h_main.abs() / torch.where(total > 0, total, 1.0), 0.5)
        return r * share, r * (1 - share)
    if mode == "proportional":
        z = h_main + h_skip
        s = torch.where(z == 0, 0.0, r / _sign_stab(z, eps)) if eps else torch.where(z == 0, 0.0, r / torch.where(z == 0, 1.0, z))
        return h_main * s, h_skip * s
    raise ValueError(mode)


# ------------------------------------------------------------------------- transformer ops (docs/transformers.md)
def layernorm_dense(x, weight, bias, r, eps):
    """One token [n] of LayerNorm with σ frozen: the affine map x ↦ (x − mean(x))/σ · w + β as a dense matrix,
    then LRP-0 with β in the denominator."""
    std = (x.var(correction=0) + eps).sqrt()
    W = dense(lambda e: (e - e.mean(-1, keepdim=True)) / std * weight, x.shape)
    return lrp_dense("zero", W, bias, x, r)


def softmax_dense(x, r):
    """AttnLRP's softmax rule from its definition, R_x = x ⊙ Jᵀ (R / s) (the first-order Taylor terms at x),
    with the Jacobian J [n, n] of one row."""
    s = x.softmax(0)
    J = torch.autograd.functional.jacobian(lambda t: t.softmax(0), x)
    return x * (J.T @ (r / s))


def bilinear_dense(a, b, r):
    """O = A B [m, k] x [k, n]: the z-rule over the m·k·n contributions a_ik b_kj, then half to each factor."""
    c = a[:, :, None] * b[None, :, :]                 # [m, k, n]
    share = 0.5 * c * (r / c.sum(1))[:, None, :]
    return share.sum(2), share.sum(0)
