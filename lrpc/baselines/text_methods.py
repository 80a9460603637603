"""Baseline token attributions for Hugging Face language models and text classifiers, [B, T] like
``exp.heatmap()`` of a token model: captum's input × gradient and integrated gradients at the embedding output,
attention rollout, and a random map.

- The gradient methods take the embedding lookup's output as their input (where lrpc reads token relevance) and
  sum the attribution over the embedding's D. The explained score is a causal LM's logit of ``targets`` after
  each row's last real token, or a classifier's class logit. Integrated gradients integrates from the mean of
  the vocabulary's embeddings at every position, in ``steps`` steps (why not from zero: see the function).
- Attention rollout (Abnar & Zuidema 2020) reads the attention probabilities the model returns with
  ``output_attentions=True`` (Hugging Face's eager attention; SDPA returns none) and takes the row of the
  explained position (a causal LM's last real token, a classifier's first token, BERT's [CLS]); it is
  class-blind.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LrpcError
from ..tokens import last_real_position
from .attention import rollout_matrix
from .captum_methods import _captum_attr, _quiet_captum

__all__ = ["TEXT_BASELINES", "attention_rollout_tokens", "input_x_gradient_tokens", "integrated_gradients_tokens",
           "random_tokens", "token_baseline"]


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()


def _scores(model: nn.Module, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, classes]: a classifier's logits, or a causal LM's next-token logits after the last real token."""
    logits = model(inputs_embeds=embeddings, attention_mask=mask, use_cache=False).logits
    if logits.dim() == 3:
        logits = logits[torch.arange(logits.shape[0]), last_real_position(mask)]
    return logits


def _embed(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    if not callable(getattr(model, "get_input_embeddings", None)):
        raise LrpcError(f"token baselines need a Hugging Face text model (get_input_embeddings), got "
                        f"{type(model).__name__}")
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids)


def input_x_gradient_tokens(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                            attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    mask = _mask(input_ids, attention_mask)
    method = _captum_attr().InputXGradient(lambda e: _scores(model, e, mask))
    with _quiet_captum():
        return method.attribute(_embed(model, input_ids), target=targets).sum(-1).detach() * mask


def integrated_gradients_tokens(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                                attention_mask: torch.Tensor | None = None, steps: int = 32) -> torch.Tensor:
    mask = _mask(input_ids, attention_mask)
    embeddings = _embed(model, input_ids)
    # not all-zero embeddings: RMSNorm/LayerNorm are scale-invariant, so on the path α·x the model output barely
    # moves except for α within ~1e-3 of 0, which no quadrature with tens of steps resolves; the mean embedding
    # (an "average token" at every position) keeps the path away from that point
    baseline = model.get_input_embeddings().weight.detach().mean(0).expand_as(embeddings)
    # captum stacks the steps along the batch (up to 64 steps per forward): the mask is repeated to match
    method = _captum_attr().IntegratedGradients(
        lambda e: _scores(model, e, mask.repeat(e.shape[0] // mask.shape[0], 1)))
    with _quiet_captum():
        return method.attribute(embeddings, baselines=baseline, target=targets, n_steps=steps,
                                internal_batch_size=embeddings.shape[0] * min(steps, 64)).sum(-1).detach() * mask


def attention_rollout_tokens(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rollout's row of the explained position (``targets`` accepted and ignored: rollout is class-blind)."""
    mask = _mask(input_ids, attention_mask)
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=mask, output_attentions=True, use_cache=False)
    if not output.attentions:
        raise LrpcError(f"{type(model).__name__} returned no attention probabilities: load it with "
                        "attn_implementation='eager' (SDPA does not return them)")
    rollout = rollout_matrix(output.attentions)
    rows = torch.arange(input_ids.shape[0])
    # a causal LM predicts at the last real token; a classifier is read at its first token (BERT's [CLS])
    position = last_real_position(mask) if output.logits.dim() == 3 else torch.zeros_like(rows)
    return rollout[rows, position] * mask


def random_tokens(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(input_ids.shape, generator=generator) * _mask(input_ids, attention_mask)


TEXT_BASELINES = {"input_x_gradient": input_x_gradient_tokens, "integrated_gradients": integrated_gradients_tokens,
                  "attention_rollout": attention_rollout_tokens, "random": random_tokens}


def token_baseline(method: str, model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] token attribution of ``method`` (one of ``TEXT_BASELINES``)."""
    if method not in TEXT_BASELINES:
        raise LrpcError(f"unknown token baseline {method!r}; choose one of {tuple(TEXT_BASELINES)}")
    return TEXT_BASELINES[method](model, input_ids, targets, attention_mask)
