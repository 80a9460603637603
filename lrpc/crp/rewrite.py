"""K concepts in one relevance pass: rewrite the generated module so that only the part below a layer is batched.

``conditioned_module`` copies a generated relevance module (``relevance_pass``) and changes three things:

1. At the relevance of each conditioned layer it inserts ``condition``: the relevance is repeated K times along
   the batch (image-major: row b·K + k is image b under condition k) and multiplied by condition k's channel
   mask. The forward pass and the relevance above the first conditioned layer run once, on the B images.
2. Every forward activation a batched relevance op reads is repeated K times right before its first use, in
   the sample layout the activation has (``ops.sample_layout``: attention's merged [L·B, E] included). For
   one image (the common case: one decision, K concepts) the z-rule kernels read the image's activations as
   they are, so their denominators are computed once, not K times.
3. Relevance that reaches a node without passing through every conditioned layer is dropped where it meets
   relevance that did (a fan-in sum below a layer that is not a cut of the graph, e.g. a skip connection around
   a conv inside a residual block). Each message carries a *level*: how many of the conditioned layers it has
   passed; a sum keeps its terms of the highest level. This is zennit-crp's ``exclude_parallel=True``: a
   conditional heatmap shows the relevance that flows through the concept, nothing else.

With ``per_row_targets`` the start relevance itself is already batched (each condition explains its own
class): the logits are repeated and the whole relevance pass runs on B·K rows.

The rewritten ``forward(x, target, repeats, row_targets, mask_0, …)`` returns (logits, explained target [B],
input relevance [B·K, …], (masked relevance at each layer [B·K, …], …)); everything else the generated module
computes (per-edge sums, kept tensors) is dropped, and fx removes the ops only it needed.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.fx as fx

from .. import kernels, rules
from ..errors import LrpcError
from ..ops import sample_layout
from ..splitting import ancestors, split_add
from .layers import Layer

# Relevance ops whose forward activations may have batch 1 against K rows of relevance (with these extra keyword
# arguments): what they compute from the activations alone — a rule's denominator z, half of its cost; the shares
# of a residual add — is then computed once for the image instead of K times, and broadcasts over the rows (as it
# does for an all-ones first-layer input). Used when one image is explained under K conditions.
SHARED_ACTIVATION_OPS = {rules.alpha_beta_kernel: {}, rules.gamma_kernel: {}, rules.epsilon_kernel: {},
                         rules.uniform_kernel: {}, split_add: {"shared_rows": True}}


def repeat_rows(t, rows: torch.Tensor, repeats: int, *, dim: int, inner: int | None):
    """``t`` with each of its samples repeated ``repeats`` times in place (image-major). The samples sit in
    dimension ``dim``, alone (``inner`` None) or as [outer, B, inner] flattened; ``rows`` has one row per image."""
    if repeats == 1:
        return t
    if inner is None:
        return t.repeat_interleave(repeats, dim)
    batch = rows.shape[0]
    size = t.shape[dim]
    inner = size // batch if inner == -1 else inner   # batch-major [B·n] (``batch_layouts``)
    split = t.reshape(*t.shape[:dim], size // (batch * inner), batch, inner, *t.shape[dim + 1:])
    return split.repeat_interleave(repeats, dim + 1).reshape(*t.shape[:dim], size * repeats, *t.shape[dim + 1:])


def condition(r: torch.Tensor, mask: torch.Tensor, *, expand: bool, batch_dim: int,
              channel_dim: int) -> torch.Tensor:
    """Relevance ``r`` times the per-condition channel mask [K, C]; ``expand`` first repeats each image's rows K
    times (from B rows to B·K, image-major)."""
    conditions, channels = mask.shape
    if expand:
        r = r.repeat_interleave(conditions, batch_dim)
    rows = r.shape[batch_dim]
    shaped = mask.to(r.dtype).repeat(rows // conditions, 1).reshape(rows, channels, *([1] * (r.dim() - 2)))
    return r * shaped.movedim((0, 1), (batch_dim, channel_dim))


def row_targets(resolved: torch.Tensor, targets: torch.Tensor, repeats: int) -> torch.Tensor:
    """Each row's class: its condition's (``targets`` [B·K], −1 for none) or else its image's explained one."""
    return torch.where(targets >= 0, targets, resolved.repeat_interleave(repeats))


