"""Explain what a causal language model generates: each new token with respect to the prompt and the tokens
generated before it, as a ``[new tokens × all tokens]`` relevance matrix.

:func:`explain_generation` decodes greedily with the model's own forward (no cache), then explains every new
token in **one** forward pass over the whole text, with :meth:`lrpc.Explainer.explain_positions`: the logits at
position t, which predict the token at t + 1, are explained for N positions at once (the relevance pass runs on
B·N rows). A causal model's logits at position t depend on tokens 0 … t only, and so does every relevance
message started there (attention to later tokens is masked), so that row equals explaining the prefix that
produced the token, alone.

Relevance is read at the output of the token embedding lookup (as for any language model in lrpc):
``relevance`` is ``[B, N, T, D]``, the matrix its sum over D. Position and token-type embeddings are constants
that absorb their share (``absorbed``), so each row conserves: ``matrix.sum(-1) + sum(absorbed.values()) ==
start``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .compiler import compile as compile_explainer
from .errors import LrpcError
from .rule_set import Rules
from .runtime import Explainer

__all__ = ["GenerationExplanation", "explain_generation", "greedy_generate"]


@dataclass(frozen=True)
class GenerationExplanation:
    """``ids`` [B, P + N]: prompt and generated tokens. ``relevance`` [B, N, P + N, D] and ``matrix``
    [B, N, P + N]: row i explains token ``ids[:, P + i]``; its columns from P + i on are exactly 0 (what the
    token could not see). ``start`` [B, N]: the relevance placed on each explained logit; ``absorbed``: sink
    node → [B, N]; ``logits`` [B, N, V]: the scores each generated token was picked from."""

    ids: torch.Tensor
    prompt_length: int
    relevance: torch.Tensor
    matrix: torch.Tensor
    start: torch.Tensor
    absorbed: dict[str, torch.Tensor]
    logits: torch.Tensor

    @property
    def new_ids(self) -> torch.Tensor:
        """The generated tokens [B, N]."""
        return self.ids[:, self.prompt_length:]


def _check_prompt(model: nn.Module, input_ids) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise LrpcError(f"input_ids must be a LongTensor of token ids [B, T], got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise LrpcError(f"input_ids must be [B, T] with T >= 1 prompt tokens, got shape {tuple(input_ids.shape)}")
    if not callable(getattr(model, "get_input_embeddings", None)):
        raise LrpcError(f"explain_generation needs a Hugging Face causal language model (with "
                        f"get_input_embeddings), got a {type(model).__name__}")
    vocabulary = model.get_input_embeddings().num_embeddings
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocabulary:
        raise LrpcError(f"input_ids hold token ids outside the vocabulary [0, {vocabulary}): "
                        f"min {int(input_ids.min())}, max {int(input_ids.max())}")
    return input_ids.long()


def _next_token_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = getattr(model(input_ids=ids, use_cache=False), "logits", None)
    if logits is None or logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise LrpcError(f"explain_generation needs a causal language model returning .logits [B, T, vocab]; "
                        f"{type(model).__name__} returned {None if logits is None else tuple(logits.shape)}")
    return logits[:, -1]


def greedy_generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Prompt plus ``max_new_tokens`` greedily chosen tokens [B, P + N], one full forward per token (no cache)."""
    ids = _check_prompt(model, input_ids)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise LrpcError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if model.training:
        raise LrpcError(f"{type(model).__name__} is in training mode: call model.eval() first")
    with torch.no_grad():   # not inference_mode: the ids and embeddings returned may enter autograd later
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, _next_token_logits(model, ids).argmax(-1, keepdim=True)], dim=1)
    return ids


def explain_generation(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                       rules: Rules | str = "attnlrp", *, explainer: Explainer | None = None) -> GenerationExplanation:
    """Generate ``max_new_tokens`` tokens greedily after each prompt row of ``input_ids`` [B, P] (equal lengths,
    no padding) and explain each new token's logit under ``rules`` (a preset name or ``Rules``), all in one
    forward. ``explainer``: one already compiled from ``model`` on token ids (``lrpc.compile(model, rules,
    example_input=ids)``, any length), reused instead of compiling; ``rules`` is then its own. The model is
    neither copied nor changed."""
    ids = greedy_generate(model, input_ids, max_new_tokens)
    batch, total = ids.shape
    prompt = total - max_new_tokens
    if explainer is None:
        explainer = compile_explainer(model, rules, example_input=ids)
    exp = explainer.explain_positions(ids, range(prompt - 1, total - 1), ids[:, prompt:])
    relevance = exp.relevance.view(batch, max_new_tokens, total, -1)
    unseen = torch.arange(total, device=ids.device) >= prompt + torch.arange(max_new_tokens, device=ids.device)[:, None]
    if relevance.sum(-1)[:, unseen].abs().max() > 0:
        raise LrpcError(f"{type(model).__name__} is not a causal language model: a generated token's relevance "
                        "reaches tokens after it")
    logits = exp.logits.view(batch, max_new_tokens, -1)
    if not torch.equal(logits.argmax(-1), ids[:, prompt:]):
        # the explaining forward must pick the tokens step-by-step decoding picked; a tie broken differently
        # would explain a token that was not generated
        raise LrpcError("the explaining forward predicts other tokens than greedy decoding chose (two logits tied "
                        "within rounding)")
    return GenerationExplanation(
        ids=ids, prompt_length=prompt, relevance=relevance, matrix=relevance.sum(-1),
        start=exp.start.view(batch, max_new_tokens),
        absorbed={name: value.view(batch, max_new_tokens) for name, value in exp.absorbed.items()},
        logits=logits)
