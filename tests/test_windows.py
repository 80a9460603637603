"""Window ops in every rank (1-D signals, 2-D images, 3-D volumes): pools, adaptive pools, max-pools (fixed,
adaptive, ``return_indices``), padding (constant, reflect, replicate, circular), upsampling, transposed
convolutions, unfold and nn.Fold.

Each op sits between a ReLU'd conv stem and a linear head; ``keep=`` returns the relevance above and below the op,
and the dense reference (``tests/reference.py``) recomputes the op's step from its matrix, built by pushing basis
vectors through the torch function itself (or its Jacobian at the input, for max-pools): LRP-0 on the matrix of a
linear map, the transpose for a copy op. Nothing here calls lrpc's kernels. The ``default`` preset must conserve.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.rules import Zero
from reference import dense, lrp_dense

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
SIZE = {1: (12,), 2: (6, 6), 3: (4, 4, 4)}
LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _pool(rank, family):
    return getattr(F, f"{family}{rank}d")


OPS = {   # name -> (rank -> the op on [B, C, *spatial]); "copy" ops move relevance, "map" ops are linear maps
    "avg_pool": ("map", lambda r: lambda h: _pool(r, "avg_pool")(h, 3, 2, 1, count_include_pad=False)),
    "avg_pool_ceil": ("map", lambda r: lambda h: _pool(r, "avg_pool")(h, 2, ceil_mode=True)),
    "adaptive_avg_pool": ("map", lambda r: lambda h: _pool(r, "adaptive_avg_pool")(h, 3)),
    "upsample_nearest": ("map", lambda r: lambda h: F.interpolate(h, scale_factor=2, mode="nearest")),
    "upsample_nearest_exact": ("map", lambda r: lambda h: F.interpolate(h, scale_factor=1.5, mode="nearest-exact")),
    "upsample_linear": ("map", lambda r: lambda h: F.interpolate(h, scale_factor=1.5, mode=LINEAR_MODE[r])),
    "upsample_linear_aligned": ("map", lambda r: lambda h: F.interpolate(
        h, size=tuple(s + 3 for s in h.shape[2:]), mode=LINEAR_MODE[r], align_corners=True)),
    "pad_constant": ("copy", lambda r: lambda h: F.pad(h, (1, 2) * r)),
    "pad_reflect": ("copy", lambda r: lambda h: F.pad(h, (2, 1) * r, mode="reflect")),
    "pad_replicate": ("copy", lambda r: lambda h: F.pad(h, (2, 1) * r, mode="replicate")),
    "pad_circular": ("copy", lambda r: lambda h: F.pad(h, (1, 2) * r, mode="circular")),
    "unfold_patches": ("copy", lambda r: lambda h: h.unfold(-1, 3, 2)),     # PatchTST: overlapping patches
    "conv_transpose": ("map", lambda r: _conv_transpose(r)),
    "max_pool": ("max", lambda r: lambda h: _pool(r, "max_pool")(h, 3, 2, 1)),
    "max_pool_indices": ("max", lambda r: lambda h: _pool(r, "max_pool")(h, 2, return_indices=True)[0]),
    "max_pool_dilated_ceil": ("max", lambda r: lambda h: _pool(r, "max_pool")(h, 2, 1, 0, 2, ceil_mode=True)),
    "adaptive_max_pool": ("max", lambda r: lambda h: _pool(r, "adaptive_max_pool")(h, 3)),
    "adaptive_max_pool_indices": ("max", lambda r: lambda h: _pool(r, "adaptive_max_pool")(h, 2, True)[0]),
}


def _conv_transpose(rank):
    """ConvTranspose{rank}d with a fixed weight [C_in, C_out, 3, ...], stride 2, output padding 1."""
    weight = torch.randn(2, 3, *(3,) * rank, dtype=torch.double, generator=torch.Generator().manual_seed(7))
    transpose = getattr(F, f"conv_transpose{rank}d")
    return lambda h: transpose(h, weight.to(h.dtype), stride=2, padding=1, output_padding=1)


class Op(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, h):
        return self.fn(h)


class WindowNet(nn.Module):
    """conv stem -> ReLU -> op -> linear head, all bias-free; ``rank`` spatial dimensions."""

    def __init__(self, rank: int, op, channels: int = 2):
        super().__init__()
        self.stem = CONV[rank](2, channels, 3, padding=1, bias=False)
        self.op = Op(op)
        with torch.no_grad():
            features = op(torch.zeros(1, channels, *SIZE[rank])).numel()
        self.head = nn.Linear(features, 3, bias=False)

    def forward(self, x):
        return self.head(self.op(F.relu(self.stem(x))).flatten(1))


def _model(rank, name, seed=0):
    torch.manual_seed(seed)
    return WindowNet(rank, OPS[name][1](rank)).double().eval()


def _op_relevance(model, a, target):
    """LRP-0 of the bias-free linear head with start = logit: R_o = o ⊙ w_target, computed here from the op's
    output ``o`` = op(a), so only the relevance below the op comes from lrpc."""
    o = model.op(a.unsqueeze(0))[0]
    return o * model.head.weight[target].view_as(o)


def _reference_step(kind, op, a, r):
    """The op's relevance step on one sample from its dense matrix: LRP-0 (linear maps), the transpose (copies),
    the Jacobian's transpose at ``a`` (winner-take-all max)."""
    shape = tuple(a.shape)
    if kind == "max":
        jacobian = torch.autograd.functional.jacobian(lambda v: op(v.unsqueeze(0)).flatten(), a)
        return (jacobian.reshape(-1, a.numel()).T @ r.flatten()).reshape(shape)
    W = dense(op, shape)
    if kind == "copy":
        return (W.T @ r.flatten()).reshape(shape)
    return lrp_dense("zero", W, torch.zeros(W.shape[0], dtype=W.dtype), a.flatten(), r.flatten()).reshape(shape)


