"""``explainer.compile()``: what an explainer hands to ``torch.compile``, and when it keeps eager code.

The arguments given to ``explainer.compile(**kwargs)`` are kept, so that every module the explainer runs later
(a rebuild after a model change, the multi-target and per-position rewrites, CRP's conditioned modules) is
compiled the same way. Compiled code is cached on disk (``lrpc.compile_cache``).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.fx as fx

from .compile_cache import use_cache_dir


class TorchCompile:
    """The explainer's ``torch.compile`` arguments; None: its modules run eagerly."""

    def __init__(self):
        self.kwargs: dict | None = None

    def configure(self, plans: dict, kwargs: dict) -> None:
        """Compile from now on with ``kwargs``, unless a layer uses the z⁺ fallback (then say why not)."""
        use_cache_dir()
        fallback = sorted(name for name, plan in plans.items() if getattr(plan.rule, "fallback", False))
        if fallback:
            warnings.warn(f"explainer.compile(): {len(fallback)} layers (e.g. {fallback[0]!r}) use the z+ fallback, "
                          "which compiled code would run always and eager code runs only where needed; this "
                          "explainer keeps its eager code (faster here)", stacklevel=3)
        self.kwargs = None if fallback else kwargs

    def __call__(self, module: fx.GraphModule) -> Callable:
        """``module`` as calls run it: through ``torch.compile`` after ``configure``, else as it is."""
        return module if self.kwargs is None else torch.compile(module, **self.kwargs)
