"""Step 4 of the pipeline: pair every forward node with its relevance op in ONE generated GraphModule.

The generated ``forward(x, target=None)`` runs the canonical forward graph once, then walks it in reverse
topological order. A node's relevance is the sum of the messages its consumers send it (fan-out); its kind
(``lrpc.op_kinds``) turns that into one message per tensor input. Forward activations are reused, never
recomputed.

Per-sample message totals are stacked into ``S`` [B, E] (E = edges carrying relevance, plus the start edge).
Two constant 0/1 matrices turn them into the readouts: ``S @ cut`` is the relevance crossing the graph cut just
after each node (for a conserving rule set every column equals the start relevance — this is what
``layer_sums`` reports: a residual branch alone does not carry all the relevance, the cut does), and
``S @ into`` the relevance arriving at each node.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx

from . import kernels, windows
from .annotate import NodePlan
from .errors import LrpcError
from .op_kinds import kind_of
from .ops import SOURCE, batch_layout


@dataclass
class Pairing:
    """The relevance side of one forward node, for dumps and debugging."""

    relevance: str | None              # the node holding this node's (fan-in summed) relevance
    messages: list[tuple[str, str]]    # (input node, message node) pairs this node's op emitted


class RelevancePass:
    """Writes the generated module. A node's kind (``lrpc.op_kinds``) emits its relevance step through
    ``call``, ``send`` and ``constants``, reading ``env`` (forward node -> its copy), ``plans`` and
    ``maxpool_indices``."""

    def __init__(self, gm: fx.GraphModule, plans: dict[fx.Node, NodePlan], logits: fx.Node, start: str,
                 dtype: torch.dtype, keep: Iterable[str] = (), debug: bool = False):
        self.gm, self.plans, self.logits, self.start, self.dtype = gm, plans, logits, start, dtype
        self.debug = debug   # check every forward activation and relevance message for NaN/Inf
        self.keep = list(keep)
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.inbox: dict[fx.Node, list[tuple[fx.Node, fx.Node]]] = {}   # producer -> [(message, its batch sum)]
        self.edges: list[tuple[fx.Node, fx.Node | None]] = []
        self.edge_sums: list[fx.Node] = []
        self.pairings: dict[str, Pairing] = {}
        self._constants: dict[tuple, list[str | None]] = {}
        self.relevance_of: dict[fx.Node, fx.Node] = {}
        self.maxpool_indices: dict[fx.Node, fx.Node] = {}
        self.start_node: fx.Node | None = None   # one row per explained sample: sets the sample count of sums

    # ------------------------------------------------------------------------------------------------ helpers
    def call(self, fn, args, kwargs=None, name=None) -> fx.Node:
        return self.graph.create_node("call_function", fn, tuple(args), kwargs or {}, name=name)

    def send(self, producer: fx.Node, consumer: fx.Node | None, message: fx.Node, total: fx.Node | None = None):
        """Record a message; ``total`` reuses an already computed batch sum when the op preserves it."""
        if self.debug and message.target is not kernels.check_finite:  # pass-through ops resend a checked tensor
            where = consumer.name if consumer is not None else "start"
            message = self.call(kernels.check_finite, (message,),
                                {"node": where, "what": f"the relevance message to {producer.name!r}"},
                                name=f"finite_{message.name}")
        if total is None:
            dim, inner = batch_layout(producer)
            total = (self.call(kernels.batch_sum, (message,), name=f"sum_{message.name}") if inner is None and
                     dim == 0 else self.call(kernels.sample_sums, (message, self.start_node),
                                             {"dim": dim, "inner": inner or 1}, name=f"sum_{message.name}"))
        self.inbox.setdefault(producer, []).append((message, total))
        self.edges.append((producer, consumer))
        self.edge_sums.append(total)
        if consumer is not None:
            self.pairings[consumer.name].messages.append((producer.name, message.name))

    def constants(self, node: fx.Node, rule, weight, bias, nonneg_input: bool) -> list[fx.Node | None]:
        """get_attr nodes for a rule's constants, computed once per (rule, parameters): a module used twice,
        or two nodes sharing a weight, share the buffers."""
        key = (rule.describe(), id(weight), id(bias), nonneg_input)
        if key not in self._constants:
            names = []
            for name, value in rule.constants(weight, bias, nonneg_input=nonneg_input).items():
                if value is None:
                    names.append(None)
                    continue
                attr = f"lrpc_const_{node.name}_{name}"
                self.gm.register_buffer(attr, value.detach().clone())
                names.append(attr)
            self._constants[key] = names
        return [None if name is None else self.graph.get_attr(name) for name in self._constants[key]]

    # ------------------------------------------------------------------------------------------------- driver
    def run(self) -> tuple[fx.GraphModule, list[str], dict[str, Pairing]]:
        nodes = list(self.gm.graph.nodes)
        for n in nodes:   # the image, or a token model's ids and attention mask
            if n.op == "placeholder":
                self.env[n] = self.graph.placeholder(n.name)
        x_old = next(n for n in nodes if n.meta.get(SOURCE))   # the input layer: relevance is reported here
        target = self.graph.placeholder("target", default_value=None)
        for n in nodes:
            if n.op not in ("placeholder", "output"):
                self.env[n] = self.copy_forward(n)
                if self.debug and n in self.plans:
                    self.env[n] = self.call(kernels.check_finite, (self.env[n],),
                                            {"node": n.name, "what": "the forward activation"}, name=f"finite_{n.name}")
        logits = self.env[self.logits]
        resolved = self.call(kernels.resolve_target, (logits, target), name="explained_target")
        start = self.start_node = self.call(kernels.start_relevance, (logits, resolved), {"mode": self.start},
                                            name="start")
        for n in nodes:
            if n in self.plans:
                self.pairings[n.name] = Pairing(None, [])
        self.send(self.logits, None, start)

        input_relevance = None
        for n in reversed(nodes):
            if n not in self.inbox:
                continue
            relevance, total = self.gather(n)
            self.relevance_of[n] = relevance
            self.pairings[n.name].relevance = relevance.name
            if n is x_old:
                input_relevance = relevance
                continue
            self.emit(self.plans[n], relevance, total)
        if input_relevance is None:
            input_relevance = self.call(torch.zeros_like, (self.env[x_old],), name="rel_x")

        layers = [n for n in nodes if n in self.inbox]
        cut, into = self.readout_matrices(nodes, layers)
        self.gm.register_buffer("lrpc_cut", cut)
        self.gm.register_buffer("lrpc_into", into)
        sums = self.call(torch.stack, (self.edge_sums, 1), name="edge_sums")
        layer_sums = self.call(operator.matmul, (sums, self.graph.get_attr("lrpc_cut")), name="layer_sums")
        node_sums = self.call(operator.matmul, (sums, self.graph.get_attr("lrpc_into")), name="node_sums")
        kept = self.kept_tensors(nodes)
        self.graph.output((logits, resolved, input_relevance, layer_sums, node_sums, kept))
        module = fx.GraphModule(self.gm, self.graph, class_name="RelevanceModule")
        return module, [n.name for n in layers], self.pairings

    def copy_forward(self, n: fx.Node) -> fx.Node:
        """The forward node in the generated graph. A winner-take-all max-pool keeps the arg-max indices its
        forward finds anyway (or that its ``_with_indices`` form returns), so its relevance op need not run the
        pool a second time."""
        plan = self.plans.get(n)
        if plan is None or plan.maxpool != "winner":
            return self.graph.node_copy(n, self.env.__getitem__)
        pool_node = plan.info.extra["with_indices"]
        if pool_node is not None:
            self.maxpool_indices[n] = self.call(operator.getitem, (self.env[pool_node], 1), name=f"{n.name}_indices")
            return self.graph.node_copy(n, self.env.__getitem__)
        pooled = self.call(windows.max_pool, (self.env[plan.info.inputs[0]],), plan.info.extra["window"],
                           name=f"{n.name}_with_indices")
        self.maxpool_indices[n] = self.call(operator.getitem, (pooled, 1), name=f"{n.name}_indices")
        return self.call(operator.getitem, (pooled, 0), name=n.name)

    def kept_tensors(self, nodes: list[fx.Node]) -> dict[str, tuple[fx.Node, fx.Node]]:
        """(relevance, activation) of the nodes the user asked to keep; unknown names fail with the valid ones."""
        by_name = {n.name: n for n in nodes if n in self.inbox}
        unknown = [name for name in self.keep if name not in by_name]
        if unknown:
            raise LrpcError(f"keep= names {unknown} are not nodes that carry relevance; valid names: "
                            f"{', '.join(by_name)}")
        return {name: (self.relevance_of[by_name[name]], self.env[by_name[name]]) for name in self.keep}

    def gather(self, n: fx.Node) -> tuple[fx.Node, fx.Node]:
        messages = self.inbox[n]
        relevance, total = messages[0]
        for message, message_total in messages[1:]:
            relevance = self.call(operator.add, (relevance, message))
            total = self.call(operator.add, (total, message_total))
        return relevance, total

    def readout_matrices(self, nodes, layers):
        position = {n: i for i, n in enumerate(nodes)}
        cut = torch.zeros(len(self.edges), len(layers), dtype=self.dtype)
        into = torch.zeros_like(cut)
        column = {n: j for j, n in enumerate(layers)}
        for e, (producer, consumer) in enumerate(self.edges):
            end = position[consumer] if consumer is not None else len(nodes)
            for j, n in enumerate(layers):
                if position[producer] <= position[n] < end:
                    cut[e, j] = 1.0
            into[e, column[producer]] = 1.0
        return cut, into

    # ---------------------------------------------------------------------------------------------- per kind
    def emit(self, plan: NodePlan, r: fx.Node, total: fx.Node) -> None:
        """The node's relevance step, written by its kind (``lrpc.op_kinds``)."""
        kind_of(plan).emit(self, plan, r, total)
