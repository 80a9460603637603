"""Step 3 of the pipeline: give every node on the relevance path its op and its rule, or fail loudly.

``annotate`` looks every node up in the op table, walks back from the logits to find the nodes relevance
reaches, and refuses to compile (default-deny) if any of them has no relevance op, listing them all.
It then assigns rules (``Rules.rule_for``), max-pool modes and splitting policies, and checks each choice
against the layer it lands on (e.g. z^B needs weights; the 2x2 max-pool stand-in must fit the pool's shape).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.fx as fx

from .canonicalize import module_of
from .errors import LrpcError
from .kernels import check_start
from .linear_maps import LINEAR_MAPS
from .ops import SOURCE, Context, OpInfo, Unsupported, describe_target, op_info, packet, shape
from .ops.attention import is_softmax_output
from .rule_set import LayerContext, Rules
from .rules import Pass, Rule
from .splitting import AddKind, Splitting, classify_add


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
    transform: str | None = None   # the rule set's relevance for a non-linear op (``transformer_op``)


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
    weighted = [n for n in nodes if n in live and infos[n].kind == "linear" and LINEAR_MAPS[infos[n].map].weighted]
    weighted_index = {n: i for i, n in enumerate(weighted)}
    adds_before = 0
    for n in nodes:
        if n not in live:
            continue
        info = infos[n]
        path, type_name = module_of(n, gm)
        plan = NodePlan(n, info, path, type_name, transform=transforms.get(n))
        plan.nonneg = info.nonneg == "always" or (info.nonneg == "inputs" and bool(info.inputs)
                                                   and all(plans[i].nonneg for i in info.inputs if i in plans))
        if info.kind == "linear":
            n.meta["lrpc_weighted"] = LINEAR_MAPS[info.map].weighted
            plan.layer = LayerContext(n.name, path, type_name, info.map, weighted_index.get(n, -1), len(weighted),
                                      adds_before, is_attention_projection(n, infos))
            plan.rule = rules.rule_for(plan.layer)
            _check_rule(plan, gm)
        elif info.kind == "maxpool":
            plan.maxpool = rules.maxpool
            plan.maxpool_epsilon = rules.maxpool_epsilon if rules.maxpool == "avg2x2" else 0.0
            _check_maxpool(plan, gm)
        elif info.kind == "add":
            plan.splitting = rules.splitting
            plan.add_kind = classify_add(n, info.inputs, order)
            adds_before += 1
        plans[n] = plan
    return plans, logits


def transformer_op(info: OpInfo, rules: Rules) -> tuple[OpInfo, str | None]:
    """The rule set's choice for the non-linear ops of transformers (docs/transformers.md): op handlers say what an op
    is, this picks its relevance. Returns the (possibly rewired) op and the kernel tag ``relevance_pass`` emits."""
    extra = info.extra
    if info.kind == "batchnorm" and "batchnorm" in extra and rules.batchnorm == "affine":
        return info, "batchnorm_affine"
    if info.kind == "pass":
        if "layernorm" in extra and rules.layernorm == "frozen_std":
            return info, "layernorm_frozen_std"
        if "centering" in extra and rules.layernorm == "frozen_std":
            return info, "centering"
        if "constant_add" in extra and rules.constant_add == "proportional":
            return info, "constant_add"
        if "softmax_dim" in extra and rules.attention == "attnlrp":
            return info, "softmax"
    elif info.kind == "product" and "activated" in extra and rules.gated_product == "frozen_gate":
        gate = extra["activated"]
        signal = next(i for i in info.inputs if i is not gate)
        return OpInfo("gate", (signal,), extra={"gate": gate}), None
    elif rules.attention == "attnlrp":
        if info.kind == "attention":   # relevance also reaches the queries and keys, through the softmax
            query, key, value, _ = extra["operands"]
            return replace(info, inputs=(query, key, value)), "attnlrp"
        if info.kind == "frozen_matmul" and is_softmax_output(extra["operands"][extra["frozen"]]):
            return OpInfo("matmul_product", tuple(extra["operands"])), None
    return info, None


# ops that carry attention's q, k, v or output between the projection and the attention op unchanged in value
_SCALINGS = {torch.ops.aten.mul, torch.ops.aten.div, torch.ops.aten.clone, torch.ops.aten.contiguous,
             torch.ops.aten.dropout, torch.ops.aten.alias, torch.ops.aten._to_copy}
_CARRIERS = ("reshape", "permute", "move", "cat", "stack")
_ATTENTION_KINDS = ("attention", "frozen_matmul", "matmul_product")


def is_attention_projection(node: fx.Node, infos: dict) -> bool:
    """Whether a linear map makes attention's q, k or v or reads its output, through reshapes, transposes,
    splits and constant scalings only: LXT's γ passes those by (``nn.MultiheadAttention`` never runs them as
    modules), and a compiler decides it from the graph, for every spelling alike."""
    def carrier(n: fx.Node) -> bool:
        info = infos.get(n)
        return isinstance(info, OpInfo) and (info.kind in _CARRIERS or (info.kind == "pass" and
                                                                          packet(n) in _SCALINGS))

    def is_attention(n: fx.Node) -> bool:
        info = infos.get(n)
        return isinstance(info, OpInfo) and info.kind in _ATTENTION_KINDS

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


def _check_rule(plan: NodePlan, gm: fx.GraphModule) -> None:
    rule, info, n = plan.rule, plan.info, plan.node
    problem = None
    if rule.needs_weights and not LINEAR_MAPS[info.map].weighted:
        problem = f"rule {rule.name} needs weights but {getattr(packet(n), '__name__', info.map)} has none"
    elif isinstance(rule, Pass) and shape(info.inputs[0]) != shape(n):
        problem = f"rule pass needs equal input and output shapes, got {shape(info.inputs[0])} -> {shape(n)}"
    elif rule.name == "zbox" and info.map == "conv" and info.args[3] != 1:
        problem = "rule zbox on a grouped conv"
    elif rule.name == "zbox" and info.map == "conv_transpose":
        problem = "rule zbox on a transposed conv"
    if problem:
        raise LrpcError(f"node {n.name!r} ({describe_target(n, gm)}): {problem}")


def _check_maxpool(plan: NodePlan, gm: fx.GraphModule) -> None:
    n, window = plan.node, plan.info.extra["window"]
    dilation = window.get("dilation", ())
    if plan.maxpool == "proportional" and any(d != 1 for d in dilation):
        raise LrpcError(f"node {n.name!r}: proportional max-pool relevance needs dilation 1, got {dilation}")
    if plan.maxpool == "avg2x2":
        spatial = tuple(shape(plan.info.inputs[0])[2:])
        if tuple(shape(n)[2:]) != tuple(s // 2 for s in spatial):
            raise LrpcError(f"node {n.name!r}: the 2x2 average stand-in for max-pool maps {spatial} to "
                            f"{tuple(s // 2 for s in spatial)}, but the pool's output is {tuple(shape(n)[2:])}; use "
                            "maxpool='winner' or 'proportional' for this model")
