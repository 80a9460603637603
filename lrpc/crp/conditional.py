"""Conditional relevance (CRP): input heatmaps of the relevance that flows through chosen channels of a layer.

``conditional_heatmaps(explainer, x, layer, channels)`` gives one map per channel; ``attribute(explainer, x,
conditions)`` takes zennit-crp's condition sets (``[{"features.16": [3], "y": [1]}, ...]``), several layers per
condition included, and also reads out each condition's relevance at its layers. Either runs ONE call of a
rewritten relevance module (``rewrite.conditioned_module``): the forward pass and the relevance above the layer
once on the B images, the part below it on B·K rows.
"""
from __future__ import annotations

import numbers
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import LrpcError
from ..runtime import Explainer
from .layers import Layer, resolve
from .rewrite import conditioned_module

Tensor = torch.Tensor
OUTPUT = "y"   # zennit-crp's key for the explained class in a condition
_MODULES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # generated module -> {spec: rewritten}


@dataclass
class ConditionalAttribution:
    """The result of ``attribute``: row k of every tensor belongs to ``conditions[k]``."""

    heatmap: Tensor                  # [B, K, H, W]: input relevance summed over the input channels
    relevance: Tensor                # [B, K, C, H, W]: input relevance
    relevances: dict[str, Tensor]    # layer (as the conditions name it) -> [B, K] relevance of the condition's
    #                                  channels there (NaN in the rows of conditions that do not name the layer)
    logits: Tensor                   # [B, classes]
    target: Tensor                   # [B, K]: the class each row explains
    conditions: list[dict] = field(repr=False)


