"""The paired graph as a ``networkx.DiGraph``: one node per forward node, edges along the data flow.

Node attributes (only those that apply are set, and every value is JSON-safe, so the graph round-trips through
``node_link_data`` / ``node_link_graph`` unchanged):

- always: ``order`` (graph position), ``op`` (fx op), ``kind`` (relevance op kind, ``off-path`` where no
  relevance arrives), ``target``, ``on_path``;
- where known: ``module`` / ``module_type`` (qualified name and type), ``block`` (the residual block holding it),
  ``shape`` (output shape as a list);
- on the relevance path: ``relevance_node`` (the generated node holding its relevance), ``message_nodes`` (the
  messages its op sends to its inputs), ``absorbs`` ("bias" / "stabiliser" where the op may absorb relevance);
  linear maps: ``map``, ``rule`` (``rule.describe()``); max-pools: ``maxpool``; adds: ``splitting``,
  ``skip_kind`` (identity / projection / generic), ``skip_operand``, ``skip_input``, ``main_input``;
- with an explanation: ``relevance`` (received), ``relevance_out`` (emitted), ``delta`` (emitted − received:
  created > 0, lost < 0), ``absorbed`` (−delta where the op has a bias or stabiliser), as the batch mean or
  one sample's value.

Edge attributes: ``message`` (the generated message node, where relevance flows back along the edge), ``role``
for add operands (``skip`` / ``main``, or ``operand`` for a generic add, with ``operand`` = index) and gates
(``gate``: the gate factor receives no relevance).

Residual blocks are derived from the graph, not from class names: a block is the module an add lives in
(``layer1.0`` for a torchvision ResNet), and a node belongs to the innermost block whose path prefixes its module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx
import torch
import torch.fx as fx

from ..canonicalize import module_of
from ..op_kinds import kind_of
from ..ops import shape
from .accounting import absorber, node_flows

if TYPE_CHECKING:
    from ..runtime import Explainer, Explanation

DRAWN_OPS = ("placeholder", "call_function")


def forward_graph(explainer: "Explainer") -> fx.Graph:
    """The canonical forward graph the explainer was compiled from (its plans point into it)."""
    return next(iter(explainer.plans.values())).node.graph


def residual_blocks(explainer: "Explainer") -> list[str]:
    return sorted({p.module for p in explainer.plans.values() if kind_of(p).residual_join and p.module})


def block_of(module: str | None, blocks: list[str]) -> str | None:
    if not module:
        return None
    inside = [b for b in blocks if module == b or module.startswith(b + ".")]
    return max(inside, key=len) if inside else None


def build_graph(explainer: "Explainer", explanation: "Explanation | None" = None,
                sample: int | None = None) -> nx.DiGraph:
    fx_graph = forward_graph(explainer)
    gm = fx_graph.owning_module
    blocks = residual_blocks(explainer)
    g = nx.DiGraph(rules=explainer.rules.name, rules_description=explainer.rules.description,
                   start=explainer.rules.start, input_shape=list(explainer.input_shape),
                   num_classes=explainer.num_classes, blocks=blocks)
    nodes = [n for n in fx_graph.nodes if n.op in DRAWN_OPS]
    for order, n in enumerate(nodes):
        g.add_node(n.name, **_node_attributes(n, order, gm, explainer, blocks))
    drawn = {n.name for n in nodes}
    for n in nodes:
        for source in n.all_input_nodes:
            if source.name in drawn:
                g.add_edge(source.name, n.name, **_edge_attributes(source, n, explainer))
    if explanation is not None:
        add_relevance(g, explanation, sample)
    return g


def _node_attributes(n: fx.Node, order: int, gm: fx.GraphModule, explainer: "Explainer",
                     blocks: list[str]) -> dict:
    plan = explainer.plans.get(n.name)
    pairing = explainer.pairings.get(n.name)
    module, module_type = (plan.module, plan.module_type) if plan else module_of(n, gm)
    on_path = pairing is not None and pairing.relevance is not None
    attrs = {"order": order, "op": n.op, "kind": plan.info.kind if on_path else "off-path",
             "target": _target_text(n, gm), "on_path": on_path}
    optional = {"module": module, "module_type": module_type, "block": block_of(module, blocks),
                "shape": None if shape(n) is None else list(shape(n))}
    if on_path:
        optional.update(relevance_node=pairing.relevance,
                        message_nodes=[message for _, message in pairing.messages], absorbs=absorber(plan))
        optional.update(kind_of(plan).dump_choice(plan))
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


SHORT_PREFIXES = {"_operator.": "operator.", "torch.nn.functional.": "F."}


def _target_text(n: fx.Node, gm: fx.GraphModule) -> str:
    """What the node calls, short: ``aten.conv2d``, ``aten.add``, ``operator.getitem``."""
    if n.op == "placeholder":
        return "input"
    packet = getattr(n.target, "overloadpacket", None)
    if packet is not None:
        return f"aten.{packet.__name__}"
    name = f"{getattr(n.target, '__module__', None) or ''}.{getattr(n.target, '__name__', n.target)}".lstrip(".")
    for long, short in SHORT_PREFIXES.items():
        if name.startswith(long):
            return short + name[len(long):]
    return name


def _edge_attributes(source: fx.Node, consumer: fx.Node, explainer: "Explainer") -> dict:
    attrs = {}
    pairing = explainer.pairings.get(consumer.name)
    if pairing is not None:
        messages = [message for producer, message in pairing.messages if producer == source.name]
        if messages:
            attrs["message"] = messages[0]
    plan = explainer.plans.get(consumer.name)
    if plan is None:
        return attrs
    attrs.update(kind_of(plan).edge_role(plan, source))
    return attrs


def add_relevance(g: nx.DiGraph, explanation: "Explanation", sample: int | None = None) -> None:
    """Annotate nodes with relevance received / emitted / created, as batch means or for one ``sample``."""
    batch = explanation.layer_sum_matrix.shape[0]
    if sample is not None and not -batch <= sample < batch:
        raise IndexError(f"sample {sample} out of range for a batch of {batch}")

    def value(t: torch.Tensor) -> float:
        return float(t.mean() if sample is None else t[sample])

    g.graph.update(relevance_of="batch mean" if sample is None else f"sample {sample}",
                   start_relevance=value(explanation.start))
    for name, flow in node_flows(explanation).items():
        attrs = g.nodes[name]
        attrs.update(relevance=value(flow.received), relevance_out=value(flow.emitted), delta=value(flow.delta))
        if "absorbs" in attrs:
            attrs["absorbed"] = -attrs["delta"]
