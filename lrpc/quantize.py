"""Heat Quantization (Otsuki et al. 2024, Eq. 8 as their code computes it; docs/metrics.md)."""
from __future__ import annotations

import torch


def heat_quantize(heatmap: torch.Tensor, levels: int = 8) -> torch.Tensor:
    """Per image: Δ = (max − min)/(Q − 1), HQ(x) = min + Δ·floor((x − min)/Δ). Accepts [H, W] or [B, H, W].

    A constant map (Δ = 0) is returned unchanged."""
    if levels < 2:
        raise ValueError(f"heat_quantize needs at least 2 levels, got {levels}")
    if heatmap.dim() not in (2, 3):
        raise ValueError(f"heat_quantize expects a map [H, W] or a batch [B, H, W], got shape {tuple(heatmap.shape)}")
    batch = heatmap if heatmap.dim() == 3 else heatmap.unsqueeze(0)
    flat = batch.reshape(batch.shape[0], -1)
    low = flat.min(1).values.view(-1, 1, 1)
    step = (flat.max(1).values.view(-1, 1, 1) - low) / (levels - 1)
    safe_step = torch.where(step > 0, step, torch.ones_like(step))
    quantized = torch.where(step > 0, low + step * torch.floor((batch - low) / safe_step), batch)
    return quantized if heatmap.dim() == 3 else quantized[0]