class _Rewrite:
    def __init__(self, module: fx.GraphModule, layers: Sequence[Layer], layouts: dict, per_row_targets: bool,
                 input_relevance: bool, single_image: bool):
        self.source = module
        self.single_image = single_image
        self.input_relevance = input_relevance
        self.layouts = layouts          # forward node name -> its sample layout (None: no batch dimension)
        self.per_row = per_row_targets
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.level: dict[fx.Node, int] = {}      # relevance-derived nodes -> conditioned layers passed
        self.forward: set[fx.Node] = set()       # batch-carrying values computed before the relevance section
        self.wide: dict[fx.Node, fx.Node] = {}   # a narrow value -> its B·K-row copy
        position = {n.name: i for i, n in enumerate(module.graph.nodes)}
        self.given = list(layers)                 # mask_i belongs to given[i]; readouts come in this order
        topmost_first = sorted(range(len(layers)), key=lambda i: position[layers[i].relevance])
        self.depth = {i: d for d, i in enumerate(topmost_first)}   # conditioned layers above given[i]
        self.at: dict[str, list[int]] = {}
        for i in topmost_first:
            self.at.setdefault(layers[i].relevance, []).append(i)
        self.readout: dict[int, fx.Node] = {}

    def relevance_rows(self, n: fx.Node) -> bool:
        """Whether relevance-derived ``n`` holds B·K rows."""
        return self.per_row or self.level[n] > 0

    def widened(self, n: fx.Node) -> fx.Node:
        """The B·K-row version of a narrow value: a repeated activation, or a recomputation on repeated ones."""
        if n in self.wide:
            return self.wide[n]
        if n.op == "get_attr":
            return self.env[n]
        if n in self.forward:
            layout = self.layouts.get(n.name.removeprefix("finite_").removesuffix("_indices"), (0, None))
            if layout is None:
                return self.env[n]
            wide = self.graph.call_function(repeat_rows, (self.env[n], self.env[self.x], self.repeats),
                                            {"dim": layout[0], "inner": layout[1]}, name=f"repeat_{n.name}")
        else:   # computed in the relevance section from activations alone (a negated input, a pad mask)
            wide = self.graph.node_copy(n, lambda i: self.widened(i))
        self.wide[n] = wide
        return wide

    def run(self) -> fx.GraphModule:
        graph, source = self.graph, self.source
        nodes = list(source.graph.nodes)
        self.x = nodes[0]
        self.env[self.x] = graph.placeholder(self.x.name)
        self.forward.add(self.x)
        self.env[nodes[1]] = graph.placeholder(nodes[1].name, default_value=None)   # target
        self.repeats = graph.placeholder("repeats", default_value=1)
        targets = graph.placeholder("row_targets", default_value=None)
        masks = [graph.placeholder(f"mask_{i}", default_value=None) for i in range(len(self.given))]
        output = next(n for n in nodes if n.op == "output")
        logits_node, _, input_relevance = output.args[0][:3]
        needed = ancestors([logits_node, input_relevance] + [n for n in nodes if n.name in self.at])
        in_relevance = False
        resolved = logits = None
        for n in nodes[2:]:
            if n.op == "output":
                break
            if n not in needed and n.target is not kernels.resolve_target:   # per-edge sums, kept tensors
                continue
            in_relevance = in_relevance or n.target is kernels.resolve_target
            if not in_relevance:
                self.env[n] = graph.node_copy(n, self.env.__getitem__)
                if n.op != "get_attr":
                    self.forward.add(n)
                continue
            if n.target is kernels.resolve_target:
                self.env[n] = resolved = graph.node_copy(n, self.env.__getitem__)
                logits = n.args[0]
                continue
            if n.target is kernels.start_relevance:
                self.level[n] = 0
                if self.per_row:
                    rows = graph.call_function(row_targets, (resolved, targets, self.repeats), name="row_target")
                    self.env[n] = graph.call_function(kernels.start_relevance, (self.widened(logits), rows),
                                                      dict(n.kwargs), name=n.name)
                else:
                    self.env[n] = graph.node_copy(n, self.env.__getitem__)
            else:
                self.copy_relevance_op(n)
            for i in self.at.get(n.name, ()):
                self.apply_mask(n, i, masks[i])
        if not self.input_relevance:   # a readout of the layers alone: fx drops every op below them
            heat = None
        elif self.level.get(input_relevance) == len(self.given) and self.relevance_rows(input_relevance):
            heat = self.env[input_relevance]
        else:   # no relevance passes through every conditioned layer down to the input
            heat = graph.call_function(torch.zeros_like, (self.widened(self.x),), name="rel_x_none")
        readouts = tuple(self.readout[i] for i in range(len(self.given)))
        graph.output((self.env[logits_node], resolved, heat, readouts))
        graph.eliminate_dead_code()
        return fx.GraphModule(source, graph, class_name="ConditionalRelevanceModule")

    def copy_relevance_op(self, n: fx.Node) -> None:
        carried = [i for i in n.all_input_nodes if i in self.level]
        if not carried:   # a value of the relevance section computed from activations and constants alone
            self.env[n] = self.graph.node_copy(n, self.env.__getitem__)
            return
        top = max(self.level[i] for i in carried)
        if any(self.level[i] < top for i in carried):
            if n.target is not operator.add:
                raise AssertionError(f"relevance op {n.name} mixes relevance of different conditions")
            kept = [i for i in n.args if isinstance(i, fx.Node) and self.level.get(i) == top]
            self.level[n] = top
            if len(kept) == 1:    # the other term bypassed a conditioned layer: it is not the concept's
                self.env[n] = self.env[kept[0]]
                return
        self.level[n] = top
        shared = self.single_image and n.target in SHARED_ACTIVATION_OPS
        if self.relevance_rows(n) and not shared:
            self.env[n] = self.graph.node_copy(n, lambda i: self.env[i] if i in self.level else self.widened(i))
        else:
            self.env[n] = self.graph.node_copy(n, self.env.__getitem__)
            if shared and self.relevance_rows(n):
                self.env[n].kwargs = {**self.env[n].kwargs, **SHARED_ACTIVATION_OPS[n.target]}

    def apply_mask(self, n: fx.Node, given: int, mask: fx.Node) -> None:
        layer = self.given[given]
        if self.level[n] != self.depth[given]:
            above = next(self.given[i] for i, d in self.depth.items() if d == self.depth[given] - 1)
            raise LrpcError(f"layers {above.name!r} and {layer.name!r} of one condition are not on one path: no "
                            f"relevance flows from {above.name!r} (node {above.node!r}) through {layer.name!r} "
                            f"(node {layer.node!r}); condition them separately")
        expand = not self.relevance_rows(n)
        self.env[n] = self.graph.call_function(condition, (self.env[n], mask),
                                               {"expand": expand, "batch_dim": layer.batch_dim,
                                                "channel_dim": layer.channel_dim}, name=f"condition_{layer.node}")
        self.level[n] += 1
        self.readout[given] = self.env[n]


def conditioned_module(module: fx.GraphModule, layers: Sequence[Layer], plans: dict, *, per_row_targets: bool,
                       input_relevance: bool = True, single_image: bool = False) -> fx.GraphModule:
    """The rewritten module (see the module docstring); ``layers[i]`` is masked by ``mask_i``. Without
    ``input_relevance`` it returns None in its place and runs nothing below the layers. ``single_image``: the
    module will only see batches of one image, so the ``SHARED_ACTIVATION_OPS`` read its activations as they
    are."""
    canonical = next(iter(plans.values())).node.graph
    layouts = {n.name: sample_layout(n) for n in canonical.nodes if n.op != "output"}
    return _Rewrite(module, layers, layouts, per_row_targets, input_relevance, single_image).run()
