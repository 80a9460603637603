"""The engine behind ``lrpc.paths``: channel flows and single-path relevance for one image.

``Analysis.of(explainer)`` builds (once per explainer) the probe and the layer structure. Then, for a
``Trace`` of one image:

- ``flows``: for every (producer, consumer) pair the dense matrix F [C_producer, C_consumer] of relevance the
  consumer's channel d sends to the producer's channel c. The consumer's rule gives the split at its input
  (``terms.flows``); the region between (pools, ReLU, residual adds) is folded in exactly by the *transfer*
  t(c, p) — the share of input position p's relevance that arrives at that producer — obtained as one
  gradient of the replayed region ops (they are linear in the relevance). So row sums are the producer's
  relevance and column sums the consumer's relevance minus what its bias/ε (and lossy pools) absorb.
- ``path_relevance``: the input relevance carried by single paths ("input", (layer, c), ..., "output"):
  relevance masked to the path's channel at every layer, batched over paths, computing only the path's
  channels (a grouped transposed conv per layer, the region ops on one channel).

Both replay the generated module's own ops, so they use exactly the rules the explainer was compiled with.
"""
from __future__ import annotations

import weakref
from collections import defaultdict
from typing import Callable, Hashable, Sequence

import torch

from ..errors import LrpcError
from ..runtime import Explainer
from . import terms
from .probe import Probe, Trace
from .structure import INPUT, OUTPUT, Region, Structure

Tensor = torch.Tensor
Node = Hashable
_CACHE: "weakref.WeakKeyDictionary[Explainer, Analysis]" = weakref.WeakKeyDictionary()


def channel_sums(t: Tensor, channels: int) -> Tensor:
    """Per-channel sums [C] of one sample [1, C, ...] or of a flattened [1, C * group] tensor."""
    return t[0].reshape(channels, -1).sum(1)


