"""The op table: how each fx node kind maps to a relevance op. Supporting a new op is one entry here.

Every handler reads one fx node and returns an ``OpInfo``: the relevance ``kind`` (what the relevance pass emits),
the tensor ``inputs`` that receive relevance, and for linear maps the map name, its plain arguments and its
parameters. A handler raises ``Unsupported`` with the reason when it sees a form it cannot explain.

Kinds: ``linear`` (a rule applies), ``pass`` (elementwise: relevance unchanged), ``batchnorm`` (pass, or folded),
``reshape``, ``permute``, ``cat``, ``add`` (Relevance Splitting), ``gate`` (all relevance to the gated signal),
``maxpool``, ``amax``, ``pad``. Nodes whose output is not a tensor (``x.size(0)``) carry no relevance.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.node import _get_qualified_name
from torch import nn


class Unsupported(Exception):
    """A node lrpc has no relevance op for; the message says why."""


@dataclass
class OpInfo:
    kind: str
    inputs: tuple[fx.Node, ...] = ()
    map: str | None = None
    args: tuple = ()
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    nonneg: str = "never"  # "always": output >= 0; "inputs": >= 0 when all inputs are; "never"
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    """What a handler may look at: the traced module (for submodules and get_attr values) and node shapes."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm

    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def constant(self, node: Any, what: str) -> torch.Tensor | None:
        if node is None:
            return None
        if isinstance(node, fx.Node) and node.op == "get_attr":
            return operator.attrgetter(node.target)(self.gm)
        raise Unsupported(f"{what} must be a parameter or buffer (get_attr), but is computed by {node}")


def shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def is_tensor(node: Any) -> bool:
    return shape(node) is not None


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _tuple(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


# ------------------------------------------------------------------------------------------------ linear maps
def _conv_padding(padding: Any, kernel: tuple, dilation: tuple, stride: tuple) -> tuple:
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total) or any(s != 1 for s in stride):
            raise Unsupported("padding='same' that is asymmetric; pad explicitly with F.pad instead")
        return tuple(t // 2 for t in total)
    return _tuple(padding, len(kernel))


def _conv_info(x, weight, bias, stride, padding, dilation, groups) -> OpInfo:
    nd = weight.dim() - 2
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    padding = _conv_padding(padding, tuple(weight.shape[2:]), dilation, stride)
    return OpInfo("linear", (x,), map="conv", args=(stride, padding, dilation, int(groups)), weight=weight, bias=bias)


def conv_module(node, ctx):
    m = ctx.module(node)
    if m.padding_mode != "zeros":
        raise Unsupported(f"padding_mode={m.padding_mode!r}; only zero padding has a relevance op")
    return _conv_info(node.args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def conv_function(node, ctx):
    return _conv_info(arg(node, 0, "input"), ctx.constant(arg(node, 1, "weight"), "conv weight"),
                      ctx.constant(arg(node, 2, "bias"), "conv bias"), arg(node, 3, "stride", 1),
                      arg(node, 4, "padding", 0), arg(node, 5, "dilation", 1), arg(node, 6, "groups", 1))


def linear_module(node, ctx):
    m = ctx.module(node)
    return OpInfo("linear", (node.args[0],), map="linear", weight=m.weight, bias=m.bias)


def linear_function(node, ctx):
    return OpInfo("linear", (arg(node, 0, "input"),), map="linear",
                  weight=ctx.constant(arg(node, 1, "weight"), "linear weight"),
                  bias=ctx.constant(arg(node, 2, "bias"), "linear bias"))


def _avg_pool_info(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kernel = _tuple(kernel, 2)
    stride = _tuple(stride, 2) if stride not in (None, ()) else kernel
    args = (kernel, stride, _tuple(padding, 2), bool(ceil_mode), bool(count_include_pad), divisor_override)
    return OpInfo("linear", (x,), map="avg_pool2d", args=args, nonneg="inputs")


def avg_pool_module(node, ctx):
    m = ctx.module(node)
    return _avg_pool_info(node.args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                          m.divisor_override)


def avg_pool_function(node, ctx):
    return _avg_pool_info(arg(node, 0, "input"), arg(node, 1, "kernel_size"), arg(node, 2, "stride"),
                          arg(node, 3, "padding", 0), arg(node, 4, "ceil_mode", False),
                          arg(node, 5, "count_include_pad", True), arg(node, 6, "divisor_override"))


def adaptive_avg_pool(node, ctx):
    # the output size is read off the traced shape, so `None` entries in output_size are resolved
    return OpInfo("linear", (node.args[0],), map="adaptive_avg_pool2d", args=(tuple(shape(node)[-2:]),),
                  nonneg="inputs")


def _reduce(mean: bool):
    def handler(node, ctx):
        x, dims = arg(node, 0, "input"), arg(node, 1, "dim")
        if dims is None:
            raise Unsupported("a reduction over all dimensions mixes the batch; give the dims explicitly")
        dims = tuple(_tuple(dims, 1))
        if any(d % len(shape(x)) == 0 for d in dims):
            raise Unsupported("a reduction over the batch dimension")
        return OpInfo("linear", (x,), map="reduce", args=(dims, bool(arg(node, 2, "keepdim", False)), mean),
                      nonneg="inputs")
    return handler


# -------------------------------------------------------------------------------------------- structural ops
def elementwise(nonneg: str = "never"):
    def handler(node, ctx):
        return OpInfo("pass", (arg(node, 0, "input"),), nonneg=nonneg)
    return handler


def batchnorm(node, ctx):
    return OpInfo("batchnorm", (node.args[0],))


def reshape(node, ctx):
    return OpInfo("reshape", (arg(node, 0, "input"),), nonneg="inputs")


def permute(node, ctx):
    dims = node.args[1:] if node.op == "call_method" else (arg(node, 1, "dims"),)
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else tuple(dims)
    return OpInfo("permute", (node.args[0],), args=dims, nonneg="inputs")


def cat(node, ctx):
    tensors = tuple(arg(node, 0, "tensors"))
    return OpInfo("cat", tensors, args=(int(arg(node, 1, "dim", 0)),), nonneg="inputs")


def pad(node, ctx):
    mode, value = arg(node, 2, "mode", "constant"), arg(node, 3, "value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise Unsupported(f"F.pad(mode={mode!r}, value={value!r}); only zero padding is supported")
    return OpInfo("pad", (arg(node, 0, "input"),), args=tuple(arg(node, 1, "pad")), nonneg="inputs")


def pad_module(node, ctx):
    m = ctx.module(node)
    if getattr(m, "value", 0) != 0:
        raise Unsupported(f"{type(m).__name__}(value={m.value}); only zero padding is supported")
    return OpInfo("pad", (node.args[0],), args=tuple(m.padding), nonneg="inputs")


def _maxpool_info(x, kernel, stride, padding, dilation, ceil_mode, return_indices=False):
    if return_indices:
        raise Unsupported("max-pool with return_indices=True")
    kernel = _tuple(kernel, 2)
    stride = _tuple(stride, 2) if stride not in (None, ()) else kernel
    return OpInfo("maxpool", (x,), args=(kernel, stride, _tuple(padding, 2), _tuple(dilation, 2), bool(ceil_mode)),
                  nonneg="inputs")


def maxpool_module(node, ctx):
    m = ctx.module(node)
    return _maxpool_info(node.args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                         m.return_indices)


def maxpool_function(node, ctx):
    return _maxpool_info(arg(node, 0, "input"), arg(node, 1, "kernel_size"), arg(node, 2, "stride"),
                         arg(node, 3, "padding", 0), arg(node, 4, "dilation", 1), arg(node, 5, "ceil_mode", False),
                         arg(node, 6, "return_indices", False))


def amax(node, ctx):
    x, dims = arg(node, 0, "input"), arg(node, 1, "dim", ())
    dims = tuple(_tuple(dims, 1))
    if not dims or any(d % len(shape(x)) == 0 for d in dims):
        raise Unsupported("amax over the batch dimension or over all dimensions")
    return OpInfo("amax", (x,), args=(dims, bool(arg(node, 2, "keepdim", False))), nonneg="inputs")


def depends_on_input(node: fx.Node) -> bool:
    """Whether a placeholder feeds this node; a parameter read through ``.view`` or arithmetic does not."""
    if "lrpc_depends_on_input" not in node.meta:
        stack, seen, found = [node], set(), False
        while stack and not found:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            found = n.op == "placeholder" or n.meta.get("lrpc_depends_on_input", False)
            stack.extend(n.all_input_nodes)
        node.meta["lrpc_depends_on_input"] = found
    return node.meta["lrpc_depends_on_input"]


def _is_constant(v: Any) -> bool:
    return not isinstance(v, fx.Node) or not is_tensor(v) or not depends_on_input(v)


def add(node, ctx):
    a, b = arg(node, 0, "input"), arg(node, 1, "other")
    if arg(node, 2, "alpha", 1) != 1:
        raise Unsupported("torch.add with alpha != 1")
    if _is_constant(a) and _is_constant(b):
        return OpInfo("inert")
    if _is_constant(a) or _is_constant(b):  # a bias-like constant: relevance stays with the signal
        return OpInfo("pass", (b if _is_constant(a) else a,))
    return OpInfo("add", (a, b), nonneg="inputs")


GATE_PRODUCERS = {torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.softmax, F.softmax, "sigmoid", "softmax",
                  nn.Sigmoid, nn.Hardsigmoid, nn.Softmax}


def _is_gate(node: fx.Node, ctx: Context) -> bool:
    if node.op == "call_module":
        return type(ctx.module(node)) in GATE_PRODUCERS
    return node.op in ("call_function", "call_method") and node.target in GATE_PRODUCERS


def mul(node, ctx):
    a, b = arg(node, 0, "input"), arg(node, 1, "other")
    if _is_constant(a) or _is_constant(b):  # scaling by a constant: relevance passes
        return OpInfo("pass", (b if _is_constant(a) else a,))
    out = shape(node)
    full = [x for x in (a, b) if shape(x) == out]
    if len(full) == 1:
        signal = full[0]
    elif _is_gate(a, ctx) != _is_gate(b, ctx):
        signal = b if _is_gate(a, ctx) else a
    else:
        raise Unsupported("product of two signals that is not a gate (neither factor is broadcast or a "
                          "sigmoid/softmax output)")
    gate = b if signal is a else a
    return OpInfo("gate", (signal,), extra={"gate": gate}, nonneg="never")


def subtract(node, ctx):
    a, b = arg(node, 0, "input"), arg(node, 1, "other")
    if not _is_constant(a) and _is_constant(b):  # x - mean: a shift, like a bias; relevance stays with x
        return OpInfo("pass", (a,))
    raise Unsupported("subtraction of a signal (only `signal - constant` has a relevance op)")


def scale(node, ctx):
    a, b = arg(node, 0, "input"), arg(node, 1, "other")
    if not _is_constant(b):
        raise Unsupported("division by a tensor")
    return OpInfo("pass", (a,))


# ------------------------------------------------------------------------------------------------- the table
MODULE_TABLE: dict[type, Callable] = {
    nn.Conv1d: conv_module, nn.Conv2d: conv_module, nn.Conv3d: conv_module,
    nn.Linear: linear_module,
    nn.BatchNorm1d: batchnorm, nn.BatchNorm2d: batchnorm, nn.BatchNorm3d: batchnorm,
    nn.ReLU: elementwise("always"), nn.ReLU6: elementwise("always"), nn.Sigmoid: elementwise("always"),
    nn.Hardsigmoid: elementwise("always"), nn.Softmax: elementwise("always"),
    nn.GELU: elementwise(), nn.SiLU: elementwise(), nn.Tanh: elementwise(), nn.Hardswish: elementwise(),
    nn.LeakyReLU: elementwise(), nn.ELU: elementwise(), nn.Hardtanh: elementwise(), nn.Mish: elementwise(),
    nn.MaxPool2d: maxpool_module,
    nn.AvgPool2d: avg_pool_module,
    nn.AdaptiveAvgPool2d: adaptive_avg_pool,
    nn.Flatten: reshape,
    nn.ZeroPad2d: pad_module, nn.ConstantPad2d: pad_module,
}

FUNCTION_TABLE: dict[Any, Callable] = {
    F.conv1d: conv_function, F.conv2d: conv_function, F.conv3d: conv_function,
    F.linear: linear_function,
    operator.add: add, torch.add: add, operator.mul: mul, torch.mul: mul,
    operator.truediv: scale, torch.div: scale, operator.sub: subtract, torch.sub: subtract,
    F.relu: elementwise("always"), torch.relu: elementwise("always"), F.relu6: elementwise("always"),
    torch.sigmoid: elementwise("always"), F.sigmoid: elementwise("always"), F.hardsigmoid: elementwise("always"),
    F.hardtanh: elementwise(), F.gelu: elementwise(), F.silu: elementwise(), torch.tanh: elementwise(),
    F.hardswish: elementwise(), F.leaky_relu: elementwise(), F.elu: elementwise(),
    F.max_pool2d: maxpool_function, torch.max_pool2d: maxpool_function,
    F.avg_pool2d: avg_pool_function, torch._C._nn.avg_pool2d: avg_pool_function,
    F.adaptive_avg_pool2d: adaptive_avg_pool,
    torch.flatten: reshape, torch.reshape: reshape, torch.squeeze: reshape, torch.unsqueeze: reshape,
    torch.permute: permute,
    torch.cat: cat, torch.concat: cat,
    F.pad: pad,
    torch.mean: _reduce(True), torch.sum: _reduce(False), torch.amax: amax,
}

METHOD_TABLE: dict[str, Callable] = {
    "add": add, "mul": mul, "div": scale, "sub": subtract,
    "relu": elementwise("always"), "sigmoid": elementwise("always"), "tanh": elementwise(),
    "view": reshape, "reshape": reshape, "flatten": reshape, "squeeze": reshape, "unsqueeze": reshape,
    "view_as": reshape, "reshape_as": reshape,
    "permute": permute,
    "mean": _reduce(True), "sum": _reduce(False), "amax": amax,
}


def describe_target(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} ({node.target})"
    if node.op == "call_method":
        return f".{node.target}()"
    try:
        return _get_qualified_name(node.target)
    except Exception:  # fx cannot name some builtins; their repr is the best we have
        return str(node.target)


def op_info(node: fx.Node, ctx: Context) -> OpInfo:
    """The table lookup. Raises ``Unsupported`` for nodes on the relevance path that have no entry."""
    if node.op == "placeholder":
        return OpInfo("input")
    if node.op in ("get_attr", "output") or not is_tensor(node) or not depends_on_input(node):
        return OpInfo("inert")
    if node.op == "call_module":
        module = ctx.module(node)
        handler = next((h for t, h in MODULE_TABLE.items() if type(module) is t), None)
        if handler is None:
            raise Unsupported(f"module type {type(module).__name__} has no relevance op (give it a rule by "
                              "marking a supported type, or extend lrpc.ops.MODULE_TABLE)")
    elif node.op == "call_method":
        handler = METHOD_TABLE.get(node.target)
    else:
        handler = FUNCTION_TABLE.get(node.target)
    if handler is None:
        raise Unsupported("no relevance op for this operation")
    return handler(node, ctx)
