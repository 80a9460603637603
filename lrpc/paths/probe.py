"""Read what path analysis needs out of an explainer's generated module, and replay its relevance ops.

The compiled module (``explainer.module``) already holds, for every forward node, the node with its relevance
and the call that turns that relevance into a message for each input (``explainer.pairings``). Path analysis
needs three things a plain call does not give:

- every activation and every node relevance of one image (``Probe.trace``);
- relevance propagated with some channels of some conv/linear layers masked out (``masks=``), computed by the
  very same generated code, so a restricted heatmap can never drift from the full one;
- the generated op of one node applied to other tensors, e.g. to the single channel one path carries
  (``Probe.messages``), and the constants and keyword arguments of each layer's rule call
  (``Probe.kernel_call``), so flows use exactly the rule the compiled module used.

The probe copies the generated graph once; the copy shares the module's parameters and rule constants.
"""
from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

from .. import kernels, windows
from ..errors import LrpcError
from ..op_kinds import kind_of
from ..runtime import Explainer

Tensor = torch.Tensor
WEIGHTED_MAPS = ("conv", "linear")
_PROBES: "weakref.WeakKeyDictionary[Explainer, Probe]" = weakref.WeakKeyDictionary()


def apply_mask(r: Tensor, masks: Mapping[str, Tensor] | None, layer: str) -> Tensor:
    """``r`` times the channel mask [C] given for ``layer``; unchanged when there is none."""
    if masks is None or layer not in masks:
        return r
    return r * masks[layer].reshape(1, -1, *([1] * (r.dim() - 2))).to(r.dtype)


@dataclass
class Trace:
    """One image through the probe: its logits, explained target, start relevance, and every forward
    activation and node relevance by forward node name."""

    x: Tensor
    target: int
    logits: Tensor
    start: Tensor
    relevance: Tensor                     # input relevance [1, C, H, W]
    activations: dict[str, Tensor]
    relevances: dict[str, Tensor]
    cache: dict = field(default_factory=dict, repr=False)   # per-image results shared by later steps

    @property
    def heatmap(self) -> Tensor:
        return self.relevance.sum(1)[0]


@dataclass(frozen=True)
class KernelCall:
    """The rule call of one conv/linear layer as the generated module makes it: ``fn(a, out, r, *constants,
    **kwargs)``."""

    fn: Callable[..., Tensor]
    constants: tuple[Tensor | None, ...]
    kwargs: dict[str, Any]


def is_weighted(plan) -> bool:
    return kind_of(plan).applies_rule and plan.info.map in WEIGHTED_MAPS


def _copied(node: fx.Node | None, plan) -> bool:
    if node is None:
        return False
    if plan.maxpool == "winner" and plan.info.extra["with_indices"] is None:
        # the pool runs once, with its arg-max indices (RelevancePass.copy_forward)
        return node.target is operator.getitem and node.args[0].target is windows.max_pool
    return node.op == plan.node.op and (node.op == "placeholder" or node.target == plan.node.target)


