"""``explainer.compile()``: what an explainer hands to ``torch.compile``.

The arguments given to ``explainer.compile(**kwargs)`` are kept, so that every module the explainer runs later
(a rebuild after a model change, the multi-target and per-position rewrites, CRP's conditioned modules) is
compiled the same way. Compiled code is cached on disk (``lrpc.compile_cache``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

from .compile_cache import use_cache_dir


class TorchCompile:
    """The explainer's ``torch.compile`` arguments; None: its modules run eagerly."""

    def __init__(self):
        self.kwargs: dict | None = None

    def configure(self, kwargs: dict) -> None:
        """Compile from now on with ``kwargs``."""
        use_cache_dir()
        self.kwargs = kwargs

    def __call__(self, module: fx.GraphModule) -> Callable:
        """``module`` as calls run it: through ``torch.compile`` after ``configure``, else as it is."""
        return module if self.kwargs is None else torch.compile(module, **self.kwargs)
