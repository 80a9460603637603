"""What one explainer call returns: the input relevance and the readouts of the relevance pass.

An ``Explanation`` holds the generated module's outputs for one batch (input relevance, scores, the per-sample
relevance at every graph cut and arriving at every node) and reads them: the start relevance, the sinks that
close the accounting, heatmaps as views (``lrpc.views``), leaks. File output (``dump``) goes through the
explainer, which owns the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from . import modalities
from .op_kinds import kind_of
from .views import heatmap_view

if TYPE_CHECKING:
    from .runtime import Explainer


@dataclass
class Explanation:
    """The result for one batch. ``layer_sums[name]`` is the relevance crossing the graph cut after that node."""

    relevance: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    layer_sum_matrix: torch.Tensor          # [B, L]
    node_sum_matrix: torch.Tensor           # [B, L]: relevance arriving at each node
    layer_names: list[str]
    explainer: "Explainer" = field(repr=False)
    relevances: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)    # nodes named in keep=
    activations: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)   # their forward outputs

    @property
    def start(self) -> torch.Tensor:
        return self.layer_sum_matrix[:, -1]

    @property
    def layer_sums(self) -> dict[str, torch.Tensor]:
        return {name: self.layer_sum_matrix[:, k] for k, name in enumerate(self.layer_names)}

    @property
    def absorbed_matrix(self) -> torch.Tensor:
        """[B, L]: relevance each node's op takes out of the flow (a bias, a stabiliser, a constant input such as
        a cls token); negative where an op creates relevance. The cut after a node minus the cut before it."""
        cut = self.layer_sum_matrix
        before = torch.cat([torch.zeros_like(cut[:, :1]), cut[:, :-1]], 1)
        absorbed = cut - before
        if kind_of(self.explainer.plans[self.layer_names[0]]).is_input:
            absorbed[:, 0] = 0   # its cut is the input relevance itself
        return absorbed

    @property
    def absorbed(self) -> dict[str, torch.Tensor]:
        """Node → [B]: every sink of the explanation, so that ``relevance.sum() + Σ absorbed == start`` per sample.
        Lists constants (always) and every node whose op takes more than rounding (100 ulp of |start|)."""
        matrix = self.absorbed_matrix
        scale = 100 * torch.finfo(matrix.dtype).eps * self.start.abs().unsqueeze(1)
        sinks = (matrix.abs() > scale).any(0).tolist()
        plans = self.explainer.plans
        return {name: matrix[:, k] for k, name in enumerate(self.layer_names)
                if sinks[k] or kind_of(plans[name]).absorbs_constant}

    @property
    def node_sums(self) -> dict[str, torch.Tensor]:
        return {name: self.node_sum_matrix[:, k] for k, name in enumerate(self.layer_names)}

    def heatmap(self, quantize: int | None = None, sign: str = "signed", smooth=None) -> torch.Tensor:
        """The input relevance summed over its channels, read as a view (``lrpc.views``; docs/views.md).

        The sum: [B, H, W] for images, [B, T] for waveforms, [B, C, T] kept per channel for multichannel signals,
        [B, T, H, W] for videos, [B, D, H, W] for volumes (``lrpc.modalities``); for a token model, the relevance
        of each token [B, T] (the sum over the embedding's D). Then, in this order: ``sign`` ("signed": R,
        "positive": max(R, 0), "absolute": |R|), ``smooth`` (a Gaussian blur: σ in pixels, or "auto":
        ``explainer.smoothing_sigma``, from the model's stem), ``quantize=8``: Heat Quantization with Q = 8.
        The defaults return the raw map; ``exp.relevance`` is never changed."""
        heat = (self.relevance.sum(-1) if self.explainer.tokens is not None
                else modalities.heatmap(self.relevance, self.explainer.channel_axis))
        return heatmap_view(heat, sign=sign, smooth=smooth, quantize=quantize,
                            auto=lambda: self.explainer.smoothing_sigma)

    def conservation_error(self) -> torch.Tensor:
        """Per sample: the largest |layer sum − start| relative to |start| (``lrpc.debug.accounting.start_scale``)."""
        from .debug.accounting import start_scale
        deviation = (self.layer_sum_matrix - self.start.unsqueeze(1)).abs().amax(1)
        return deviation / start_scale(self.start)

    def leaks(self, tol: float = 1e-6, relative: bool = True) -> list:
        """Nodes whose relevance op creates or loses more than ``tol`` (of |start| when ``relative``), largest
        first, as ``lrpc.debug.Leak(node, kind, delta [B], size)``. The first thing to run when a map looks wrong."""
        from .debug import leaks
        return leaks(self, tol, relative)

    def dump(self, path, *, sample: int | None = None):
        """``explainer.dump(path, explanation=self)``: the graph with this explanation's relevance per node."""
        return self.explainer.dump(path, self, sample=sample)