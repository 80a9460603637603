"""Token models: a language model or text classifier captured from its token ids, explained at its embeddings.

``lrpc.compile(model, rules, example_input=input_ids)`` with an integer ``example_input`` takes this path. The
model is exported with two inputs, ``input_ids`` and ``attention_mask`` (batch and sequence length dynamic, no
cache: ``use_cache=False``). What it builds from them that does not depend on the embeddings' values — causal,
padding and sliding-window masks, position ids, a classifier's "last non-padding token" index — carries no
relevance: it is a constant of the explanation, as an image model's buffers are.

The input layer is the embedding lookup of ``input_ids`` (``aten.embedding``): relevance is reported at its
output ``[B, T, D]``, and everything else that enters the signal without it (positional and token-type
embeddings) absorbs its share like a cls token.

A causal language model's logits ``[B, T, V]`` are read where a third input ``positions`` [B, K] says: a call
passes each row's last real token (the last position whose mask is 1), so the explained score is the next token
after the text, padded on the right or on the left; ``Explainer.explain_positions`` passes several. Where
the model takes ``position_ids`` and can generate, they are computed from the mask as ``generate`` does
(``cumsum(mask) − 1``), so a left-padded row is positioned as the same text alone.
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from . import kernels
from .errors import LrpcError
from .ops import SOURCE

aten = torch.ops.aten
# value-preserving ops between ``input_ids`` and the lookup of the word embeddings (a view, a cast)
_ID_CARRIERS = {aten.view, aten.reshape, aten._to_copy, aten.to, aten.contiguous, aten.clone, aten.alias}


@dataclass(frozen=True)
class TokenInput:
    """What a call must pass: token ids below ``vocab_size`` (the rows of the embedding matrix)."""

    vocab_size: int
    length: int | None         # the one sequence length export allowed, or None: any length
    per_position: bool         # a language model: scores per position, read where ``positions`` says


def example_inputs(gm: fx.GraphModule, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the captured graph takes at compile time: the ids with an all-ones mask (``graph_inputs``)."""
    return graph_inputs(input_ids, torch.ones_like(input_ids), reads_positions(gm))


def graph_inputs(input_ids: torch.Tensor, mask: torch.Tensor, per_position: bool) -> tuple[torch.Tensor, ...]:
    """The captured graph's inputs: ids and mask, and for a language model each row's last real position."""
    return (input_ids, mask, last_real_position(mask)[:, None]) if per_position else (input_ids, mask)


def reads_positions(gm: fx.GraphModule) -> bool:
    return any(n.op == "placeholder" and n.name == "positions" for n in gm.graph.nodes)


def is_token_input(example_input) -> bool:
    return isinstance(example_input, torch.Tensor) and not example_input.is_floating_point() \
        and not example_input.is_complex() and example_input.dtype != torch.bool


def export_tokens(model: nn.Module, input_ids: torch.Tensor):
    """``torch.export`` of ``model(input_ids=…, attention_mask=…)`` with batch and length dynamic."""
    if input_ids.dim() != 2:
        raise LrpcError(f"token ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    example = input_ids
    if example.shape[0] < 2:   # export specialises a size of 1 to the constant 1
        example = example[:1].expand(2, -1)
    if example.shape[1] < 2:
        example = example[:, :1].expand(-1, 2)
    example = example.contiguous().long()
    accepted = inspect.signature(model.forward).parameters
    kwargs = {"input_ids": example, "attention_mask": torch.ones_like(example)}
    dynamic = {"input_ids": {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},
               "attention_mask": {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}}
    if "position_ids" in accepted and _generates(model):
        kwargs["position_ids"] = positions_from_mask(kwargs["attention_mask"])
        dynamic["position_ids"] = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    if "use_cache" in accepted:
        kwargs["use_cache"], dynamic["use_cache"] = False, None
    return torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=dynamic, strict=False)


def _generates(model: nn.Module) -> bool:
    can_generate = getattr(model, "can_generate", None)
    try:
        return bool(can_generate()) if callable(can_generate) else False
    except Exception:   # noqa: BLE001 - a model's own can_generate may insist on a config it lacks
        return False


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as Hugging Face's ``generate`` computes them: the count of real tokens before, padding at 1."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def last_real_position(mask: torch.Tensor) -> torch.Tensor:
    """[B]: the index of each row's last real token (mask 1), for right and left padding alike."""
    index = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask != 0, index, -1).amax(1)


