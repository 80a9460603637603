"""Safe weight loading: ``.pth`` through ``torch.load(weights_only=True)`` and ``.safetensors``; never pickle."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import LrpcError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise LrpcError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise LrpcError("reading .safetensors needs the 'safetensors' package: pip install safetensors") from exc
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "state_dict", "model"):   # training checkpoints (timm's, Lightning's) wrap it
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise LrpcError(f"{path} does not hold a state_dict (found {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):   # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into ``model`` strictly; a mismatch names the missing, unexpected and mis-shaped keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if misshaped:
            parts.append("shape mismatches " + ", ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in misshaped[:8]))
        raise LrpcError(f"weights {path} do not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state)
    return model
