"""Which node of the compiled graph a CRP layer names, and where its channels and samples sit.

A user names a layer as their model does (``"features.16"``, ``"layer4"``, ``"encoder.layers.3.mlp"``) or by
lrpc's node name (``"features_16"``, listed in ``explainer.layer_names``). A module path means the module's
*output*: the last node that runs inside the module. For a leaf module that is its one op; for a block
(``"layer4"``) it is the block's last op (its final ReLU). Where the rules fold BatchNorm into the conv before it
(the zennit presets, as zennit's canonizers do), the conv node computes the BatchNorm's output: the conv's path
and the BatchNorm's path both name that node, exactly as the conv module's output does in a canonized zennit model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from ..errors import LrpcError
from ..op_kinds import kind_of
from ..ops import sample_layout, shape


@dataclass(frozen=True)
class Layer:
    """A conditioned layer: the forward node whose output relevance is masked, and how to read its tensor."""

    name: str            # the user's spelling
    node: str            # the forward node
    relevance: str       # the node of the generated module holding that node's (fan-in summed) relevance
    shape: tuple         # the node's output shape on the example input
    batch_dim: int
    channel_dim: int

    @property
    def channels(self) -> int:
        return self.shape[self.channel_dim]


def _module_paths(node: fx.Node) -> list[str]:
    """Every module the node ran inside (outermost first), and the BatchNorm folded into it."""
    paths = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values() if path]
    folded = node.meta.get("lrpc_folded")
    return paths + [folded] if folded else paths


def _channel_dim(plans: dict, node: str) -> int:
    """Dimension 1 of a conv's feature map, the last of a linear map's (tokens [B, T, D], features [B, D]).

    Read off the nearest conv or linear map the node's value comes from through shape-keeping ops (ReLU, a
    residual add, a norm); a node with none behind it (the input, a token embedding) counts rank-3 and wider
    tensors from dimension 1 when they have 4 or more dimensions, from the last otherwise."""
    plan = plans[node]
    rank = len(shape(plan.node))
    seen = set()
    while plan is not None and plan.node.name not in seen:
        seen.add(plan.node.name)
        info = plan.info
        if kind_of(plan).applies_rule and info.map == "conv":
            return 1
        if kind_of(plan).applies_rule and info.map == "linear":
            return rank - 1
        same = [i for i in info.inputs if i.name in plans and shape(i) == shape(plan.node)]
        plan = plans[same[0].name] if same else None
    return 1 if rank >= 4 or rank == 2 else rank - 1


def valid_names(plans: dict) -> str:
    paths = sorted({path for plan in plans.values() for path in _module_paths(plan.node)},
                   key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.split(".")])
    return f"module paths: {', '.join(paths)}; node names: {', '.join(plans)}"


def resolve(explainer, build, name: str) -> Layer:
    """The ``Layer`` a user's name means; ``LrpcError`` listing the valid names when it means none."""
    if not isinstance(name, str) or not name:
        raise LrpcError(f"a layer is named by a module path (e.g. 'features.16') or a node name, got {name!r}")
    plans = build.plans
    node_name = name if name in plans else None
    if node_name is None:
        canonical = next(iter(plans.values())).node.graph
        inside = [n for n in canonical.nodes if name in _module_paths(n)]
        if not inside:
            modules = dict(explainer._model.named_modules()) if explainer._model is not None else {}
            if name in modules:
                raise LrpcError(f"layer {name!r} ({type(modules[name]).__name__}) is not on the relevance path: no "
                                "op of it is in the captured graph of the explained output (its output does not "
                                f"reach it, or it is a dropout or an identity); {valid_names(plans)}")
            raise LrpcError(f"unknown layer {name!r}; {valid_names(plans)}")
        last = inside[-1]
        if last.name not in plans:
            raise LrpcError(f"layer {name!r} (node {last.name!r}) is not on the relevance path: its output does not "
                            f"reach the explained output; {valid_names(plans)}")
        node_name = last.name
    relevance = build.pairings[node_name].relevance
    if relevance is None:
        raise LrpcError(f"layer {name!r} (node {node_name!r}) receives no relevance; {valid_names(plans)}")
    node = plans[node_name].node
    layout = sample_layout(node)
    if layout is None or layout[1] is not None:
        raise LrpcError(f"layer {name!r} (node {node_name!r}, shape {shape(node)}) does not hold one sample per "
                        "index of one dimension (its batch is merged with other sizes or absent); condition on the "
                        "module around it instead")
    channel_dim = _channel_dim(plans, node_name)
    if channel_dim == layout[0]:
        raise LrpcError(f"layer {name!r} (node {node_name!r}, shape {shape(node)}) has no channel dimension apart "
                        "from its batch")
    return Layer(name, node_name, relevance, tuple(shape(node)), layout[0], channel_dim)
