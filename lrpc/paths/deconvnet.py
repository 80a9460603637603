"""Zeiler–Fergus deconvnet: what in the image made one channel fire.

Start from one channel of a layer (its whole map, or only its strongest position) and go back to the input:
a conv or linear layer by its transposed map with the same weights and no bias, a max-pool by unpooling to the
positions its forward pass picked (the "switches"), a ReLU by clamping the backward signal at 0 (the
deconvnet rule: the signal's sign decides, not the forward activation's). Average pools go back by their
transpose, BatchNorm by its per-channel scale, reshapes/pads/concatenations by their inverse, an add sends the
signal to both operands. The forward graph is the explainer's canonical graph, so every model lrpc compiles
can be reconstructed; other elementwise non-linearities have no deconvnet rule and raise an ``LrpcError``.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
from torch import nn

from .. import kernels, windows
from ..compiler import compile as compile_explainer
from ..errors import LrpcError
from ..linear_maps import LINEAR_MAPS
from ..runtime import Explainer
from .probe import Probe

Tensor = torch.Tensor
aten = torch.ops.aten
MODES = ("max", "map")
RELU = (aten.relu,)
ADDITIVE = (aten.add, aten.sub)   # a constant added (a bias): no deconvnet effect


def _resolve_node(probe: Probe, layer: str) -> str:
    if layer in probe.plans:
        return layer
    matches = [name for name, plan in probe.plans.items() if plan.module == layer]
    if len(matches) == 1:
        return matches[0]
    raise LrpcError(f"{layer!r} is neither a node name nor the module path of exactly one node; e.g. "
                    + ", ".join(f"{n} ({p.module})" for n, p in list(probe.plans.items())[:12]) + ", ...")


def _start_signal(activation: Tensor, channels: list[int], mode: str) -> Tensor:
    """[N, C, ...]: row i holds channel ``channels[i]`` of the rectified activation (whole map, or its maximum
    only), every other entry 0."""
    signal = torch.zeros(len(channels), *activation.shape[1:], dtype=activation.dtype)
    for i, c in enumerate(channels):
        feature = activation[0, c].clamp(min=0)
        if mode == "max":
            flat = torch.zeros_like(feature).reshape(-1)
            position = int(feature.reshape(-1).argmax())
            flat[position] = feature.reshape(-1)[position]
            feature = flat.reshape(feature.shape)
        signal[i, c] = feature
    return signal


def deconvnet(explainer_or_model: Explainer | nn.Module, x: Tensor, layer: str, channel: int | Sequence[int],
              mode: str = "max") -> Tensor:
    """Reconstruct in input space ([N, C, H, W], one row per channel in ``channel``) the evidence for channel(s)
    of ``layer`` (a node name such as ``"features_28"`` or a module path such as ``"features.28"``) on image
    ``x`` ([1, C, H, W]). ``mode="max"`` keeps only the channel's strongest activation (Zeiler & Fergus),
    ``"map"`` its whole rectified map. A model is compiled first (its graph, not its rules, is used)."""
    if mode not in MODES:
        raise LrpcError(f"mode must be one of {MODES}, got {mode!r}")
    explainer = explainer_or_model
    if isinstance(explainer_or_model, nn.Module):
        explainer = compile_explainer(explainer_or_model, "default", example_input=x)
    probe = Probe.of(explainer)
    name = _resolve_node(probe, layer)
    trace = probe.trace(x)
    activation = trace.activations[name]
    channels = [channel] if isinstance(channel, int) else list(channel)
    if not channels or any(not isinstance(c, int) or not 0 <= c < activation.shape[1] for c in channels):
        raise LrpcError(f"channel must be an int or ints in [0, {activation.shape[1]}), got {channel!r}")

    signals = {name: _start_signal(activation, channels, mode)}
    for node in reversed(list(probe.plans)):
        signal = signals.pop(node, None)
        if signal is None:
            continue
        plan = probe.plans[node]
        if plan.info.kind == "input":
            return signal
        for producer, value in _step(probe, plan, signal, trace.activations):
            signals[producer] = signals[producer] + value if producer in signals else value
    raise AssertionError("the deconvnet signal never reached the input")


def _is_relu(probe: Probe, node) -> bool:
    return getattr(node.target, "overloadpacket", None) in RELU


def _step(probe: Probe, plan, s: Tensor, acts: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """The signal each input of ``plan``'s node receives."""
    info, node = plan.info, plan.node
    inputs = [i.name for i in info.inputs]
    like = [acts[i].expand(s.shape[0], *acts[i].shape[1:]) for i in inputs]
    kind = info.kind
    if kind == "linear":
        return [(inputs[0], LINEAR_MAPS[info.map].transpose(s, like[0], info.weight, info.args))]
    if kind == "pass":
        if _is_relu(probe, node):
            return [(inputs[0], s.clamp(min=0))]
        if getattr(node.target, "overloadpacket", None) in ADDITIVE:
            return [(inputs[0], s)]
        raise LrpcError(f"node {node.name!r} ({node.target}): deconvnet has rules for ReLU networks only")
    if kind == "gate":
        return [(inputs[0], s * acts[info.extra["gate"].name])]
    if kind == "batchnorm":
        _, weight, _, _, running_var, _, _, eps, _ = node.args
        weight = 1.0 if weight is None else operator.attrgetter(weight.target)(probe.generated)
        scale = weight / (operator.attrgetter(running_var.target)(probe.generated) + eps).sqrt()
        return [(inputs[0], s * scale.reshape(1, -1, *([1] * (s.dim() - 2))))]
    if kind == "maxpool":
        switches = windows.max_pool(acts[inputs[0]], **info.extra["window"])[1]
        return [(inputs[0], windows.unpool(s, like[0], switches))]
    if kind == "amax":  # to the maxima, tied ones sharing: the adjoint of amax
        dims, keepdim = info.args
        out = acts[node.name].expand(s.shape[0], *acts[node.name].shape[1:])
        return [(inputs[0], kernels.amax_relevance(like[0], out, s, dims=dims, keepdim=keepdim))]
    if kind == "reshape":
        return [(inputs[0], s.reshape(like[0].shape))]
    if kind == "permute":
        return [(inputs[0], kernels.permute_back(s, dims=info.args))]
    if kind == "pad":
        return [(inputs[0], kernels.unpad(s, pad=info.args))]
    if kind == "cat":
        return list(zip(inputs, kernels.split_cat(s, *like, dim=info.args[0])))
    if kind == "add":
        return [(i, s.sum_to_size(l.shape)) for i, l in zip(inputs, like)]
    raise LrpcError(f"node {node.name!r}: deconvnet has no rule for a {kind!r} op")
