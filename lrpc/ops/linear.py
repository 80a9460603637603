"""Linear maps a rule applies to: convolutions, fully connected layers, pools, means and sums, upsampling, folds.
Window ops (pools, adaptive pools, upsampling) have one entry per family, built for each rank (1-D, 2-D, 3-D)."""
from __future__ import annotations

import torch

from . import Context, OpInfo, Unsupported, batch_layout, dims_of, params, shape

aten = torch.ops.aten


def _tuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _conv_padding(padding, kernel: tuple, dilation: tuple, stride: tuple) -> tuple:
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total) or any(s != 1 for s in stride):
            raise Unsupported("padding='same' that is asymmetric; pad explicitly with F.pad instead")
        return tuple(t // 2 for t in total)
    return _tuple(padding, len(kernel))


def conv(node, ctx: Context) -> OpInfo:
    p = params(node)
    weight = ctx.constant(p["weight"], "the conv weight")
    nd = weight.dim() - 2
    stride, dilation = _tuple(p["stride"], nd), _tuple(p["dilation"], nd)
    padding = _conv_padding(p["padding"], tuple(weight.shape[2:]), dilation, stride)
    return OpInfo("linear", (node.args[0],), map="conv", args=(stride, padding, dilation, int(p["groups"])),
                  weight=weight, bias=ctx.constant(p.get("bias"), "the conv bias"))


def conv_transpose(node, ctx: Context) -> OpInfo:
    """ConvTranspose1d/2d/3d: a weighted map like a conv (its weight is [C_in, C_out / groups, *kernel])."""
    p = params(node)
    weight = ctx.constant(p["weight"], "the transposed conv weight")
    nd = weight.dim() - 2
    args = (_tuple(p["stride"], nd), _tuple(p["padding"], nd), _tuple(p["output_padding"], nd),
            _tuple(p["dilation"], nd), int(p["groups"]))
    return OpInfo("linear", (node.args[0],), map="conv_transpose", args=args, weight=weight,
                  bias=ctx.constant(p.get("bias"), "the transposed conv bias"))


def linear(node, ctx: Context) -> OpInfo:
    p = params(node)
    return OpInfo("linear", (node.args[0],), map="linear", weight=ctx.constant(p["weight"], "the linear weight"),
                  bias=ctx.constant(p.get("bias"), "the linear bias"))


def addmm(node, ctx: Context) -> OpInfo:
    """bias + x @ W (Hugging Face's ``Conv1D`` in GPT-2): the linear map with weight Wᵀ."""
    bias, x, weight = node.args[:3]
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        raise Unsupported("addmm with beta or alpha other than 1")
    return OpInfo("linear", (x,), map="linear", weight=ctx.constant(weight, "the addmm weight").t(),
                  bias=ctx.constant(bias, "the addmm bias"))


def ranked(v, rank: int) -> tuple:
    """An int or a list of one or ``rank`` ints as a ``rank``-tuple (ATen accepts ``kernel_size=[3]`` for 3x3)."""
    t = _tuple(v, rank)
    return t * rank if len(t) == 1 else t


def window(p: dict, rank: int) -> tuple:
    """(kernel, stride, padding) of a pool's arguments as ``rank``-tuples; an empty stride means the kernel."""
    kernel = ranked(p["kernel_size"], rank)
    stride = kernel if p.get("stride") in (None, (), []) else ranked(p["stride"], rank)
    return kernel, stride, ranked(p["padding"], rank)


def spatial_rank(node, rank: int) -> int:
    """``rank``, after checking the input is batched [B, C, *spatial] (an unbatched [C, *spatial] call would
    read the batch as channels)."""
    if len(shape(node.args[0])) != rank + 2:
        raise Unsupported(f"a {rank}-d window op on a {len(shape(node.args[0]))}-d input; lrpc needs the batched "
                          f"form [B, C, {', '.join('*' * rank)}]")
    return rank


def avg_pool(rank: int):
    def handler(node, ctx: Context) -> OpInfo:
        p = params(node)
        kernel, stride, padding = window(p, spatial_rank(node, rank))
        args = (kernel, stride, padding, bool(p["ceil_mode"]), bool(p["count_include_pad"]),
                p.get("divisor_override"))
        return OpInfo("linear", (node.args[0],), map="avg_pool", args=args, nonneg="inputs")
    return handler


def adaptive_avg_pool(rank: int):
    def handler(node, ctx: Context) -> OpInfo:
        # the output size is read off the captured shape, so `None` entries in output_size are resolved
        return OpInfo("linear", (node.args[0],), map="adaptive_avg_pool",
                      args=(tuple(shape(node)[-spatial_rank(node, rank):]),), nonneg="inputs")
    return handler


def _reduce(mean: bool):
    def handler(node, ctx: Context) -> OpInfo:
        p = params(node)
        x, dims = node.args[0], p.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            raise Unsupported("a reduction over all dimensions mixes the batch; give the dims explicitly")
        dims = dims_of(dims, len(shape(x)))
        if batch_layout(x)[0] in dims:   # not always dimension 0: torch.stack([a, b]).mean(0) (CrossViT's heads)
            raise Unsupported("a reduction over the batch dimension")
        return OpInfo("linear", (x,), map="reduce", args=(dims, bool(p.get("keepdim", False)), mean),
                      nonneg="inputs")
    return handler


_SCALES = {1: ("scales",), 2: ("scales_h", "scales_w"), 3: ("scales_d", "scales_h", "scales_w")}


def upsample(mode: str, rank: int):
    """Nearest, nearest-exact and (bi/tri)linear upsampling: a fixed map with non-negative weights. Both of
    export's spellings (``.vec`` with scale factors, ``.default`` with per-dimension scales) keep their scales,
    which set the sampling grid when they are not the size ratio."""
    def handler(node, ctx: Context) -> OpInfo:
        p = params(node)
        rank_ = spatial_rank(node, rank)
        if "scale_factors" in p:
            scales = tuple(p["scale_factors"]) if p["scale_factors"] else (None,) * rank_
        else:
            scales = tuple(p.get(name) for name in _SCALES[rank_])
        args = (mode, tuple(shape(node)[2:]), bool(p.get("align_corners") or False), scales)
        return OpInfo("linear", (node.args[0],), map="upsample", args=args, nonneg="inputs")
    return handler


def refuse(reason: str):
    def handler(node, ctx: Context) -> OpInfo:
        raise Unsupported(reason)
    return handler


def fold(node, ctx: Context) -> OpInfo:
    """``nn.Fold`` (col2im): patches summed into an image where they overlap, a map with weights of one."""
    p = params(node)
    args = tuple(tuple(p[k]) for k in ("output_size", "kernel_size", "dilation", "padding", "stride"))
    return OpInfo("linear", (node.args[0],), map="fold", args=args, nonneg="inputs")


_BICUBIC = ("bicubic upsampling weighs neighbours with negative coefficients, which rules for weightless maps "
            "(pools, linear upsampling) assume non-negative; use mode='bilinear'")

TABLE = {
    aten.conv1d: conv, aten.conv2d: conv, aten.conv3d: conv,
    aten.conv_transpose1d: conv_transpose, aten.conv_transpose2d: conv_transpose, aten.conv_transpose3d: conv_transpose,
    aten.linear: linear, aten.addmm: addmm,
    aten.avg_pool1d: avg_pool(1), aten.avg_pool2d: avg_pool(2), aten.avg_pool3d: avg_pool(3),
    aten.adaptive_avg_pool1d: adaptive_avg_pool(1), aten.adaptive_avg_pool2d: adaptive_avg_pool(2),
    aten.adaptive_avg_pool3d: adaptive_avg_pool(3), aten._adaptive_avg_pool2d: adaptive_avg_pool(2),
    aten._adaptive_avg_pool3d: adaptive_avg_pool(3),
    aten.mean: _reduce(True), aten.sum: _reduce(False),
    aten.upsample_nearest1d: upsample("nearest", 1), aten.upsample_nearest2d: upsample("nearest", 2),
    aten.upsample_nearest3d: upsample("nearest", 3),
    aten._upsample_nearest_exact1d: upsample("nearest-exact", 1),
    aten._upsample_nearest_exact2d: upsample("nearest-exact", 2),
    aten._upsample_nearest_exact3d: upsample("nearest-exact", 3),
    aten.upsample_linear1d: upsample("linear", 1), aten.upsample_bilinear2d: upsample("linear", 2),
    aten.upsample_trilinear3d: upsample("linear", 3),
    aten.upsample_bicubic2d: refuse(_BICUBIC), aten._upsample_bicubic2d_aa: refuse(_BICUBIC),
    aten._upsample_bilinear2d_aa: refuse("antialiased bilinear resizing; use antialias=False"),
    aten.col2im: fold,
}
