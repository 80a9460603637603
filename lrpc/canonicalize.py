"""Step 2 of the pipeline: graph passes that turn a traced model into the canonical forward graph.

- ``functionalize``: in-place ops (``out += x``, ``x.add_(y)``, ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``)
  become out-of-place, and later readers of a mutated tensor read the new value. The relevance pass re-reads
  forward activations, so none may be overwritten.
- ``drop_identities``: dropout (inference mode), ``nn.Identity``, ``.contiguous()`` disappear.
- ``fold_batchnorm``: BatchNorm after a conv/linear is merged into new constants of a functional conv/linear
  (for the zennit-compatible presets); the user's modules are not modified.
- ``propagate_shapes``: fx's ShapeProp on the example input.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import LrpcError
from .ops import (FUNCTION_TABLE, MODULE_TABLE, Context, OpInfo, Unsupported, conv_function, conv_module,
                  linear_function, linear_module)

# out-of-place equivalents of activation modules that may run in place
OUT_OF_PLACE: dict[type, callable] = {
    nn.ReLU: lambda m: (torch.relu, {}),
    nn.ReLU6: lambda m: (F.relu6, {}),
    nn.Hardtanh: lambda m: (F.hardtanh, {"min_val": m.min_val, "max_val": m.max_val}),
    nn.LeakyReLU: lambda m: (F.leaky_relu, {"negative_slope": m.negative_slope}),
    nn.ELU: lambda m: (F.elu, {"alpha": m.alpha}),
    nn.SiLU: lambda m: (F.silu, {}),
    nn.Hardswish: lambda m: (F.hardswish, {}),
    nn.Hardsigmoid: lambda m: (F.hardsigmoid, {}),
}
IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
IDENTITY_METHODS = {"contiguous", "clone", "detach"}
INPLACE_POSITIONAL = {F.relu: 1, F.relu6: 1, F.hardtanh: 3, F.leaky_relu: 2, F.elu: 2, F.silu: 1,
                      F.hardswish: 1, F.hardsigmoid: 1}


def _redirect_later_readers(graph: fx.Graph, mutated: fx.Node, new_value: fx.Node) -> None:
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(mutated.users):
        if user is not new_value and order[user] > order[new_value]:
            user.replace_input_with(mutated, new_value)


def functionalize(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        mutated = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_"):
            node.target = node.target[:-1]
        elif node.op == "call_function" and node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
        elif (node.op == "call_function" and node.target in INPLACE_POSITIONAL
              and len(node.args) > INPLACE_POSITIONAL[node.target] and node.args[INPLACE_POSITIONAL[node.target]]):
            args = list(node.args)
            args[INPLACE_POSITIONAL[node.target]] = False
            node.args = tuple(args)
        elif node.op == "call_module" and getattr(gm.get_submodule(node.target), "inplace", False):
            module = gm.get_submodule(node.target)
            if type(module) in IDENTITY_MODULES:
                continue
            if type(module) not in OUT_OF_PLACE:
                raise LrpcError(f"node {node.name}: {type(module).__name__}(inplace=True) at {node.target} "
                                "overwrites its input and lrpc has no out-of-place form for it")
            fn, kwargs = OUT_OF_PLACE[type(module)](module)
            node.meta["lrpc_module"] = (node.target, type(module).__name__)
            node.op, node.target, node.kwargs = "call_function", fn, kwargs
        else:
            continue
        if mutated is not None:
            _redirect_later_readers(graph, mutated, node)
    graph.lint()


def drop_identities(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        is_identity = (
            (node.op == "call_module" and isinstance(gm.get_submodule(node.target), IDENTITY_MODULES))
            or (node.op == "call_function" and node.target in IDENTITY_FUNCTIONS)
            or (node.op == "call_method" and node.target in IDENTITY_METHODS))
        if is_identity:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()


def _foldable_layer(node: fx.Node, gm: fx.GraphModule) -> OpInfo | None:
    """The conv/linear (module or functional with parameter weights) a BatchNorm could fold into."""
    if not isinstance(node, fx.Node) or len(node.users) != 1:
        return None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        handler = MODULE_TABLE.get(type(module))
        if getattr(module, "padding_mode", "zeros") != "zeros":
            return None
    elif node.op == "call_function":
        handler = FUNCTION_TABLE.get(node.target)
    else:
        return None
    if handler not in (conv_module, conv_function, linear_module, linear_function):
        return None
    try:
        return handler(node, Context(gm))
    except Unsupported:
        return None


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """Merge eval-mode BatchNorm into the conv/linear that feeds only it (zennit's canonizer, as a graph pass)."""
    graph = gm.graph
    for bn_node in list(graph.nodes):
        if bn_node.op != "call_module" or not isinstance(gm.get_submodule(bn_node.target),
                                                         nn.modules.batchnorm._BatchNorm):
            continue
        layer_node = bn_node.args[0]
        info = _foldable_layer(layer_node, gm)
        if info is None:
            continue
        bn = gm.get_submodule(bn_node.target)
        with torch.no_grad():
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()
            weight = info.weight * scale.view(-1, *([1] * (info.weight.dim() - 1)))
            bias = info.bias if info.bias is not None else torch.zeros_like(bn.running_mean)
            bias = (bias - bn.running_mean) * scale + bn.bias
        path, type_name = module_of(layer_node, gm)
        prefix = layer_node.name
        gm.register_buffer(f"lrpc_folded_{prefix}_weight", weight.detach().clone())
        gm.register_buffer(f"lrpc_folded_{prefix}_bias", bias.detach().clone())
        with graph.inserting_before(layer_node):
            w = graph.get_attr(f"lrpc_folded_{prefix}_weight")
            b = graph.get_attr(f"lrpc_folded_{prefix}_bias")
        if info.map == "linear":
            fn, args = F.linear, (info.inputs[0], w, b)
        else:
            fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
            args = (info.inputs[0], w, b, *info.args)
        # the layer node itself becomes the folded op, so it keeps its name in sums and dumps
        layer_node.meta["lrpc_module"] = (path, f"{type_name or fn.__name__}+{type(bn).__name__}")
        layer_node.meta["lrpc_folded"] = bn_node.target
        layer_node.op, layer_node.target, layer_node.args, layer_node.kwargs = "call_function", fn, args, {}
        bn_node.replace_all_uses_with(layer_node)
        graph.erase_node(bn_node)
    graph.lint()


def propagate_shapes(gm: fx.GraphModule, example_input: torch.Tensor) -> None:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor such as torch.randn(1, 3, 224, 224), "
                        f"got {type(example_input).__name__}")
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise LrpcError(f"the model failed on example_input of shape {tuple(example_input.shape)} "
                        f"({example_input.dtype}): {type(exc).__name__}: {exc}") from exc


def module_of(node: fx.Node, gm: fx.GraphModule) -> tuple[str | None, str | None]:
    """(qualified module path, type name) a node came from, surviving the rewrites above."""
    if "lrpc_module" in node.meta:
        return node.meta["lrpc_module"]
    stack = node.meta.get("nn_module_stack")
    if node.op == "call_module":
        return node.target, type(gm.get_submodule(node.target)).__name__
    if stack:
        path, cls = list(stack.values())[-1]
        return path, getattr(cls, "__name__", str(cls))
    return None, None
