"""Structural ops: relevance moves back to where each value came from (the op's transpose), and pools that
select. Views and permutations move it; slices, selections and gathers scatter it back; broadcasts sum it back;
concatenation splits it; constant padding crops it, reflect/replicate padding and unfolds sum it back over their
copies; max-pools (every rank, fixed or adaptive windows) give it to the winners."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .. import kernels
from . import Context, OpInfo, Unsupported, batch_layout, dims_of, linear, normalization, packet, params, shape

aten = torch.ops.aten


def reshape(node, ctx: Context) -> OpInfo:
    return OpInfo("reshape", (node.args[0],), nonneg="inputs")


def copy(node, ctx: Context) -> OpInfo:
    return OpInfo("pass", (node.args[0],), nonneg="inputs")


def permute(node, ctx: Context) -> OpInfo:
    return OpInfo("permute", (node.args[0],), args=tuple(params(node)["dims"]), nonneg="inputs")


def move(back, *, tensors: tuple = (), **kwargs):
    """OpInfo of a copy op on its first argument: relevance goes back through ``back(r, x, *tensors, **kwargs)``."""
    def info(node) -> OpInfo:
        return OpInfo("move", (node.args[0],), nonneg="inputs",
                      extra={"back": back, "kwargs": kwargs, "tensors": tensors})
    return info


def transpose(node, ctx: Context) -> OpInfo:
    p = params(node)
    ndim = len(shape(node))
    dims = (0, 1) if packet(node) is aten.t else (p["dim0"] % ndim, p["dim1"] % ndim)
    return move(kernels.transpose_back, dims=dims)(node)


def expand(node, ctx: Context) -> OpInfo:
    return move(kernels.sum_back)(node)


def repeat(node, ctx: Context) -> OpInfo:
    return move(kernels.repeat_back, repeats=tuple(params(node)["repeats"]))(node)


def slice_(node, ctx: Context) -> OpInfo:
    p = params(node)
    return move(kernels.slice_back, dim=p["dim"], start=p["start"], end=p["end"], step=p["step"])(node)


def select(node, ctx: Context) -> OpInfo:
    p = params(node)
    return move(kernels.select_back, dim=p["dim"], index=p["index"])(node)


def index(node, ctx: Context) -> OpInfo:
    indices = params(node)["indices"]
    present = tuple(i is not None for i in indices)
    return move(kernels.index_back, tensors=tuple(i for i in indices if i is not None), present=present)(node)


def roll(node, ctx: Context) -> OpInfo:
    p = params(node)
    return move(kernels.roll_back, shifts=tuple(p["shifts"]), dims=tuple(p["dims"]))(node)


def flip(node, ctx: Context) -> OpInfo:
    return move(kernels.flip_back, dims=tuple(params(node)["dims"]))(node)


def pixel_shuffle(node, ctx: Context) -> OpInfo:
    return move(kernels.pixel_shuffle_back, factor=params(node)["upscale_factor"])(node)


def copy_into(node, ctx: Context) -> OpInfo:
    """``aten.copy(self, src)``: the result is ``src`` (broadcast to self's shape); self's old values are gone."""
    return OpInfo("move", (node.args[1],), nonneg="inputs",
                  extra={"back": kernels.sum_back, "kwargs": {}, "tensors": ()})


def scatter(node, ctx: Context) -> OpInfo:
    """A write into a region (export's functional form of ``x[..., a:b] = y``): the region to ``y``, the rest to x."""
    p = params(node)
    region = {"index": p["index"]} if packet(node) is aten.select_scatter else \
        {"start": p.get("start"), "end": p.get("end"), "step": p.get("step", 1)}
    return OpInfo("scatter", (node.args[0], node.args[1]), nonneg="inputs",
                  extra={"dim": p.get("dim", 0), **region})


def cat(node, ctx: Context) -> OpInfo:
    p = params(node)
    tensors = tuple(p["tensors"])
    dim = p["dim"] % len(shape(node))
    return OpInfo("cat", tensors, args=(dim,), nonneg="inputs")


def stack(node, ctx: Context) -> OpInfo:
    p = params(node)
    return OpInfo("stack", tuple(p["tensors"]), args=(p["dim"] % len(shape(node)),), nonneg="inputs")


SPLITS = {aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.unsafe_split, aten.tensor_split}


def getitem(node, ctx: Context) -> OpInfo:
    parent, k = node.args
    if not isinstance(parent, fx.Node):
        raise Unsupported("indexing a value that is not an op's output")
    if packet(parent) in SPLITS:
        x = parent.args[0]
        ndim = len(shape(x))
        dim = params(parent).get("dim", 0) % ndim
        if packet(parent) is aten.unbind:
            return move(kernels.select_back, dim=dim, index=k)(parent)
        sizes = [m.shape[dim] for m in parent.meta["tensor_meta"]]
        start = sum(sizes[:k])
        return move(kernels.slice_back, dim=dim, start=start, end=start + sizes[k], step=1)(parent)
    if packet(parent) is aten._native_batch_norm_legit_no_training and k == 0:
        return normalization.batchnorm(parent, ctx)
    if packet(parent) is aten.max and k == 0:
        p = params(parent)
        return OpInfo("amax", (parent.args[0],), args=((p["dim"] % len(shape(parent.args[0])),), p["keepdim"]),
                      nonneg="inputs")
    if packet(parent) in MAXPOOLS_WITH_INDICES and k == 0:
        return MAXPOOLS_WITH_INDICES[packet(parent)].item(node, parent)
    if packet(parent) in (aten.lstm, aten.gru, aten.rnn_tanh, aten.rnn_relu):
        raise Unsupported(f"recurrent layers (nn.LSTM, nn.GRU, nn.RNN: {parent.target}) have no relevance op")
    raise Unsupported(f"item {k} of {parent.target}")


def pick_scores(node, ctx: Context) -> OpInfo:
    """A language model's scores read at given positions (``lrpc.tokens``): relevance back to those rows."""
    scores, positions = node.args
    return move(kernels.pick_scores_back, tensors=(positions,))(node)


def pad(node, ctx: Context) -> OpInfo:
    """A constant pad crops its relevance back (what lands on the fill is absorbed there, as by a constant);
    reflect / replicate / circular pads copy input values outwards, so their copies' relevance returns to them."""
    p = params(node)
    mode = p.get("mode", "constant")
    if packet(node) in _PAD_MODES:
        mode = _PAD_MODES[packet(node)]
    pads = tuple(p["pad"] if "pad" in p else p["padding"])
    if mode == "constant":
        fill = p.get("value") or 0.0
        return OpInfo("pad", (node.args[0],), args=pads, nonneg="inputs" if fill >= 0 else "never")
    if mode not in ("reflect", "replicate", "circular"):
        raise Unsupported(f"pad(mode={mode!r})")
    return move(kernels.pad_back, pad=pads, mode=mode)(node)


_PAD_MODES = {aten.reflection_pad1d: "reflect", aten.reflection_pad2d: "reflect", aten.reflection_pad3d: "reflect",
              aten.replication_pad1d: "replicate", aten.replication_pad2d: "replicate",
              aten.replication_pad3d: "replicate", aten._pad_circular: "circular"}


def maxpool(rank: int, adaptive: bool = False):
    """Max-pools of every rank, fixed or adaptive windows; ``node`` may be the pool or item 0 of its
    ``_with_indices`` form (whose indices the winner mode then reuses)."""
    def info(node, pool_node) -> OpInfo:
        x = pool_node.args[0]
        if len(shape(x)) != rank + 2:
            raise Unsupported(f"a {rank}-d max-pool on a {len(shape(x))}-d input; lrpc needs the batched form")
        p = params(pool_node)
        if adaptive:
            window = {"output_size": tuple(shape(node)[2:])}
        else:
            kernel, stride, padding = linear.window(p, rank)
            window = {"kernel": kernel, "stride": stride, "padding": padding,
                      "dilation": linear.ranked(p["dilation"], rank), "ceil_mode": bool(p["ceil_mode"])}
        indices = pool_node if pool_node is not node else None
        return OpInfo("maxpool", (x,), nonneg="inputs", extra={"window": window, "with_indices": indices})

    def handler(node, ctx: Context) -> OpInfo:
        return info(node, node)
    handler.item = info
    return handler


def amax(node, ctx: Context) -> OpInfo:
    p = params(node)
    x = node.args[0]
    dims = dims_of(p["dim"], len(shape(x))) if p["dim"] else ()
    if not dims or 0 in dims:
        raise Unsupported("amax over the batch dimension or over all dimensions")
    return OpInfo("amax", (x,), args=(dims, bool(p["keepdim"])), nonneg="inputs")


def unfold(node, ctx: Context) -> OpInfo:
    """``Tensor.unfold(dim, size, step)`` (PatchTST's patches): a copy of overlapping windows, so every window's
    relevance returns to the values it copies, overlaps summed."""
    p = params(node)
    dim = p["dimension"] % len(shape(node.args[0]))
    if dim == batch_layout(node.args[0])[0]:
        raise Unsupported("unfold over the batch dimension")
    return move(kernels.unfold_back, dim=dim, size=p["size"], step=p["step"])(node)


def im2col(node, ctx: Context) -> OpInfo:
    """``nn.Unfold``: sliding patches copied into columns; relevance returns by col2im (the adjoint), summed."""
    p = params(node)
    window = {k: tuple(p[k]) for k in ("kernel_size", "dilation", "padding", "stride")}
    return move(kernels.im2col_back, **window)(node)


MAXPOOLS_WITH_INDICES = {aten.max_pool1d_with_indices: maxpool(1), aten.max_pool2d_with_indices: maxpool(2),
                         aten.max_pool3d_with_indices: maxpool(3), aten.adaptive_max_pool1d: maxpool(1, True),
                         aten.adaptive_max_pool2d: maxpool(2, True), aten.adaptive_max_pool3d: maxpool(3, True)}

TABLE = {
    aten.view: reshape, aten.reshape: reshape, aten._unsafe_view: reshape, aten.flatten: reshape,
    aten.unflatten: reshape, aten.squeeze: reshape, aten.unsqueeze: reshape,
    aten.contiguous: copy, aten.clone: copy,
    aten.permute: permute, aten.transpose: transpose, aten.t: transpose,
    aten.view_as: reshape, aten.reshape_as: reshape,
    aten.expand: expand, aten.expand_as: expand, aten.repeat: repeat, aten.slice: slice_, aten.select: select, aten.index: index, aten.roll: roll,
    aten.flip: flip, aten.pixel_shuffle: pixel_shuffle,
    aten.cat: cat, aten.concat: cat, aten.stack: stack,
    aten.slice_scatter: scatter, aten.select_scatter: scatter, aten.copy: copy_into,
    operator.getitem: getitem, kernels.pick_scores: pick_scores,
    aten.constant_pad_nd: pad, aten.pad: pad, **{op: pad for op in _PAD_MODES},
    aten.max_pool1d: maxpool(1), aten.max_pool2d: maxpool(2), aten.max_pool3d: maxpool(3), aten.amax: amax,
    aten.unfold: unfold, aten.im2col: im2col,
}
