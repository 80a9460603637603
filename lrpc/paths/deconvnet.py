"""Zeiler–Fergus deconvnet: what in the image made one channel fire.

Start from one channel of a layer (its whole map, or only its strongest position) and go back to the input:
a conv or linear layer by its transposed map with the same weights and no bias, a max-pool by unpooling to the
positions its forward pass picked (the "switches"), a ReLU by clamping the backward signal at 0 (the
deconvnet rule: the signal's sign decides, not the forward activation's). Average pools go back by their
transpose, BatchNorm by its per-channel scale, reshapes/pads/concatenations by their inverse, an add sends the
signal to both operands. The forward graph is the explainer's canonical graph, so every model lrpc compiles
can be reconstructed; other elementwise non-linearities have no deconvnet rule and raise an ``LrpcError``.
Each step is the node's kind's (``OpKind.deconvnet_step`` in ``lrpc.op_kinds``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..compiler import compile as compile_explainer
from ..errors import LrpcError
from ..op_kinds import kind_of
from ..runtime import Explainer
from .probe import Probe

Tensor = torch.Tensor
MODES = ("max", "map")


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
        if kind_of(plan).is_input:
            return signal
        for producer, value in _step(probe, plan, signal, trace.activations):
            signals[producer] = signals[producer] + value if producer in signals else value
    raise AssertionError("the deconvnet signal never reached the input")


def _step(probe: Probe, plan, s: Tensor, acts: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """The signal each input of ``plan``'s node receives: its kind's ``deconvnet_step``."""
    like = [acts[i.name].expand(s.shape[0], *acts[i.name].shape[1:]) for i in plan.info.inputs]
    return kind_of(plan).deconvnet_step(plan, s, like, acts, probe.generated)