def _is_index(value) -> bool:
    """An int (Python's, NumPy's, a 0-d integer tensor's item), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_explainer(explainer) -> None:
    if not isinstance(explainer, Explainer):
        raise LrpcError(f"expected an lrpc Explainer (from lrpc.compile), got {type(explainer).__name__}")


def _channel_list(value, layer: Layer, where: str) -> list[int]:
    """A condition's channels of one layer as a non-empty list of in-range ints."""
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    if _is_index(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(_is_index(c) for c in value):
        raise LrpcError(f"{where}: the channels of layer {layer.name!r} must be an int or a non-empty list of ints, "
                        f"got {value!r}")
    bad = [c for c in value if not -layer.channels <= c < layer.channels]
    if bad:
        raise LrpcError(f"{where}: channel(s) {bad} out of range for layer {layer.name!r} (node {layer.node!r}, "
                        f"shape {list(layer.shape)}), which has {layer.channels} channels in dimension "
                        f"{layer.channel_dim}")
    return [int(c) % layer.channels for c in value]


def _class_of(value, num_classes: int, where: str) -> int:
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not _is_index(value):
        raise LrpcError(f"{where}: {OUTPUT!r} must be one class index (an int or a one-element list), got {value!r}")
    if not 0 <= value < num_classes:
        raise LrpcError(f"{where}: class {value} out of range for {num_classes} classes")
    return int(value)


def _run(explainer: Explainer, build, x: Tensor, target, layers: Sequence[Layer], masks: Sequence[Tensor],
         row_targets: Tensor | None, input_relevance: bool = True):
    """One call of the rewritten module: (logits, explained target [B], input relevance [B·K, ...] or None,
    masked relevance at each layer [B·K, ...])."""
    per_row = row_targets is not None
    single = x.shape[0] == 1
    key = (tuple((l.node, l.relevance, l.batch_dim, l.channel_dim) for l in layers), per_row, input_relevance,
           single, repr(explainer._compile_kwargs))   # explainer.compile() after a first call compiles a fresh one
    repeats = masks[0].shape[0] if masks else row_targets.numel() // x.shape[0]
    with explainer._gate.shared():
        cache = _MODULES.setdefault(build.module, {})
        if key not in cache:
            cache[key] = explainer._compiled(conditioned_module(build.module, layers, build.plans,
                                                                per_row_targets=per_row,
                                                                input_relevance=input_relevance,
                                                                single_image=single))
        with torch.inference_mode():
            return cache[key](x, target, repeats, row_targets, *masks)


def _prepare(explainer, x: Tensor, target):
    _check_explainer(explainer)
    build = explainer._current()
    explainer.check_input(x, build)
    return build, explainer.check_target(target, x.shape[0], build.num_classes, x.device)


def _passes(conditions, batch_size: int | None) -> list[tuple[tuple[str, ...], list[int]]]:
    """(layers, condition indices) of each relevance pass: conditions that name the same layers run together
    (as zennit-crp's ``exclude_parallel`` groups them), at most ``batch_size`` of them per pass."""
    if batch_size is not None and (not _is_index(batch_size) or batch_size < 1):
        raise LrpcError(f"batch_size must be None (all conditions in one pass) or a positive int, got {batch_size!r}")
    groups: dict[tuple[str, ...], list[int]] = {}
    for k, condition in enumerate(conditions):
        layers = tuple(sorted(name for name in condition if name != OUTPUT))
        groups.setdefault(layers, []).append(k)
    return [(layers, rows[i:i + (batch_size or len(rows))]) for layers, rows in groups.items()
            for i in range(0, len(rows), batch_size or len(rows))]


def attribute(explainer: Explainer, x: Tensor, conditions: Sequence[dict], target=None, *,
              batch_size: int | None = None) -> ConditionalAttribution:
    """Conditional relevance for zennit-crp's condition sets.

    ``conditions`` is a list of dicts ``{layer: channels, ..., "y": class}``: ``layer`` a module path or node
    name, ``channels`` an int or a list of ints (a concept of several channels keeps all of them), ``"y"`` the
    class this condition explains (else ``target`` as in ``explainer(x, target)``: None is the predicted class).
    Several layers in one condition nest: the relevance is masked at each, so the map shows what flows through the
    upper layer's channels *and then* the lower layer's. Every image is explained under every condition: the
    result's rows are [B, K]. Conditions naming the same layers run as one batched relevance pass, or with
    ``batch_size`` (zennit-crp's name) in passes of that many conditions: each pass runs the forward again, but
    smaller batches can run faster on a CPU, whose caches hold their activations (see docs/concepts.md)."""
    build, target = _prepare(explainer, x, target)
    if not isinstance(conditions, (list, tuple)) or not conditions or \
            not all(isinstance(c, dict) and c for c in conditions):
        raise LrpcError(f"conditions must be a non-empty list of non-empty dicts like {{'features.16': [3], 'y': "
                        f"[1]}}, got {conditions!r}")
    batch, count = x.shape[0], len(conditions)
    heat_rows = relevance = logits = None
    targets = torch.empty(batch, count, dtype=torch.long, device=x.device)
    readouts: dict[str, Tensor] = {}
    for names, rows in _passes(conditions, batch_size):
        layers = [resolve(explainer, build, name) for name in names]
        masks = []
        for layer in layers:
            mask = torch.zeros(len(rows), layer.channels, dtype=x.dtype, device=x.device)
            for i, k in enumerate(rows):
                mask[i, _channel_list(conditions[k][layer.name], layer, f"condition {k}")] = 1
            masks.append(mask)
        classes = [_class_of(conditions[k][OUTPUT], build.num_classes, f"condition {k}")
                   if OUTPUT in conditions[k] else -1 for k in rows]
        shared = len(set(classes)) == 1 and layers   # one class for every row: the upper pass runs on B rows
        if shared:
            group_target = target if classes[0] < 0 else torch.full((batch,), classes[0], device=x.device)
            row_targets = None
        else:
            group_target = target
            row_targets = torch.tensor(classes, device=x.device).repeat(batch)
        logits, resolved, input_relevance, at_layers = _run(explainer, build, x, group_target, layers, masks,
                                                            row_targets)
        input_relevance = input_relevance.reshape(batch, len(rows), *input_relevance.shape[1:])
        if relevance is None:
            relevance = input_relevance.new_zeros(batch, count, *input_relevance.shape[2:])
        relevance[:, rows] = input_relevance
        chosen = torch.tensor(classes, device=x.device)
        targets[:, rows] = torch.where(chosen >= 0, chosen, resolved.unsqueeze(1))
        for layer, value in zip(layers, at_layers):
            totals = value.movedim(layer.batch_dim, 0).reshape(batch, len(rows), -1).sum(2)
            readout = readouts.setdefault(layer.name, totals.new_full((batch, count), float("nan")))
            readout[:, rows] = totals
    heat_rows = relevance.sum(2) if relevance.dim() > 3 else relevance
    return ConditionalAttribution(heat_rows, relevance, readouts, logits, targets, list(conditions))


def conditional_heatmaps(explainer: Explainer, x: Tensor, layer: str, channels, target=None, *,
                         batch_size: int | None = None) -> Tensor:
    """[B, K, H, W]: for each of the K ``channels`` of ``layer``, the input heatmap of that channel's share of
    the relevance at the layer's output (the relevance of the other channels set to zero there), explaining
    ``target`` as ``explainer(x, target)`` does. One batched relevance pass for all K channels.

    ``layer`` is a module path as the model names it (``"features.16"``: the module's output) or a node name of
    ``explainer.layer_names``. Where the layer is a cut of the graph (every path from the input to the output
    passes through it), the maps of all its channels sum to ``explainer(x, target).heatmap()``; relevance on a
    path around the layer (a skip connection around a conv inside a residual block) belongs to none of its
    channels and is in none of the maps. ``batch_size`` as in ``attribute``."""
    _check_explainer(explainer)
    if hasattr(channels, "tolist"):   # a tensor or a NumPy array
        channels = channels.tolist()
    if _is_index(channels):
        channels = [channels]
    if isinstance(channels, range):
        channels = list(channels)
    if not isinstance(channels, (list, tuple)) or not channels:
        raise LrpcError(f"channels must be a non-empty list of channel indices, got {channels!r}")
    if not all(_is_index(c) for c in channels):
        raise LrpcError(f"channels must be ints (one concept each), got {channels!r}")
    return attribute(explainer, x, [{layer: [c]} for c in channels], target, batch_size=batch_size).heatmap