def prepare_graph(gm: fx.GraphModule) -> None:
    """Make an exported token model's graph read ``(input_ids, attention_mask)``: drop the ``use_cache`` input,
    compute ``position_ids`` from the mask, and mark the word-embedding lookup as the relevance source."""
    placeholders = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    mask = placeholders["attention_mask"]
    if "position_ids" in placeholders:
        node = placeholders["position_ids"]
        with gm.graph.inserting_after(mask):
            computed = gm.graph.call_function(positions_from_mask, (mask,))
        node.replace_all_uses_with(computed)
        gm.graph.erase_node(node)
    for name, node in placeholders.items():
        if name not in ("input_ids", "attention_mask", "position_ids") and not node.users:
            gm.graph.erase_node(node)
    lookups = [n for n in gm.graph.nodes if getattr(n.target, "overloadpacket", None) is aten.embedding
               and _reads_ids(n.args[1], placeholders["input_ids"])]
    if len(lookups) != 1:
        raise LrpcError(f"lrpc explains a token model at its embedding lookup of input_ids, but found "
                        f"{len(lookups)} lookups of input_ids ({', '.join(n.name for n in lookups) or 'none'}); "
                        "pass the embeddings as a float input through a module of your own instead")
    lookups[0].meta[SOURCE] = True
    output = next(n for n in gm.graph.nodes if n.op == "output")
    scores = output.args[0]
    if isinstance(scores.meta.get("val"), torch.Tensor) and scores.meta["val"].dim() == 3:
        output.args = (read_positions(gm, scores),)
        gm.graph.eliminate_dead_code()   # the head on every position, now read at the picked rows instead
    gm.graph.lint()
    gm.recompile()


def _reads_ids(node, ids: fx.Node) -> bool:
    while isinstance(node, fx.Node) and node is not ids and getattr(node.target, "overloadpacket", None) \
            in _ID_CARRIERS:
        node = node.args[0]
    return node is ids


def read_positions(gm: fx.GraphModule, scores: fx.Node) -> fx.Node:
    """scores [B, T, V] → [B·K, V] at K positions per row, a new input ``positions`` [B, K] (a call passes each
    row's last real token, ``explain_positions`` several positions). The positions are read before the ops at
    the top that act on each position alone (the head's projection, a logit soft-cap), so that the head — for a
    language model the largest matrix — runs forward and backward on the explained positions only."""
    mask = next(n for n in gm.graph.nodes if n.op == "placeholder" and n.name == "attention_mask")
    with gm.graph.inserting_after(mask):
        positions = gm.graph.placeholder("positions")
    chain = _per_position_head(scores)
    hidden = chain[-1].args[0] if chain else scores
    with gm.graph.inserting_after(scores):
        picked = gm.graph.call_function(kernels.pick_scores, (hidden, positions))
    for node in reversed(chain):   # the head again, on the picked rows
        if _is_full_slice(node):
            continue
        with gm.graph.inserting_after(picked):
            picked = gm.graph.node_copy(node, lambda a, node=node, prev=picked: prev if a is node.args[0] else a)
        picked.meta.pop("val", None)   # export's symbolic [B, T, V]: the rows are B·K now
    return picked


# ops on the last dimension alone, applied to each position by itself
_PER_POSITION = {aten.linear, aten.mul, aten.div, aten.tanh, aten._to_copy, aten.to}


def _is_full_slice(node: fx.Node) -> bool:
    """``x[:, 0:]``, as Hugging Face's ``logits_to_keep=0`` spells "every position"."""
    if getattr(node.target, "overloadpacket", None) is not aten.slice or len(node.args) < 2:
        return False
    dim, start, end, step = (list(node.args[1:]) + [0, None, 1][len(node.args) - 2:])[:4]
    return dim in (0, 1) and start in (0, None) and step == 1 and (end is None or
                                                                    (isinstance(end, int) and end >= 2 ** 62))


