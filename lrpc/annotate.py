"""Step 3 of the pipeline: give every node on the relevance path its op and its rule, or fail loudly.

``annotate`` looks every node up in the op table, walks back from the logits to find the nodes relevance
reaches, and refuses to compile (default-deny) if any of them has no relevance op, listing them all.
It then lets each node's kind (``lrpc.op_kinds``) assign rules (``Rules.rule_for``), max-pool modes and
splitting policies, and check each choice against the layer it lands on (e.g. z^B needs weights; the 2x2
max-pool stand-in must fit the pool's shape).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from .canonicalize import module_of
from .errors import LrpcError
from .kernels import check_start
from .op_kinds import kind_of, lookup
from .ops import SOURCE, Context, OpInfo, Unsupported, describe_target, op_info, shape
from .rule_set import LayerContext, Rules
from .rules import Rule
from .splitting import AddKind, Splitting


@dataclass
class NodePlan:
    """Everything the relevance pass needs to know about one forward node."""

    node: fx.Node
    info: OpInfo
    module: str | None
    module_type: str | None
    nonneg: bool = False
    rule: Rule | None = None
    maxpool: str | None = None
    maxpool_epsilon: float = 0.0
    splitting: Splitting | None = None
    add_kind: AddKind | None = None
    layer: LayerContext | None = None
    transform: str | None = None   # the kind a rule set chose for the op's relevance (``transformer_op``)


def _audit_line(node: fx.Node, gm: fx.GraphModule, reason: str) -> str:
    path, _ = module_of(node, gm)
    return (f"  - node {node.name!r}: op={node.op}, target={describe_target(node, gm)}, "
            f"module={path or '-'}, shape={shape(node)}: {reason}")


def annotate(gm: fx.GraphModule, rules: Rules) -> tuple[dict[fx.Node, NodePlan], fx.Node]:
    ctx = Context(gm)
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1 and any(n.meta.get(SOURCE) for n in placeholders):
        raise LrpcError(f"lrpc explains models with one tensor input; this one takes {len(placeholders)} "
                        f"({', '.join(n.name for n in placeholders)})")
    output = next(n for n in nodes if n.op == "output")
    logits = output.args[0]
    if not isinstance(logits, fx.Node) or shape(logits) is None or len(shape(logits)) not in (1, 2):
        raise LrpcError(f"the model must return one logits tensor of shape [batch, classes] (or one score per "
                        f"sample, [batch] or [batch, 1]); it returns "
                        f"{logits if not isinstance(logits, fx.Node) else shape(logits)}")
    check_start(rules.start, tuple(shape(logits)))

    infos: dict[fx.Node, OpInfo | Unsupported] = {}
    for n in nodes:
        try:
            infos[n] = op_info(n, ctx)
        except Unsupported as exc:
            infos[n] = exc
    transforms: dict[fx.Node, str] = {}
    for n, info in infos.items():
        if isinstance(info, OpInfo):
            infos[n], transform = transformer_op(info, rules)
            if transform is not None:
                transforms[n] = transform

    live: set[fx.Node] = {logits}
    for n in reversed(nodes):
        if n not in live:
            continue
        if isinstance(infos[n], OpInfo):
            live.update(infos[n].inputs)
        else:  # keep walking past an unsupported node so the audit lists every one of them at once
            live.update(i for i in n.all_input_nodes if shape(i) is not None)
    unsupported = [n for n in nodes if n in live and isinstance(infos[n], Unsupported)]
    if unsupported:
        lines = "\n".join(_audit_line(n, gm, str(infos[n])) for n in unsupported)
        raise LrpcError(f"{len(unsupported)} node(s) on the relevance path have no relevance op "
                        f"(lrpc never falls back to the gradient):\n{lines}")

    plans: dict[fx.Node, NodePlan] = {}
    weighted = [n for n in nodes if n in live and lookup(infos[n].kind).weighted(infos[n])]
    scope = Scope(gm, infos, order, {n: i for i, n in enumerate(weighted)}, len(weighted))
    for n in nodes:
        if n not in live:
            continue
        info = infos[n]
        path, type_name = module_of(n, gm)
        plan = NodePlan(n, info, path, type_name, transform=transforms.get(n))
        plan.nonneg = info.nonneg == "always" or (info.nonneg == "inputs" and bool(info.inputs)
                                                   and all(plans[i].nonneg for i in info.inputs if i in plans))
        kind = kind_of(plan)
        kind.configure(plan, rules, scope)
        if kind.residual_join:
            scope.adds_before += 1
        plans[n] = plan
    return plans, logits


@dataclass
class Scope:
    """What a kind's ``configure`` may read of the whole graph."""

    gm: fx.GraphModule
    infos: dict
    order: dict[fx.Node, int]
    weighted_index: dict[fx.Node, int]
    n_weighted: int
    adds_before: int = 0   # residual joins before the node being planned

    def layer_context(self, plan: NodePlan) -> LayerContext:
        n = plan.node
        return LayerContext(n.name, plan.module, plan.module_type, plan.info.map, self.weighted_index.get(n, -1),
                            self.n_weighted, self.adds_before, is_attention_projection(n, self.infos))


def transformer_op(info: OpInfo, rules: Rules) -> tuple[OpInfo, str | None]:
    """The rule set's choice for the non-linear ops of transformers (docs/transformers.md): op handlers say what an op
    is, its kind's ``under_rules`` picks its relevance. Returns the (possibly rewired) op and the name of the kind
    that emits its relevance instead, or None."""
    return lookup(info.kind).under_rules(info, rules)


def is_attention_projection(node: fx.Node, infos: dict) -> bool:
    """Whether a linear map makes attention's q, k or v or reads its output, through reshapes, transposes,
    splits and constant scalings only: LXT's γ passes those by (``nn.MultiheadAttention`` never runs them as
    modules), and a compiler decides it from the graph, for every spelling alike."""
    def carrier(n: fx.Node) -> bool:
        info = infos.get(n)
        return isinstance(info, OpInfo) and lookup(info.kind).carries_value(n)

    def is_attention(n: fx.Node) -> bool:
        info = infos.get(n)
        return isinstance(info, OpInfo) and lookup(info.kind).attention

    stack, seen = list(node.users), set()
    while stack:   # forward: into an attention op
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if is_attention(n):
            return True
        if carrier(n) or (n.op == "call_function" and shape(n) is None):   # a split's list of parts, getitem
            stack.extend(n.users)
    n = node.all_input_nodes[0] if node.all_input_nodes else None
    while n is not None:   # backward: out of an attention op
        if is_attention(n):
            return True
        n = n.all_input_nodes[0] if carrier(n) and n.all_input_nodes else None
    return False
