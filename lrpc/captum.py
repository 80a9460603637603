"""lrpc behind captum's attribution interface, for captum's metrics and the tools built on that interface.

    from lrpc.captum import LRPC
    relevance = LRPC(model, rules="epsilon-plus").attribute(x, target=labels)      # shaped like x
    captum.metrics.sensitivity_max(LRPC(model).attribute, x, target=labels)

``attribute(x, target)`` equals ``lrpc.compile(model, rules, example_input=x[:1])(x, target).relevance``. The model
is compiled on the first call for each input shape (channels and size; any batch) and the explainer is kept:
later calls reuse it, and it follows the model (a change of the weights compiles again, see ``lrpc.compile``).
captum itself is not needed to run this class.
"""
from __future__ import annotations

import torch
from torch import nn

from . import compiler
from .errors import LrpcError
from .rule_set import Rules
from .runtime import Explainer

__all__ = ["LRPC"]


class LRPC:
    """``LRPC(model, rules=...).attribute(inputs, target=...)``: input relevance shaped like ``inputs``.

    ``rules``: a preset name or a ``lrpc.Rules``; ``compile_options`` go to ``lrpc.compile`` (e.g. ``start=``).
    ``forward_func`` is the model, under the name captum's attribution methods give it.
    """

    def __init__(self, model: nn.Module, rules: Rules | str = "default", **compile_options):
        if not isinstance(model, nn.Module):
            raise LrpcError(f"LRPC explains a torch.nn.Module, got {type(model).__name__}")
        self.forward_func = model
        self.rules = rules
        self.compile_options = compile_options
        self._explainers: dict[tuple[int, ...], Explainer] = {}

    def explainer(self, inputs: torch.Tensor) -> Explainer:
        """The compiled explainer for inputs shaped like ``inputs`` (compiled on first use, then kept)."""
        key = tuple(inputs.shape[1:])
        if key not in self._explainers:
            self._explainers[key] = compiler.compile(self.forward_func, self.rules, example_input=inputs[:1].detach(),
                                                     **self.compile_options)
        return self._explainers[key]

    def attribute(self, inputs: torch.Tensor | tuple[torch.Tensor], target=None,
                  return_convergence_delta: bool = False):
        """Input relevance of ``target`` (an int, a list or LongTensor [B] of classes; None: the predicted class).

        As in captum, a one-tensor tuple in gives a one-tensor tuple out. ``return_convergence_delta=True`` also
        returns per sample the relevance total minus the relevance placed at the output (``exp.start``): how far
        the rule set is from conserving relevance (0 for a conserving one, up to float rounding).
        """
        as_tuple = isinstance(inputs, tuple)
        if as_tuple:
            if len(inputs) != 1:
                raise LrpcError(f"LRPC explains models with one input tensor, got a tuple of {len(inputs)}")
            (inputs,) = inputs
        if not isinstance(inputs, torch.Tensor):
            raise LrpcError(f"inputs must be a tensor [B, ...], got {type(inputs).__name__}")
        if isinstance(target, list):
            target = torch.as_tensor(target, dtype=torch.long, device=inputs.device)
        elif isinstance(target, tuple):
            raise LrpcError(f"target {target!r}: tuple targets index multi-dimensional outputs, which lrpc does not "
                            f"explain; pass a class index per sample")
        explanation = self.explainer(inputs)(inputs.detach(), target)
        # A normal tensor, not an inference tensor: captum's metrics compute on it with autograd enabled.
        relevance = explanation.relevance.clone()
        if as_tuple:
            relevance = (relevance,)
        if not return_convergence_delta:
            return relevance
        return relevance, explanation.relevance.flatten(1).sum(1) - explanation.start

    def has_convergence_delta(self) -> bool:
        return True

    def __repr__(self) -> str:
        rules = self.rules if isinstance(self.rules, str) else self.rules.name
        return f"LRPC({type(self.forward_func).__name__}, rules={rules!r})"