def _per_position_head(scores: fx.Node) -> list[fx.Node]:
    """The ops from ``scores`` down that act on each position alone, each the only reader of the one below."""
    chain, node = [], scores
    while isinstance(node, fx.Node) and node.op == "call_function" and node.args and \
            isinstance(node.args[0], fx.Node) and len(node.args[0].users) == 1:
        packet = getattr(node.target, "overloadpacket", None)
        constants = all(not isinstance(a, fx.Node) or a.op == "get_attr" for a in (*node.args[1:],
                                                                                  *node.kwargs.values()))
        if not (_is_full_slice(node) or (packet in _PER_POSITION and constants)):
            break
        chain.append(node)
        node = node.args[0]
    return chain


def fixed_length(gm: fx.GraphModule) -> int | None:
    """None where export kept the sequence length dynamic, else the length it specialised the graph to."""
    ids = next(n for n in gm.graph.nodes if n.op == "placeholder" and n.name == "input_ids")
    length = ids.meta["val"].shape[1]
    return None if isinstance(length, torch.SymInt) else int(length)


def source_node(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.meta.get(SOURCE))


def vocabulary_size(gm: fx.GraphModule) -> int:
    """Rows of the word-embedding matrix the source looks ids up in."""
    weight = source_node(gm).args[0]
    return int(operator.attrgetter(weight.target)(gm).shape[0])


def check_positions(positions, mask: torch.Tensor) -> torch.Tensor:
    """``positions`` of ``explain_positions`` as a LongTensor [B, K] of real tokens of each row."""
    if isinstance(positions, range):
        positions = list(positions)
    if isinstance(positions, (list, tuple)):
        if not positions or not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
            raise LrpcError(f"positions must be a non-empty list of ints or a LongTensor [K] or [B, K], got "
                            f"{positions!r}")
        positions = torch.tensor(positions, dtype=torch.long, device=mask.device)
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point():
        raise LrpcError(f"positions must be a list of ints or a LongTensor [K] or [B, K], got {positions!r}")
    if positions.dim() == 1:
        positions = positions.unsqueeze(0).expand(mask.shape[0], -1)
    if positions.dim() != 2 or positions.shape[0] != mask.shape[0] or positions.shape[1] == 0:
        raise LrpcError(f"positions must be [K] or [B, K] with B = {mask.shape[0]} rows, got shape "
                        f"{tuple(positions.shape)}")
    positions = positions.to(device=mask.device, dtype=torch.long)
    outside = (positions < 0) | (positions >= mask.shape[1])
    if bool(outside.any()):
        raise LrpcError(f"positions {positions[outside].tolist()} outside the sequence of length {mask.shape[1]}")
    padding = mask.gather(1, positions) == 0
    if bool(padding.any()):
        raise LrpcError(f"positions {positions[padding].tolist()} are padding (attention_mask 0) in their rows")
    return positions.contiguous()


def check_tokens(input_ids, attention_mask, tokens: TokenInput, device) -> torch.Tensor:
    """Validate a call's ids and mask; returns the mask (all ones when None) as a LongTensor."""
    if not isinstance(input_ids, torch.Tensor):
        raise LrpcError(f"input_ids must be a LongTensor [batch, length], got {type(input_ids).__name__}")
    if not is_token_input(input_ids):
        raise LrpcError(f"this explainer was compiled for a token model and takes token ids (a LongTensor "
                        f"[batch, length]), got a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise LrpcError(f"input_ids must be [batch, length] with length >= 1, got shape {tuple(input_ids.shape)}")
    if tokens.length is not None and input_ids.shape[1] != tokens.length:
        raise LrpcError(f"input_ids have length {input_ids.shape[1]}, but torch.export could capture this model "
                        f"for length {tokens.length} only; pad to that length (with attention_mask 0)")
    if input_ids.device.type != torch.device(device).type:
        raise LrpcError(f"input_ids are on {input_ids.device}, the explainer's model on {device}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= tokens.vocab_size:
        raise LrpcError(f"input_ids hold token {low if low < 0 else high}, outside the vocabulary of "
                        f"{tokens.vocab_size} embeddings")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.long)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise LrpcError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {got}")
    if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
        raise LrpcError("attention_mask must hold 0 (padding) and 1 (a real token) only")
    empty = (attention_mask == 0).all(1)
    if bool(empty.any()):
        raise LrpcError(f"rows {empty.nonzero().flatten().tolist()} of attention_mask are all padding: there is "
                        "no token to explain")
    return attention_mask.to(device=input_ids.device, dtype=torch.long)
