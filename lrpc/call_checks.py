"""What an explainer call is given, checked before the generated module sees it: the input, the targets, and the
model's own scores. Each refusal is an ``LrpcError`` that names the argument, its shape or dtype and the fix.
"""
from __future__ import annotations

import torch

from .errors import LrpcError
from .model_guard import Build
from .tokens import check_tokens, graph_inputs


def check_input(x: torch.Tensor, build: Build) -> None:
    """An image-like input: the example_input's rank, sizes after the batch, dtype and device; finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a tensor, got {type(x).__name__}")
    if x.dim() != len(build.input_shape):
        raise LrpcError(f"input has {x.dim()} dimensions {tuple(x.shape)}, the model was compiled for "
                        f"{len(build.input_shape)} like {build.input_shape} (add a batch dimension?)")
    if len(build.input_shape) > 1 and x.shape[1] != build.input_shape[1]:
        raise LrpcError(f"input has {x.shape[1]} channels {tuple(x.shape)}, the model expects "
                        f"{build.input_shape[1]}")
    if tuple(x.shape[1:]) != build.input_shape[1:]:
        # torch.export specialises every size but the batch: a graph run on another size may compute
        # something else without failing (a baked-in reshape, an interpolated position embedding)
        raise LrpcError(f"input of shape {tuple(x.shape)} differs in size from the example_input "
                        f"{build.input_shape} the module was compiled for; compile with an example_input "
                        "of this size")
    if not x.is_floating_point():
        raise LrpcError(f"input must be a floating-point tensor, got {x.dtype}")
    if x.dtype != build.dtype:   # refused, not converted: a silent cast would change the answer's precision
        raise LrpcError(f"input is {x.dtype}, the explainer was compiled for {build.dtype} (the dtype of "
                        f"example_input and the model); pass x.to({build.dtype}), or cast the model and "
                        f"compile with an example_input of {x.dtype}")
    if not _same_device(x.device, build.device):
        raise LrpcError(f"input is on {x.device}, the explainer's model on {build.device}; pass "
                        f"x.to({str(build.device)!r}) or move the model")
    if not bool(torch.isfinite(x).all()):
        raise LrpcError("input contains NaN or Inf values")


def module_inputs(x, attention_mask, build: Build) -> tuple[torch.Tensor, ...]:
    """The generated module's inputs, checked: ``(x,)``, or a token model's ``(input_ids, attention_mask)``."""
    if build.tokens is not None:
        mask = check_tokens(x, attention_mask, build.tokens, build.device)
        return graph_inputs(x, mask, build.tokens.per_position)
    if attention_mask is not None:
        raise LrpcError("attention_mask is for token models (compiled from token ids); this explainer was "
                        f"compiled for inputs like {build.input_shape}")
    check_input(x, build)
    return (x,)


def check_target(target, batch: int, num_classes: int, device, classes: str = "classes") -> torch.Tensor | None:
    """``target`` as a LongTensor [B], or [B, 2] for a contrast ``(a, b)``: the score of a minus that of b.
    ``classes`` names what the scores score in a refusal ("classes", or a language model's tokens)."""
    if target is None:
        return None
    if isinstance(target, tuple):
        if len(target) != 2 or any(t is None for t in target):
            raise LrpcError(f"a contrastive target is a pair (a, b) of ints or LongTensors [B], got {target!r}")
        return torch.stack([check_target(t, batch, num_classes, device, classes) for t in target], 1)
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((batch,), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        if target.dtype not in (torch.int64, torch.int32):
            raise LrpcError(f"target must be an int or a LongTensor [B], got a {target.dtype} tensor")
        target = target.to(device=device, dtype=torch.long).reshape(-1)
        if target.numel() == 1 and batch != 1:
            target = target.expand(batch)
        if target.numel() != batch:
            raise LrpcError(f"target has {target.numel()} entries for a batch of {batch}")
    else:
        raise LrpcError(f"target must be None, an int or a LongTensor [B], or a pair (a, b) of them (a "
                        f"contrast), got {type(target).__name__}")
    bad = (target < 0) | (target >= num_classes)
    if bool(bad.any()):
        raise LrpcError(f"target {target[bad].tolist()} out of range for {num_classes} {classes}")
    return target


def target_matrix(targets, batch: int, device) -> torch.Tensor:
    """``targets`` of explain_targets (K per image, or one row per image) as a LongTensor [B, K]."""
    if isinstance(targets, range):
        targets = list(targets)
    if isinstance(targets, (list, tuple)):
        if not targets or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
            raise LrpcError(f"targets must be a non-empty list of class indices, got {targets!r}")
        targets = torch.tensor(targets, dtype=torch.long, device=device)
    if not isinstance(targets, torch.Tensor):
        raise LrpcError(f"targets must be a list of ints or a LongTensor [K] or [B, K], got "
                        f"{type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise LrpcError(f"targets must be an integer tensor, got {targets.dtype}")
    if targets.dim() == 1:
        targets = targets.unsqueeze(0).expand(batch, -1)
    if targets.dim() != 2 or targets.shape[0] != batch or targets.shape[1] == 0:
        raise LrpcError(f"targets must be [K] or [B, K] with B = {batch} images and K >= 1, got shape "
                        f"{tuple(targets.shape)}")
    return targets.to(device=device, dtype=torch.long)


def check_scores(logits: torch.Tensor, build: Build) -> None:
    """A token model's own forward can fail on a mask (Hugging Face's eager attention turns a query whose
    keys are all padding, as a sliding window over left padding gives, into NaN): say so, not a NaN map."""
    if build.tokens is None:
        return
    bad = ~torch.isfinite(logits).reshape(len(logits), -1).all(1)
    if bool(bad.any()):
        raise LrpcError(f"the model's own forward gives NaN/Inf scores for rows {bad.nonzero().flatten().tolist()}"
                        " with this attention_mask (in eager attention a query whose keys are all padding, "
                        "e.g. a sliding window over left padding, gives NaN); pad on the right or use SDPA")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device here (``model.to("cuda")`` gives the one, tensors the other)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