def _per_channel(values: Tensor, like: Tensor) -> Tensor:
    """[C] values spread over a tensor shaped like one sample's [1, C, ...] or [1, C * group]."""
    return values.repeat_interleave(like[0].numel() // values.numel()).reshape(like.shape)


def _slice(t: Tensor, index: Tensor, channels: int) -> Tensor:
    """The channels ``index`` of one sample, one per row: [B, 1, ...] (or [B, group] for flattened tensors)."""
    if t.dim() == 2:
        return t.reshape(channels, -1)[index]
    return t[0, index].unsqueeze(1)


class Analysis:
    def __init__(self, explainer: Explainer):
        self.probe = Probe.of(explainer)
        self.structure = Structure(self.probe)

    @classmethod
    def of(cls, explainer: Explainer) -> "Analysis":
        if not isinstance(explainer, Explainer):
            raise TypeError(f"expected an lrpc Explainer (from lrpc.compile), got {type(explainer).__name__}")
        if explainer not in _CACHE:
            _CACHE[explainer] = cls(explainer)
        return _CACHE[explainer]

    def trace(self, x: Tensor, target=None) -> Trace:
        return self.probe.trace(x, target)

    def parts(self, trace: Trace, layer: str) -> list[terms.Part]:
        """The rule of ``layer`` decomposed at this image's activations (computed once per trace)."""
        key = ("parts", layer)
        if key not in trace.cache:
            region = self.structure.regions[layer]
            trace.cache[key] = terms.decompose(self.probe.kernel_call(layer), trace.activations[region.start],
                                               trace.activations[layer], layer)
        return trace.cache[key]

    # ------------------------------------------------------------------------------------------------ regions
    def arrivals(self, region: Region, message: Tensor, value: Callable[[str], Tensor]) -> dict[str, Tensor]:
        """Replay the region's ops on ``message`` (the consumer's message at ``region.start``): what reaches
        each producer. ``value(name)`` gives the forward activation the replayed ops read."""
        relevance = {region.start: message}
        for name in region.nodes:
            r = relevance.pop(name, None)
            if r is None:
                continue
            plan = self.probe.plans[name]
            values = {n: value(n) for n in [name, *(i.name for i in plan.info.inputs)]}
            for producer, m in self.probe.messages(name, r, values).items():
                relevance[producer] = relevance[producer] + m if producer in relevance else m
        return {p: relevance[p] for p in region.producers if p in relevance}

    def transfers(self, trace: Trace, region: Region) -> dict[str, Tensor | None]:
        """t per producer (shaped like the region start): d(relevance arriving at the producer)/d(message)."""
        if not region.nodes:
            return {region.start: None}
        start = trace.activations[region.start]
        message = torch.ones_like(start, requires_grad=True)
        with torch.enable_grad():
            arrived = self.arrivals(region, message, trace.activations.__getitem__)
            out = {}
            for producer in region.producers:
                r = arrived.get(producer)
                grad = (None if r is None or not r.requires_grad else
                        torch.autograd.grad(r.sum(), message, retain_graph=True, allow_unused=True)[0])
                out[producer] = torch.zeros_like(start) if grad is None else grad
        return out

    def activation_shares(self, trace: Trace, region: Region) -> dict[str, Tensor | None]:
        """Activation graphs at a merge (residual add): each producer is credited with its share of the merged
        channel, by per-channel |activation| — an approximation, see docs/paths.md."""
        if len(region.producers) == 1:
            return {region.producers[0]: None}
        mass = {p: channel_sums(trace.activations[p].abs(), region.channels) for p in region.producers}
        total = sum(mass.values())
        start = trace.activations[region.start]
        return {p: _per_channel(torch.where(total > 0, m / total.clamp_min(1e-30), 0.0), start)
                for p, m in mass.items()}

    # -------------------------------------------------------------------------------------------------- flows
    def flows(self, trace: Trace, mode: str = "relevance") -> dict[tuple[str, str], Tensor]:
        """{(producer, consumer): F [C_producer, C_consumer]} for every edge of the layer structure."""
        if mode not in ("relevance", "activation"):
            raise LrpcError(f"mode must be 'relevance' or 'activation', got {mode!r}")
        plans, acts, out = self.probe.plans, trace.activations, {}
        for layer in self.structure.layers:
            info, region = plans[layer].info, self.structure.regions[layer]
            a, o = acts[region.start], acts[layer]
            if mode == "relevance":
                parts = self.parts(trace, layer)
                r, shares = trace.relevances[layer], self.transfers(trace, region)
            else:
                parts = terms.activation_parts(a, o, info.weight)
                r, shares = torch.ones_like(o), self.activation_shares(trace, region)
            for producer in region.producers:
                out[producer, layer] = terms.flows(parts, r, info.map, info.args, region.channels, shares[producer])
        region = self.structure.regions[OUTPUT]
        if mode == "relevance":
            message, shares = trace.start, self.transfers(trace, region)
        else:
            message = torch.zeros_like(trace.logits)
            message[0, trace.target] = trace.logits[0, trace.target]
            shares = self.activation_shares(trace, region)
        for producer in region.producers:
            share = shares[producer]
            out[producer, OUTPUT] = channel_sums(message if share is None else message * share,
                                                 region.channels).unsqueeze(1)
        return out

    # -------------------------------------------------------------------------------------------------- paths
    def resolve_path(self, path: Sequence[Node]) -> list[tuple[str, int | None]]:
        """Validate a channel-graph path and return it bottom-up as (layer, channel) with the input placeholder
        and OUTPUT as (name, None)."""
        path = list(path)
        if len(path) < 2 or path[0] != INPUT or path[-1] != OUTPUT:
            raise LrpcError(f"a path runs from 'input' to 'output' through (layer, channel) nodes, got {path}")
        steps: list[tuple[str, int | None]] = [(self.structure.input, None)]
        for node in path[1:-1]:
            if not (isinstance(node, tuple) and len(node) == 2 and node[0] in self.structure.regions
                    and node[0] != OUTPUT):
                raise LrpcError(f"path node {node!r} is not a (layer, channel) pair of a conv/linear layer; "
                                f"layers: {', '.join(self.structure.layers)}")
            layer, channel = node[0], int(node[1])
            if not 0 <= channel < self.structure.channels[layer]:
                raise LrpcError(f"path node {node!r}: {layer} has {self.structure.channels[layer]} channels")
            steps.append((layer, channel))
        steps.append((OUTPUT, None))
        for (lower, _), (upper, _) in zip(steps, steps[1:]):
            if lower not in self.structure.regions[upper].producers:
                shown = "input" if lower == self.structure.input else lower
                raise LrpcError(f"path {path}: {shown} does not feed {upper} (no such edge in the channel graph)")
        return steps

    def path_relevance(self, trace: Trace, paths: Sequence[Sequence[Node]]) -> Tensor:
        """Input relevance [P, C, H, W] carried by each path alone; summed over all paths it is the full input
        relevance."""
        steps = [self.resolve_path(p) for p in paths]
        for region in self.structure.regions.values():
            self._check_sliceable(region)
        result = torch.zeros(len(steps), *trace.relevance.shape[1:], dtype=trace.relevance.dtype)
        if not steps:
            return result
        acts, structure = trace.activations, self.structure
        top = self.arrivals(structure.regions[OUTPUT], trace.start, acts.__getitem__)
        # per layer: [(path index, position of the layer in that path, the path's relevance there)]
        pending: dict[str, list[tuple[int, int, Tensor]]] = defaultdict(list)
        for k, s in enumerate(steps):
            layer, channel = s[-2]
            pending[layer].append((k, len(s) - 2, top[layer][:, channel:channel + 1]))
        for layer in reversed(structure.layers):
            items = pending.pop(layer, [])
            if not items:
                continue
            info, region = self.probe.plans[layer].info, structure.regions[layer]
            parts = self.parts(trace, layer)
            groups: dict[str, list[tuple[int, int, Tensor]]] = defaultdict(list)
            for item in items:
                k, position, _ = item
                groups[steps[k][position - 1][0]].append(item)
            for producer, group in groups.items():
                index = [k for k, _, _ in group]
                r = torch.cat([r for _, _, r in group])
                upper = torch.tensor([steps[k][p][1] for k, p, _ in group])
                if producer == structure.input:
                    lower, value = None, lambda n: acts[n].expand(len(group), *acts[n].shape[1:])
                else:
                    lower = torch.tensor([steps[k][p - 1][1] for k, p, _ in group])
                    value = lambda n, lower=lower: _slice(acts[n], lower, region.channels)
                message = terms.path_messages(parts, r, upper, lower, info.map, info.args, region.channels)
                arrived = self.arrivals(region, message, value)[producer]
                if producer == structure.input:
                    result[index] = arrived.reshape(len(group), *result.shape[1:])
                else:
                    for row, (k, p, _) in enumerate(group):
                        pending[producer].append((k, p - 1, arrived[row:row + 1]))
        return result

    def _check_sliceable(self, region: Region) -> None:
        for name in region.nodes:
            rule = self.probe.plans[name].rule
            if rule is not None and getattr(rule, "stabilizer_mode", None) == "rms":
                raise LrpcError(f"node {name!r} uses an RMS stabiliser, which couples channels: single-path "
                                "relevance cannot be computed one channel at a time")
