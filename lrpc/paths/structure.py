"""The layer structure path analysis sees: conv/linear layers joined by channel-wise regions.

Between two conv/linear layers sit ops that never mix channels: ReLU and other elementwise ops, BatchNorm,
max- and average pools, zero padding, a flatten before a classifier, residual adds. Channel c of a layer's
input therefore comes from channel c of the layers that feed it (its *producers*), and all those ops can be
folded into the edges of a channel graph. For a consumer layer the *region* is the set of such ops between its
input and its producers; the input placeholder is a producer too, and the logits have a pseudo-consumer,
``OUTPUT``, whose message is the start relevance.

Anything that does mix channels (``torch.cat``, ``permute``, a reduction over channels, a reshape other than
a flatten) ends the analysis with an ``LrpcError`` naming the node.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LrpcError
from ..op_kinds import kind_of
from ..ops import shape
from .probe import Probe, is_weighted

INPUT, OUTPUT = "input", "output"


@dataclass(frozen=True)
class Region:
    consumer: str                 # a conv/linear layer, or OUTPUT
    start: str                    # forward node where the consumer's message enters (its input / the logits)
    nodes: tuple[str, ...]        # the ops in between, in relevance (reverse graph) order
    producers: tuple[str, ...]    # conv/linear layers or the input placeholder, in graph order
    channels: int                 # the producers' channel count


class Structure:
    """Conv/linear layers in graph order, the region of each consumer, and channel counts."""

    def __init__(self, probe: Probe):
        self.probe = probe
        plans = probe.plans
        self.order = {name: i for i, name in enumerate(plans)}
        self.layers = list(probe.layers)
        self.input = next(name for name, plan in plans.items() if kind_of(plan).is_input)
        self.channels = {name: shape(plans[name].node)[1] for name in [self.input, *self.layers]}
        self.regions = {layer: self._region(layer, plans[layer].info.inputs[0].name) for layer in self.layers}
        self.regions[OUTPUT] = self._region(OUTPUT, probe.logits)
        for layer in self.layers:
            self._check_consumer_input(layer)
        self.consumers: dict[str, list[str]] = {p: [] for p in [self.input, *self.layers]}
        for consumer, region in self.regions.items():
            for producer in region.producers:
                self.consumers[producer].append(consumer)

    def _region(self, consumer: str, start: str) -> Region:
        plans = self.probe.plans
        nodes, producers, stack, seen = [], [], [start], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            plan = plans[name]
            if is_weighted(plan) or kind_of(plan).is_input:
                producers.append(name)
                continue
            self._check_region_op(consumer, plan)
            nodes.append(name)
            stack.extend(i.name for i in plan.info.inputs)
        counts = {self.channels[p] for p in producers}
        if len(counts) != 1:
            raise LrpcError(f"the input of {consumer!r} merges layers with different channel counts "
                            f"({', '.join(f'{p}: {self.channels[p]}' for p in producers)})")
        return Region(consumer, start, tuple(sorted(nodes, key=self.order.get, reverse=True)),
                      tuple(sorted(producers, key=self.order.get)), counts.pop())

    def _check_region_op(self, consumer: str, plan) -> None:
        problem = kind_of(plan).channel_problem(plan)
        if problem:
            raise LrpcError(f"path analysis folds only channel-wise ops between conv/linear layers: node "
                            f"{plan.node.name!r} (feeding {consumer!r}) {problem}")

    def _check_consumer_input(self, layer: str) -> None:
        region, plan = self.regions[layer], self.probe.plans[layer]
        x = shape(plan.info.inputs[0])
        if plan.info.map == "conv":
            if plan.info.args[3] != 1:
                raise LrpcError(f"path analysis needs ungrouped convolutions; {layer!r} has groups="
                                f"{plan.info.args[3]}")
            ok = x[1] == region.channels
        else:
            ok = len(x) == 2 and x[1] % region.channels == 0
        if not ok:
            raise LrpcError(f"the input of {layer!r} has shape {x}, which does not split into the "
                            f"{region.channels} channels of {', '.join(region.producers)}")

    def rank(self, name: str) -> int:
        """Position in the channel graph's layer order: input 0, layers 1..n, output n + 1."""
        if name == self.input:
            return 0
        if name == OUTPUT:
            return len(self.layers) + 1
        return self.layers.index(name) + 1
