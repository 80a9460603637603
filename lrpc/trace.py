"""Step 1 of the pipeline: symbolic tracing with torch.fx, with errors that say what to do."""
from __future__ import annotations

import os
import traceback
from typing import Iterable

import torch
import torch.fx as fx
from torch import nn

from .errors import LrpcError

_TORCH_DIR = os.path.dirname(torch.__file__)
_LRPC_DIR = os.path.dirname(__file__)


class LeafTracer(fx.Tracer):
    """fx's tracer, plus user-named leaf modules (by class or by qualified name) that are kept as one call."""

    def __init__(self, leaf_modules: Iterable[type | str] = ()):
        super().__init__()
        leaf_modules = tuple(leaf_modules)
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, self.leaf_types) or qualname in self.leaf_names
                or super().is_leaf_module(m, qualname))


def _user_frame(exc: BaseException):
    """The innermost traceback frame outside torch and lrpc: the user's line that could not be traced."""
    frames = [(f, f.f_locals.get("self")) for f, _ in traceback.walk_tb(exc.__traceback__)]
    summary = traceback.extract_tb(exc.__traceback__)
    user = [(s, owner) for s, (f, owner) in zip(summary, frames)
            if not s.filename.startswith((_TORCH_DIR, _LRPC_DIR))]
    return user[-1] if user else (None, None)


def trace(model: nn.Module, leaf_modules: Iterable[type | str] = ()) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule that shares (never copies) the model's submodules and parameters."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"lrpc.compile expects a torch.nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise LrpcError(f"{', '.join(training[:5])}{' ...' if len(training) > 5 else ''} in training mode: call "
                        "model.eval() before lrpc.compile (BatchNorm and Dropout must use their inference "
                        "behaviour; lrpc never changes the model's mode for you)")
    tracer = LeafTracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        frame, owner = _user_frame(exc)
        where = f" at {frame.filename}:{frame.lineno}: `{(frame.line or '').strip()}`" if frame else ""
        owner_name = type(owner).__name__ if isinstance(owner, nn.Module) else None
        leaf = owner_name or "TheModuleClass"
        hint = (f"mark the module that holds this line as a leaf and say how relevance crosses it, e.g. "
                f"lrpc.compile(model, leaf_modules=[{leaf}], rules=lrpc.preset('default').replace("
                f"layers=(({leaf}, lrpc.rules.Pass()),)), ...), or rewrite the line without tensor-dependent "
                "Python control flow")
        raise LrpcError(f"torch.fx could not trace {type(model).__name__}{where}: {type(exc).__name__}: {exc}. "
                        f"Tensor values are symbolic while tracing, so `if`/`for` on them cannot be recorded; "
                        f"{hint}.") from exc
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
