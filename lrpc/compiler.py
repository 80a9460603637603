"""``lrpc.compile``: capture (torch.export) → canonicalize → annotate (rules, audit) → relevance pass → Explainer."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from . import batch_layouts, canonicalize
from .annotate import annotate
from .fingerprint import device_and_dtype
from .ops import shape
from .presets import resolve
from .relevance_pass import RelevancePass
from .rule_set import Rules
from .runtime import Explainer
from .tokens import (TokenInput, example_inputs, fixed_length, is_token_input, reads_positions, source_node,
                     vocabulary_size)
from .trace import OutputSelector, capture


def compile(model: nn.Module, rules: Rules | str | None = "default", example_input: torch.Tensor | None = None,
            *, output: OutputSelector = None, start: str | None = None,
            keep: Iterable[str] = (), debug: bool = False) -> Explainer:
    """Compile ``model`` into one relevance module under ``rules`` (a preset name or a ``Rules`` object).

    ``example_input`` (e.g. ``torch.randn(1, 3, 224, 224)``) is what ``torch.export`` captures the model on (any
    batch size is explained later; other sizes are checked); its dtype sets the dtype of the readout. Token ids
    (a LongTensor ``[B, T]``) compile a Hugging Face language model or text classifier, explained at its
    embedding lookup for any batch size and length, with an ``attention_mask`` per call (``lrpc.tokens``).
    ``output`` picks the scores when the model returns more than one tensor: a key (``'logits'``, the default
    when present, as in Hugging Face outputs), an index, or a function of the output structure.
    ``start`` overrides the rule set's start mode (one/logit/softmax).
    ``keep`` names nodes whose relevance and activation every explanation also returns
    (``exp.relevances[name]``, ``exp.activations[name]``); ``explainer.layer_names`` lists the valid names.
    ``debug=True`` makes the generated module check every forward activation and relevance message for NaN/Inf
    and raise an ``LrpcError`` naming the first node where one appears (slower; for finding bugs).
    The model is neither copied nor modified: the generated module calls its submodules and reads its
    parameters; rule constants (W⁺, folded BatchNorm, …) are new buffers computed here. The explainer follows
    the model: a call after the weights, buffers, device or dtype changed compiles again first (``rebuild``), and
    a model in training mode is refused. A single-score head ([B] or [B, 1]) is explained as the score:
    ``start="score"`` (the raw score) or ``"sigmoid"`` (the probability of a binary classifier).
    ``explainer.compile()`` then hands the generated module to ``torch.compile``, as ``model.compile()`` would.
    """
    if example_input is None:
        raise TypeError("lrpc.compile needs example_input, a tensor of the input's shape such as "
                        "torch.randn(1, 3, 224, 224)")
    keep = tuple(keep)   # iterated again by every rebuild
    rules = resolve(rules)
    if start is not None:
        rules = rules.replace(start=start)
    gm = capture(model, example_input, output)
    token_model = is_token_input(example_input)
    inputs = example_inputs(gm, example_input) if token_model else (example_input,)
    with torch.no_grad():
        reference = gm(*inputs)
    canonicalize.functionalize(gm)
    canonicalize.drop_identities(gm)
    canonicalize.decompose(gm)
    canonicalize.propagate_shapes(gm, *inputs)
    canonicalize.fold_constants(gm)
    canonicalize.fold_zero_padding(gm)
    if rules.batchnorm == "fold":
        canonicalize.fold_batchnorm(gm)
    canonicalize.check_same_output(reference, canonicalize.propagate_shapes(gm, *inputs), type(model).__name__)
    batch_layouts.measure(gm, inputs)
    plans, logits = annotate(gm, rules)
    dtype = source_node(gm).meta["tensor_meta"].dtype if token_model else example_input.dtype
    module, layer_names, pairings = RelevancePass(gm, plans, logits, rules.start, dtype, keep, debug).run()
    num_classes = shape(logits)[1] if len(shape(logits)) == 2 else 1
    token_input = TokenInput(vocabulary_size(gm), fixed_length(gm), reads_positions(gm)) if token_model else None
    explainer = Explainer(module, layer_names, rules, plans, pairings, example_input, num_classes, token_input)
    explainer.follow(model, rebuild(model, rules, example_input, output=output, keep=keep, debug=debug))
    return explainer


def rebuild(model: nn.Module, rules: Rules, example_input: torch.Tensor, **options) -> Callable[[], Explainer]:
    """A closure that compiles ``model`` again as it is when called, with the same arguments; the example input
    follows the model to a device or floating dtype it was moved or cast to since (``model.to(...)``)."""
    device, dtype = device_and_dtype(model)

    def compile_again() -> Explainer:
        now_device, now_dtype = device_and_dtype(model)
        example = example_input if now_device == device else example_input.to(now_device)
        if now_dtype != dtype and example.is_floating_point():
            example = example.to(now_dtype)
        return compile(model, rules, example, **options)
    return compile_again
