"""Step 2 of the pipeline: graph passes that turn a captured model into the canonical forward graph.

- ``functionalize``: in-place ATen ops (``relu_``, ``add_`` from ``out += x``) become out-of-place, and later
  readers of a mutated tensor read the new value. The relevance pass re-reads forward activations, so none may
  be overwritten.
- ``drop_identities``: dropout (inference mode), ``alias``, ``detach`` disappear.
- ``decompose``: fused ops that compute several relevance steps at once (``baddbmm`` = β·input + α·(b₁ @ b₂), as
  WavLM's attention adds its position bias) are written out as the ATen ops they fuse, each with its own entry.
- ``fold_constants``: subgraphs that depend only on parameters, buffers and constants (weight standardisation,
  positional encodings, attention biases gathered from index tables) are evaluated once and become buffers.
- ``fold_zero_padding``: an explicit zero pad in front of a conv (TF "same" padding, as in EfficientNet) becomes
  the conv's own padding as far as it is symmetric, so rules never hand relevance to padded positions.
- ``fold_batchnorm``: BatchNorm after a conv/linear is merged into new constants of that conv/linear (for the
  zennit-compatible presets); the user's modules are not modified.
- ``propagate_shapes``: fx's ShapeProp on the example input.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp, _extract_tensor_metadata

from .errors import LrpcError
from .ops import depends_on_input, is_tensor, packet, params, shape
from .trace import module_path

aten = torch.ops.aten

# ``contiguous`` and ``clone`` stay: a later ``view`` may need the copy's layout
IDENTITIES = {aten.dropout, aten.feature_dropout, aten.alpha_dropout, aten.feature_alpha_dropout, aten.alias,
              aten.detach, aten.lift_fresh_copy}


def _redirect_later_readers(graph: fx.Graph, mutated: fx.Node, new_value: fx.Node) -> None:
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(mutated.users):
        if user is not new_value and order[user] > order[new_value]:
            user.replace_input_with(mutated, new_value)


def _out_of_place(target):
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.name.endswith("_") or schema.name.startswith("aten::_"):
        return None
    pure = getattr(aten, schema.name.split("::")[1][:-1], None)
    return getattr(pure, target._overloadname, None) if pure is not None else None


def functionalize(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        pure = _out_of_place(node.target)
        if pure is None:
            continue
        mutated = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        node.target = pure
        if mutated is not None:
            _redirect_later_readers(graph, mutated, node)
    graph.lint()


def drop_identities(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and packet(node) in IDENTITIES and isinstance(node.args[0], fx.Node):
            if packet(node) is aten.dropout and params(node).get("train"):
                continue
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()


def _scaled(graph: fx.Graph, value: fx.Node, factor) -> fx.Node:
    return value if factor == 1 else graph.call_function(aten.mul.Tensor, (value, factor))


def _baddbmm(graph: fx.Graph, node: fx.Node) -> fx.Node:
    p = params(node)
    product = _scaled(graph, graph.call_function(aten.bmm.default, (p["batch1"], p["batch2"])), p.get("alpha", 1))
    if p.get("beta", 1) == 0:   # torch ignores ``input`` then, NaN included
        return product
    return graph.call_function(aten.add.Tensor, (_scaled(graph, p["input"], p.get("beta", 1)), product))


# fused op -> writes the ops it fuses before the node and returns the node holding its value
DECOMPOSITIONS = {aten.baddbmm: _baddbmm}


def decompose(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        write = DECOMPOSITIONS.get(packet(node)) if node.op == "call_function" else None
        if write is None:
            continue
        before = node.prev
        with graph.inserting_before(node):
            value = write(graph, node)
        written = before.next
        while written is not node:   # the written ops belong to the fused op's module (rules select by path)
            written.meta.update({key: node.meta[key] for key in ("nn_module_stack", "stack_trace") if key in node.meta})
            written._rename(f"{node.name}_{written.target.overloadpacket.__name__}")
            written = written.next
        node.replace_all_uses_with(value)
        graph.erase_node(node)
    graph.lint()


def fold_constants(gm: fx.GraphModule) -> None:
    """Evaluate every tensor that does not depend on the input (nor on the batch size) once; the largest such
    values that input-dependent nodes read become buffers ``lrpc_constant_*``."""
    graph = gm.graph
    values: dict[fx.Node, object] = {}

    def foldable(n: fx.Node) -> bool:   # a split of a constant (a list of tensors) too: its items are constants
        holds = is_tensor(n) or isinstance(n.meta.get("val"), (list, tuple))
        return (n.op == "call_function" and holds and not depends_on_input(n)
                and all(i in values or i.op == "get_attr" for i in n.all_input_nodes))

    for n in graph.nodes:
        if not foldable(n):
            continue
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: values[a] if a in values
                                       else operator.attrgetter(a.target)(gm))
        with torch.no_grad():
            values[n] = n.target(*args, **kwargs)
    for n, value in values.items():
        readers = [u for u in n.users if u not in values]
        if not readers or not isinstance(value, torch.Tensor):
            continue
        name = f"lrpc_constant_{n.name}"
        gm.register_buffer(name, value.detach().clone())
        with graph.inserting_before(n):
            attr = graph.get_attr(name)
        attr.meta = {**n.meta, "tensor_meta": _extract_tensor_metadata(value)}
        n.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    graph.lint()


def _single_conv_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and packet(users[0]) in (aten.conv1d, aten.conv2d, aten.conv3d) \
        and users[0].args[0] is node else None


def fold_zero_padding(gm: fx.GraphModule) -> None:
    """conv(pad(x, p)) -> conv(x, padding=p) for the symmetric part of a zero pad that feeds only a conv.

    Same output. A relevance rule spreading over a conv window (the z+ fallback, flat, w²) then spreads over
    real inputs only, where before the share that landed on padded positions was cropped away by the pad's
    relevance op. An asymmetric remainder (TF "same" at stride 2: one extra row/column) stays an explicit pad.
    """
    graph = gm.graph
    for pad_node in list(graph.nodes):
        if packet(pad_node) not in (aten.constant_pad_nd, aten.pad):
            continue
        p = params(pad_node)
        if p.get("mode", "constant") != "constant" or p.get("value", 0) not in (None, 0, 0.0):
            continue
        conv_node = _single_conv_user(pad_node)
        if conv_node is None:
            continue
        cp = params(conv_node)
        if isinstance(cp["padding"], str):
            continue
        dims = len(shape(pad_node)) - 2
        amounts = tuple(p["pad"])
        if len(amounts) != 2 * dims:  # pads batch or channel dims too
            continue
        pairs = [amounts[2 * k:2 * k + 2] for k in range(dims)][::-1]  # F.pad lists the last dim first
        folded = [max(0, min(pair)) for pair in pairs]  # a negative pad is a crop: it stays explicit
        if not any(folded):
            continue
        remainder = tuple(v for pair, s in zip(pairs[::-1], folded[::-1]) for v in (pair[0] - s, pair[1] - s))
        source = pad_node.args[0]
        if any(remainder):
            pad_node.target, pad_node.args, pad_node.kwargs = aten.constant_pad_nd.default, (source, remainder, 0.0), {}
            pad_node.meta.pop("lrpc_params", None)
            source = pad_node
        padding = list(cp["padding"]) if isinstance(cp["padding"], (list, tuple)) else [cp["padding"]] * dims
        conv_node.args = (source, cp["weight"], cp.get("bias"), list(cp["stride"]),
                          [a + s for a, s in zip(padding, folded)], list(cp["dilation"]), cp["groups"])
        conv_node.kwargs = {}
        conv_node.meta.pop("lrpc_params", None)
        if not pad_node.users:
            graph.erase_node(pad_node)
    graph.lint()


def batchnorm_parts(node: fx.Node) -> dict | None:
    """The arguments of an eval-mode BatchNorm by name, in either of export's spellings: ``aten.batch_norm``, or
    item 0 of ``aten._native_batch_norm_legit_no_training`` (after a functionalising decomposition)."""
    if packet(node) is aten.batch_norm:
        return params(node)
    if packet(node) is operator.getitem and node.args[1] == 0 and \
            packet(node.args[0]) is aten._native_batch_norm_legit_no_training:
        return params(node.args[0])
    return None


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """Merge eval-mode BatchNorm into the conv/linear that feeds only it (zennit's canonizer, as a graph pass)."""
    graph = gm.graph
    for bn_node in list(graph.nodes):
        bp = batchnorm_parts(bn_node)
        if bp is None:
            continue
        layer_node = bp["input"]
        if not isinstance(layer_node, fx.Node) or len(layer_node.users) != 1 or packet(layer_node) not in (
                aten.conv1d, aten.conv2d, aten.conv3d, aten.linear):
            continue
        lp = params(layer_node)
        if any(not (isinstance(v, fx.Node) and v.op == "get_attr") for v in (lp["weight"], bp["running_mean"],
                                                                               bp["running_var"])):
            continue  # batch statistics even in eval, or a computed weight: not a fixed affine map
        get = lambda v: None if v is None else operator.attrgetter(v.target)(gm)  # noqa: E731
        weight, layer_bias = get(lp["weight"]), get(lp.get("bias"))
        mean, var = get(bp["running_mean"]), get(bp["running_var"])
        with torch.no_grad():
            gamma = get(bp.get("weight")) if bp.get("weight") is not None else torch.ones_like(var)
            beta = get(bp.get("bias")) if bp.get("bias") is not None else torch.zeros_like(mean)
            scale = gamma / (var + bp["eps"]).sqrt()
            folded_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
            bias = layer_bias if layer_bias is not None else torch.zeros_like(mean)
            folded_bias = (bias - mean) * scale + beta
        prefix = layer_node.name
        gm.register_buffer(f"lrpc_folded_{prefix}_weight", folded_weight.detach().clone())
        gm.register_buffer(f"lrpc_folded_{prefix}_bias", folded_bias.detach().clone())
        with graph.inserting_before(layer_node):
            w = graph.get_attr(f"lrpc_folded_{prefix}_weight")
            b = graph.get_attr(f"lrpc_folded_{prefix}_bias")
        args = list(layer_node.args) + [None] * max(0, 3 - len(layer_node.args))
        args[1], args[2] = w, b
        # the layer node itself becomes the folded op, so it keeps its name and module for rules, sums and dumps
        layer_node.args, layer_node.kwargs = tuple(args), {}
        layer_node.meta.pop("lrpc_params", None)
        layer_node.meta["lrpc_folded"] = module_path(bn_node)[0] or bn_node.name
        bn_node.replace_all_uses_with(layer_node)
        graph.erase_node(bn_node)
        if packet(bn_node) is operator.getitem and not bn_node.args[0].users:
            graph.erase_node(bn_node.args[0])
    graph.eliminate_dead_code()
    graph.lint()


def propagate_shapes(gm: fx.GraphModule, example_input: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """Record every node's shape on ``example_input`` (and a token model's attention mask); returns the output."""
    gm.recompile()
    for node in gm.graph.nodes:
        node.meta.pop("lrpc_depends_on_input", None)
    try:
        with torch.no_grad():
            return ShapeProp(gm).propagate(example_input, *more)
    except Exception as exc:
        raise LrpcError(f"the model failed on example_input of shape {tuple(example_input.shape)} "
                        f"({example_input.dtype}): {type(exc).__name__}: {exc}") from exc


def check_same_output(reference: torch.Tensor, canonical: torch.Tensor, model_name: str) -> None:
    """The canonical graph must compute what the captured model computes: the guard against a pass that
    changes the forward (a mutation through a view it did not see), which would make every map silently wrong."""
    # rounding differs where BatchNorm was folded; a pass that breaks the forward differs by O(1)
    if not bool(torch.isfinite(reference).all()):
        return   # NaN weights or inputs: debug=True names where they appear; a comparison says nothing
    tolerance = {torch.float64: 1e-9, torch.float32: 1e-3}.get(reference.dtype, 3e-2)
    scale = float(reference.abs().max()) or 1.0
    difference = float((reference - canonical).abs().max())
    if not difference <= tolerance * scale:
        raise LrpcError(f"lrpc's canonical graph of {model_name} computes other scores than the model on "
                        f"example_input (largest difference {difference:.3g} of {scale:.3g}); this is an lrpc bug: "
                        "please report it with the model definition")


def module_of(node: fx.Node, gm: fx.GraphModule | None = None) -> tuple[str | None, str | None]:
    """(qualified module path, type name) a node came from."""
    return module_path(node)
