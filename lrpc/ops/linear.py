"""Linear maps a rule applies to: convolutions, fully connected layers, pools, means and sums, upsampling."""
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


def avg_pool2d(node, ctx: Context) -> OpInfo:
    p = params(node)
    kernel = _tuple(p["kernel_size"], 2)
    stride = _tuple(p["stride"], 2) if p["stride"] not in (None, (), []) else kernel
    args = (kernel, stride, _tuple(p["padding"], 2), bool(p["ceil_mode"]), bool(p["count_include_pad"]),
            p["divisor_override"])
    return OpInfo("linear", (node.args[0],), map="avg_pool2d", args=args, nonneg="inputs")


def adaptive_avg_pool(dims: int):
    def handler(node, ctx: Context) -> OpInfo:
        # the output size is read off the captured shape, so `None` entries in output_size are resolved
        return OpInfo("linear", (node.args[0],), map="adaptive_avg_pool2d", args=(tuple(shape(node)[-dims:]),),
                      nonneg="inputs")
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


def _upsample(mode: str):
    def handler(node, ctx: Context) -> OpInfo:
        p = params(node)
        align = bool(p.get("align_corners") or False)
        return OpInfo("linear", (node.args[0],), map=f"upsample_{mode}",
                      args=(tuple(shape(node)[2:]), align), nonneg="inputs")
    return handler


TABLE = {
    aten.conv1d: conv, aten.conv2d: conv, aten.conv3d: conv,
    aten.linear: linear, aten.addmm: addmm,
    aten.avg_pool2d: avg_pool2d,
    aten.adaptive_avg_pool2d: adaptive_avg_pool(2), aten.adaptive_avg_pool1d: adaptive_avg_pool(1),
    aten.mean: _reduce(True), aten.sum: _reduce(False),
    aten.upsample_nearest2d: _upsample("nearest"), aten.upsample_bilinear2d: _upsample("bilinear"),
    aten.upsample_nearest1d: _upsample("nearest"), aten.upsample_linear1d: _upsample("linear"),
}
