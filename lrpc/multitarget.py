"""Several targets per image with one forward pass.

``multi_target_module`` rewrites a generated relevance module so that its forward section runs once on the B
images and its relevance section on B·K rows: every forward activation the relevance section reads is repeated
K times along the batch (image-major: row b·K + k is image b with its k-th target), right before its first use
there. An activation is therefore copied only once the relevance pass reaches it, and its un-repeated original
is freed at that point — peak memory grows like the relevance messages do, not by K copies of the forward.

The rewrite assumes dimension 0 of every activation on the relevance path is the batch (true of CNNs), alone or
merged batch-major ([B·T, D], as GPT-2's ``Conv1D`` flattens it); graphs that permute it away are refused.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from . import kernels
from .errors import LrpcError
from .op_kinds import kind_of
from .ops import batch_layout


def repeat_batch(t: torch.Tensor, repeats: int) -> torch.Tensor:
    """Each sample's rows ``repeats`` times; a size (a symbolic length the relevance ops read) stays as it is."""
    return t.repeat_interleave(repeats, dim=0) if isinstance(t, torch.Tensor) else t


def repeat_merged_batch(t: torch.Tensor, repeats: int, rows: torch.Tensor) -> torch.Tensor:
    """``repeat_batch`` of a tensor whose dimension 0 is [B·n] (a token model's [B·T, D])."""
    return t.unflatten(0, (rows.shape[0], -1)).repeat_interleave(repeats, dim=0).flatten(0, 1)


def check_batch_major(plans) -> None:
    """Refuse a graph whose relevance path moves the batch away from dimension 0 (alone, or [B·n] merged)."""
    for name, plan in plans.items():
        dim, inner = batch_layout(plan.node)
        if inner not in (None, -1) or dim != 0:
            raise LrpcError(f"explain_targets needs the batch in dimension 0 of every activation, alone, but "
                            f"node {name!r} holds it in dimension {dim}{' merged with another size' if inner else ''}"
                            "; call the explainer once per target")
        if kind_of(plan).moves_batch(plan):
            raise LrpcError(f"explain_targets needs the batch in dimension 0 of every activation, but node "
                            f"{name!r} permutes it to {tuple(plan.info.args)}; call the explainer once per target")


def multi_target_module(module: fx.GraphModule, per_row: tuple = ()) -> fx.GraphModule:
    """``forward(x, target, repeats)``: ``target`` has B·repeats entries; every output has B·repeats rows.
    ``per_row``: forward nodes (by target function or placeholder name) that already hold B·repeats rows (a
    token model's scores read at several positions); they and what is computed from them are not repeated."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    forward_values: set[fx.Node] = set()   # batch-major tensors computed before the relevance section
    rows_already: set[fx.Node] = set()     # forward values that hold B·repeats rows already (``per_row``)
    repeated: dict[fx.Node, fx.Node] = {}
    repeats = None
    in_relevance = False
    first_input = None

    def relevance_arg(node: fx.Node) -> fx.Node:
        if node not in forward_values:
            return env[node]
        if node not in repeated:
            merged = node.meta.get("lrpc_batch_inner") == -1
            repeated[node] = graph.call_function(repeat_merged_batch if merged else repeat_batch,
                                                 (env[node], repeats, *((env[first_input],) if merged else ())),
                                                 name=f"repeat_{node.name}")
        return repeated[node]

    for node in module.graph.nodes:
        if node.op == "placeholder":
            env[node] = graph.node_copy(node, env.__getitem__)
            first_input = first_input or node
            if node.name in per_row:
                rows_already.add(node)
            elif node.name != "target":
                forward_values.add(node)
            continue
        if repeats is None:
            repeats = graph.placeholder("repeats", default_value=1)
        in_relevance = in_relevance or node.target is kernels.resolve_target
        if in_relevance:
            env[node] = graph.node_copy(node, relevance_arg)
        else:
            env[node] = graph.node_copy(node, env.__getitem__)
            if node.target in per_row or any(i in rows_already for i in node.all_input_nodes):
                rows_already.add(node)   # computed from B·repeats rows: the head after the picked positions
            elif node.op != "get_attr":
                forward_values.add(node)
    if not in_relevance:
        raise AssertionError("the generated module has no relevance section (no resolve_target node)")
    return fx.GraphModule(module, graph, class_name="MultiTargetRelevanceModule")
