"""Sanity checks for explanation maps: conservation, target sensitivity, model-parameter randomisation."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["conservation_error", "model_randomisation", "spearman", "target_sensitivity"]


def conservation_error(relevance: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Relative error |sum(R) - reference| / |reference| per sample.

    ``relevance`` is [B, ...] (a map or input relevance), ``reference`` [B] what the sum should equal (the
    relevance the explanation started from, e.g. the explained class's softmax probability).
    """
    relevance, reference = torch.as_tensor(relevance), torch.as_tensor(reference)
    if reference.shape != relevance.shape[:1]:
        raise ValueError(f"reference must be [B={relevance.shape[0]}], got {tuple(reference.shape)}")
    total = relevance.detach().double().flatten(1).sum(1)
    reference = reference.detach().double().to(total.device)
    return (total - reference).abs() / reference.abs()


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..N-1 of each row, tied values sharing the mean of their ranks (as Spearman needs)."""
    order = values.argsort(dim=1)
    sorted_values = values.gather(1, order)
    ranks = torch.empty_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        _, inverse, counts = torch.unique_consecutive(sorted_values[row], return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        mean_rank = ends - (counts.double() + 1) / 2
        ranks[row, order[row]] = mean_rank[inverse]
    return ranks


def spearman(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps [B, ...]; NaN where a map is constant."""
    a, b = torch.as_tensor(maps_a), torch.as_tensor(maps_b)
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra = _average_ranks(a.detach().double().cpu().flatten(1))
    rb = _average_ranks(b.detach().double().cpu().flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def target_sensitivity(explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                       targets: torch.Tensor, other_targets: torch.Tensor) -> torch.Tensor:
    """Spearman correlation between the maps for ``targets`` and for ``other_targets`` (both [B]).

    ``explain(images, targets)`` returns maps [B, H, W]. A method that explains the class, not just the
    image, gives low correlations (Sixt et al., 2020 found many LRP variants near 1).
    """
    targets, other_targets = torch.as_tensor(targets), torch.as_tensor(other_targets)
    if (targets == other_targets).any():
        raise ValueError("targets and other_targets must differ for every image")
    return spearman(explain(images, targets), explain(images, other_targets))


def model_randomisation(explain: Callable[[nn.Module], torch.Tensor], model: nn.Module, *,
                        layers: Sequence[str] | None = None, seed: int = 0) -> list[dict]:
    """Cascading model-parameter randomisation (Adebayo et al., 2018).

    Re-initialises ``layers`` (module names, top first; default: the model's top-level children that hold
    parameters, output side first) one after another, cumulatively, on a copy of ``model``, and compares
    ``explain(randomised_model)`` with ``explain(model)``. Returns one entry per step:
    ``{"randomised": [names so far], "spearman": [B], "spearman_abs": [B]}``. Maps that stay similar while
    the weights become random do not explain the model.
    """
    reference = explain(model)
    if layers is None:
        layers = [name for name, child in model.named_children() if any(True for _ in child.parameters())][::-1]
    randomised = copy.deepcopy(model)
    names = dict(randomised.named_modules())
    missing = [name for name in layers if name not in names]
    if missing:
        raise ValueError(f"layers {missing} are not modules of {type(model).__name__}")
    generator_state = torch.random.get_rng_state()
    steps = []
    try:
        for step, name in enumerate(layers):
            torch.manual_seed(seed + step)
            for module in names[name].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            maps = explain(randomised)
            steps.append({"randomised": list(layers[:step + 1]), "spearman": spearman(reference, maps),
                          "spearman_abs": spearman(reference.abs(), maps.abs())})
    finally:
        torch.random.set_rng_state(generator_state)
    return steps