class Probe:
    def __init__(self, explainer: Explainer):
        self._owner = weakref.ref(explainer)  # the caches are keyed weakly by the explainer: do not keep it alive
        self.plans = explainer.plans
        self.pairings = explainer.pairings
        self.generated = explainer.module
        self.nodes = {n.name: n for n in self.generated.graph.nodes}
        for name, plan in self.plans.items():
            if not _copied(self.nodes.get(name), plan):
                raise AssertionError(f"forward node {name!r} is not copied under its name in the generated module")
        self.layers = [name for name, plan in self.plans.items() if is_weighted(plan)]
        self.logits = self._output_node().args[0][0].name
        self.module = self._instrument()

    @property
    def explainer(self) -> Explainer:
        return self._owner()

    @classmethod
    def of(cls, explainer: Explainer) -> "Probe":
        """The probe of ``explainer``, built on first use."""
        if not isinstance(explainer, Explainer):
            raise TypeError(f"expected an lrpc Explainer (from lrpc.compile), got {type(explainer).__name__}")
        if explainer not in _PROBES:
            _PROBES[explainer] = cls(explainer)
        return _PROBES[explainer]

    # --------------------------------------------------------------------------------------------- building
    def _output_node(self) -> fx.Node:
        return next(n for n in self.generated.graph.nodes if n.op == "output")

    def _message_nodes(self, name: str) -> list[tuple[str, fx.Node]]:
        return [(producer, self.nodes[message]) for producer, message in self.pairings[name].messages]

    def _instrument(self) -> fx.GraphModule:
        graph = fx.Graph()
        copies: dict[fx.Node, fx.Node] = {}
        outputs = graph.graph_copy(self.generated.graph, copies)
        last_placeholder = [n for n in graph.nodes if n.op == "placeholder"][-1]
        with graph.inserting_after(last_placeholder):
            masks = graph.placeholder("lrpc_masks", default_value=None)
        for layer in self.layers:
            (_, call), = self._message_nodes(layer)
            call = copies[call]
            with graph.inserting_before(call):
                masked = graph.call_function(apply_mask, (call.args[2], masks, layer))
            call.update_arg(2, masked)
        start = next(n for n in self.generated.graph.nodes if n.target is kernels.start_relevance)
        activations = {name: copies[self.nodes[name]] for name in self.plans}
        relevances = {name: copies[self.nodes[p.relevance]] for name, p in self.pairings.items() if p.relevance}
        graph.output((outputs, activations, relevances, copies[start]))
        return fx.GraphModule(self.generated, graph, class_name="PathProbe")

    # ---------------------------------------------------------------------------------------------- running
    def _inputs(self, x: Tensor, target) -> tuple[Tensor, Tensor | None]:
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] != 1:
            raise LrpcError(f"path analysis explains one image at a time: x must have batch size 1, got "
                            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        self.explainer.check_input(x)
        return x, self.explainer.check_target(target, 1, self.explainer.num_classes, x.device)

    def trace(self, x: Tensor, target=None) -> Trace:
        """Everything about one image ``x`` ([1, C, H, W])."""
        x, target = self._inputs(x, target)
        with torch.no_grad():  # not inference_mode: flows differentiate through replayed ops
            (logits, resolved, relevance, *_), activations, relevances, start = self.module(x, target, None)
        return Trace(x, int(resolved[0]), logits, start, relevance, activations, relevances)

    def run(self, x: Tensor, target=None, masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Input relevance of one image with the upper relevance of each layer named in ``masks`` multiplied by
        its channel mask [C] before the layer's rule."""
        x, target = self._inputs(x, target)
        with torch.no_grad():
            (_, _, relevance, *_), *_ = self.module(x, target, self._masks(masks))
        return relevance

    def _masks(self, masks: Mapping[str, Tensor] | None) -> dict[str, Tensor] | None:
        if not masks:
            return None
        unknown = [name for name in masks if name not in self.layers]
        if unknown:
            raise LrpcError(f"masks name {unknown}, which are not conv/linear layers; layers: "
                            f"{', '.join(self.layers)}")
        return dict(masks)

    # --------------------------------------------------------------------------------------------- replaying
    def kernel_call(self, layer: str) -> KernelCall:
        """The rule call the generated module makes for conv/linear ``layer``."""
        (_, call), = self._message_nodes(layer)
        constants = tuple(None if c is None else operator.attrgetter(c.target)(self.generated)
                          for c in call.args[3:])
        return KernelCall(call.target, constants, dict(call.kwargs))

    def messages(self, name: str, r: Tensor, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The messages node ``name`` sends to its inputs (by input name) when its relevance is ``r`` and the
        forward activations it reads are ``values`` (by forward node name): the generated op, re-evaluated."""
        env: dict[str, Any] = {self.pairings[name].relevance: r, **values}
        out: dict[str, Tensor] = {}
        for producer, message in self._message_nodes(name):
            value = self._evaluate(message, env, name)
            out[producer] = out[producer] + value if producer in out else value
        return out

    def _evaluate(self, node: fx.Node, env: dict[str, Any], owner: str) -> Any:
        if node.name in env:
            return env[node.name]
        if node.op == "get_attr":
            value = operator.attrgetter(node.target)(self.generated)
        elif node.op == "call_function":
            args = fx.node.map_arg(node.args, lambda n: self._evaluate(n, env, owner))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self._evaluate(n, env, owner))
            value = node.target(*args, **kwargs)
        else:
            raise AssertionError(f"replaying the relevance op of {owner!r} reached {node.op} node {node.name!r}")
        env[node.name] = value
        return value
