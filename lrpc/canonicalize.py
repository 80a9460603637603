"""Step 2 of the pipeline: graph passes that turn a traced model into the canonical forward graph.

- ``functionalize``: in-place ops (``out += x``, ``x.add_(y)``, ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``)
  become out-of-place, and later readers of a mutated tensor read the new value. The relevance pass re-reads
  forward activations, so none may be overwritten.
- ``drop_identities``: dropout (inference mode), ``nn.Identity``, ``.contiguous()`` disappear.
- ``fold_zero_padding``: an explicit zero pad in front of a conv (TF "same" padding, as in EfficientNet) becomes
  the conv's own padding as far as it is symmetric, so rules never hand relevance to padded positions.
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
from .ops import (FUNCTION_TABLE, MODULE_TABLE, Context, OpInfo, Unsupported, arg, conv_function, conv_module,
                  linear_function, linear_module, pad, pad_module)

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


def _zero_pad(node: fx.Node, gm: fx.GraphModule) -> tuple[int, ...] | None:
    """The F.pad-style amounts of a constant-zero pad node, or None for any other node."""
    if node.op == "call_module":
        handler = MODULE_TABLE.get(type(gm.get_submodule(node.target)))
    elif node.op == "call_function":
        handler = FUNCTION_TABLE.get(node.target)
    else:
        return None
    if handler not in (pad, pad_module):
        return None
    try:
        return tuple(handler(node, Context(gm)).args)
    except Unsupported:
        return None


def fold_zero_padding(gm: fx.GraphModule) -> None:
    """conv(pad(x, p)) -> conv(x, padding=p) for the symmetric part of a zero pad that feeds only a conv.

    Same output. A relevance rule spreading over a conv window (the z+ fallback, flat, w²) then spreads over
    real inputs only, where before the share that landed on padded positions was cropped away by the pad's
    relevance op. An asymmetric remainder (TF "same" at stride 2: one extra row/column) stays an explicit pad.
    """
    graph = gm.graph
    for pad_node in list(graph.nodes):
        amounts = _zero_pad(pad_node, gm)
        conv_node = next(iter(pad_node.users)) if amounts is not None and len(pad_node.users) == 1 else None
        info = _foldable_layer(conv_node, gm, single_user=False) if conv_node is not None else None
        if info is None or info.map != "conv" or info.inputs[0] is not pad_node:
            continue
        stride, padding, dilation, groups = info.args
        dims = len(padding)
        if len(amounts) != 2 * dims:  # pads batch or channel dims too
            continue
        pairs = [amounts[2 * k:2 * k + 2] for k in range(dims)][::-1]  # F.pad lists the last dim first
        folded = [max(0, min(pair)) for pair in pairs]  # a negative pad is a crop: it stays explicit
        if not any(folded):
            continue
        remainder = tuple(v for pair, s in zip(pairs[::-1], folded[::-1]) for v in (pair[0] - s, pair[1] - s))
        source = pad_node.args[0]
        if any(remainder):
            pad_node.op, pad_node.target, pad_node.args, pad_node.kwargs = "call_function", F.pad, (source, remainder), {}
            source = pad_node
        path, type_name = module_of(conv_node, gm)
        weight, bias = _parameter_nodes(conv_node, gm)
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        new_padding = tuple(p + s for p, s in zip(padding, folded))
        conv_node.meta["lrpc_module"] = (path, type_name)
        conv_node.op, conv_node.target = "call_function", fn
        conv_node.args, conv_node.kwargs = (source, weight, bias, stride, new_padding, dilation, groups), {}
        if not pad_node.users:
            graph.erase_node(pad_node)
    graph.lint()


def _parameter_nodes(conv_node: fx.Node, gm: fx.GraphModule) -> tuple[fx.Node, fx.Node | None]:
    """The weight and bias of a conv call as graph nodes (get_attr for a module's parameters)."""
    if conv_node.op == "call_function":
        return arg(conv_node, 1, "weight"), arg(conv_node, 2, "bias")
    module = gm.get_submodule(conv_node.target)
    with gm.graph.inserting_before(conv_node):
        weight = gm.graph.get_attr(f"{conv_node.target}.weight")
        bias = None if module.bias is None else gm.graph.get_attr(f"{conv_node.target}.bias")
    return weight, bias


def _foldable_layer(node: fx.Node, gm: fx.GraphModule, single_user: bool = True) -> OpInfo | None:
    """The conv/linear (module or functional with parameter weights) a BatchNorm or a pad could fold into."""
    if not isinstance(node, fx.Node) or (single_user and len(node.users) != 1):
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
        if bn.running_mean is None or bn.running_var is None:  # batch statistics even in eval: not affine
            continue
        with torch.no_grad():
            gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
            scale = gamma / (bn.running_var + bn.eps).sqrt()
            weight = info.weight * scale.view(-1, *([1] * (info.weight.dim() - 1)))
            bias = info.bias if info.bias is not None else torch.zeros_like(bn.running_mean)
            bias = (bias - bn.running_mean) * scale + beta
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
        # the layer node itself becomes the folded op, so it keeps its name and type for rules, sums and dumps
        layer_node.meta["lrpc_module"] = (path, type_name)
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