RULES = lrpc.Rules(conv=Zero(), linear=Zero(), pool=Zero(), maxpool="winner",
                   splitting=lrpc.Splitting("proportional"), start="logit", name="lrp0")


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(OPS))
def test_window_op_matches_the_dense_reference_in_every_rank(rank, name):
    model = _model(rank, name)
    x = torch.randn(2, 2, *SIZE[rank], dtype=torch.double, generator=torch.Generator().manual_seed(1))
    exp = lrpc.compile(model, RULES, example_input=x[:1], keep=["relu"])(x)
    kind, make = OPS[name]
    for b in range(x.shape[0]):
        a = exp.activations["relu"][b].clone()
        expected = _reference_step(kind, make(rank), a, _op_relevance(model, a, exp.target[b]))
        torch.testing.assert_close(exp.relevances["relu"][b], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("mode", ["proportional", "avg2x2"])
def test_max_pool_proportional_and_average_modes_in_every_rank(rank, mode):
    """proportional: the z-rule on the window-mean matrix; avg2x2: the z-rule (+eps) on a 2x2(x2) average."""
    model = _model(rank, "max_pool_indices")
    x = torch.randn(2, 2, *SIZE[rank], dtype=torch.double, generator=torch.Generator().manual_seed(2))
    rules = RULES.replace(maxpool=mode, maxpool_epsilon=0.0)
    exp = lrpc.compile(model, rules, example_input=x[:1], keep=["relu"])(x)
    average = lambda v: _pool(rank, "avg_pool")(v, 2)   # noqa: E731  the 2-window max-pool's windows
    for b in range(2):
        a = exp.activations["relu"][b].clone()
        r = _op_relevance(model, a, exp.target[b])
        W = dense(average, tuple(a.shape))
        expected = lrp_dense("zero", W, torch.zeros(W.shape[0], dtype=W.dtype), a.flatten(), r.flatten())
        torch.testing.assert_close(exp.relevances["relu"][b], expected.reshape(a.shape), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(OPS))
def test_default_preset_conserves_through_every_window_op(rank, name):
    model = _model(rank, name, seed=3).float()
    x = torch.randn(3, 2, *SIZE[rank], generator=torch.Generator().manual_seed(4))
    exp = lrpc.compile(model.double(), "default", example_input=x[:1].double())(x.double())
    closed = exp.relevance.flatten(1).sum(1) + sum(exp.absorbed.values(), torch.zeros(3, dtype=torch.double))
    torch.testing.assert_close(closed, exp.start, rtol=1e-9, atol=1e-12)
    if name != "pad_constant":
        assert float(exp.conservation_error().max()) < 1e-9


def test_nn_unfold_and_fold_match_the_dense_reference():
    """nn.Unfold (im2col) is a copy: relevance returns by its transpose; nn.Fold (col2im) sums overlaps: a map."""
    torch.manual_seed(0)

    def op(h):
        return F.fold(F.unfold(h, 3, padding=1, stride=2) * 1.0, (6, 6), 3, padding=1, stride=2)

    model = WindowNet(2, op).double().eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.double, generator=torch.Generator().manual_seed(5))
    exp = lrpc.compile(model, RULES, example_input=x[:1], keep=["relu"])(x)
    for b in range(2):
        a = exp.activations["relu"][b].clone()
        r = _op_relevance(model, a, exp.target[b])
        cols = F.unfold(a.unsqueeze(0), 3, padding=1, stride=2)[0]
        W_fold = dense(lambda v: F.fold(v, (6, 6), 3, padding=1, stride=2), tuple(cols.shape))
        r_cols = lrp_dense("zero", W_fold, torch.zeros(W_fold.shape[0], dtype=W_fold.dtype), cols.flatten(),
                           r.flatten())
        W_unfold = dense(lambda v: F.unfold(v, 3, padding=1, stride=2), tuple(a.shape))
        torch.testing.assert_close(exp.relevances["relu"][b], (W_unfold.T @ r_cols).reshape(a.shape),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["bicubic"])
def test_bicubic_upsampling_is_refused_with_the_reason(mode):
    torch.manual_seed(0)
    model = WindowNet(2, lambda h: F.interpolate(h, scale_factor=2, mode=mode)).eval()
    with pytest.raises(lrpc.LrpcError, match="bicubic"):
        lrpc.compile(model, "default", example_input=torch.randn(1, 2, 6, 6))
