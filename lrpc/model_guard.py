"""Following the model: an explainer's answer always equals a fresh ``lrpc.compile``'s.

Rule constants (W⁺, folded BatchNorm, …) are computed from the weights at compile time, so an explainer whose
model changed since would answer for the old weights. The ``ModelGuard`` holds the explainer's current
``Build`` and, before every call, compares a fingerprint of the model (``lrpc.fingerprint``) with the one taken
at compile time; when the weights, buffers, device or dtype changed, it compiles again and swaps the build
whole. A model in training mode is refused. Calls share the build, a rebuild is exclusive (``SharedExclusive``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from .annotate import NodePlan
from .errors import LrpcError
from .fingerprint import Fingerprint, training_modules
from .relevance_pass import Pairing
from .tokens import TokenInput


@dataclass
class Build:
    """What one ``lrpc.compile`` produced; swapped whole when the explainer rebuilds, so a call never mixes two."""

    module: fx.GraphModule
    layer_names: list[str]
    plans: dict[str, NodePlan]
    pairings: dict[str, Pairing]
    input_shape: tuple[int, ...]
    num_classes: int
    dtype: torch.dtype                     # of example_input: the input dtype the module was compiled for
    device: torch.device
    run: Callable = None                   # the module, or torch.compile's wrapper of it
    multi_run: Callable | None = None      # built on the first explain_targets call
    positions_run: Callable | None = None  # built on the first explain_positions call
    fingerprint: Fingerprint | None = None  # of the model at compile time (None: not following a model)
    tokens: TokenInput | None = None       # a token model: what its calls must pass (else an image-like input)
    smoothing_sigma: tuple[float, ...] | None = None   # computed on first use (lrpc.views.stem_sigma)

    def __post_init__(self):
        self.run = self.run or self.module


class SharedExclusive:
    """Calls share, a rebuild is exclusive: capturing the model runs its submodules under tracing machinery that
    promises no thread safety, so a rebuild waits for the calls in flight and holds back new ones."""

    def __init__(self):
        self._condition = threading.Condition()
        self._active = 0
        self._exclusive = False

    @contextmanager
    def shared(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._active += 1
        try:
            yield
        finally:
            with self._condition:
                self._active -= 1
                self._condition.notify_all()

    @contextmanager
    def exclusive(self):
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._condition.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class ModelGuard:
    """An explainer's current ``Build``, kept equal to a fresh compile of the model it follows.

    ``prepare(module)`` turns a rebuilt module into what calls run (the explainer's ``torch.compile`` wrapper,
    or the module itself)."""

    def __init__(self, build: Build, prepare: Callable[[fx.GraphModule], Callable]):
        self.build = build
        self.model: nn.Module | None = None
        self.gate = SharedExclusive()
        self.rebuilds = 0                        # how often the model changed under this explainer
        self._rebuild: Callable[[], ModelGuard] | None = None
        self._prepare = prepare
        self._rebuild_lock = threading.Lock()    # one rebuild at a time; calls wait on the gate, not on this

    @property
    def follows_a_model(self) -> bool:
        return self._rebuild is not None

    def follow(self, model: nn.Module, rebuild: Callable[[], "ModelGuard"]) -> None:
        """Watch ``model`` from now on; ``rebuild()`` compiles it again as it is then and returns the fresh
        explainer's guard."""
        self.model, self._rebuild = model, rebuild
        self.build.fingerprint = Fingerprint.of(model)
        self._refuse_training(self.build.fingerprint)

    def current(self) -> Build:
        """The build that answers this call: the compiled one, or a fresh one when the model changed since."""
        if self.model is None:
            return self.build
        with self.gate.shared():   # a rebuild in flight has the parameters swapped for export's fake tensors
            state = Fingerprint.of(self.model)
        self._refuse_training(state)
        if state != self.build.fingerprint:
            self.rebuild_now(force=False)
        return self.build

    def rebuild_now(self, force: bool) -> None:
        """Compile again from the model as it is now (unless, without ``force``, it is unchanged after all)."""
        with self._rebuild_lock, self.gate.exclusive():
            if not force and Fingerprint.of(self.model) == self.build.fingerprint:
                return   # another thread rebuilt while this one waited
            fresh = self._rebuild()
            build, self._rebuild = fresh.build, fresh._rebuild
            build.run = self._prepare(build.module)
            self.build = build
            self.rebuilds += 1

    def _refuse_training(self, state: Fingerprint) -> None:
        if state.any_training:
            names = training_modules(self.model)
            raise LrpcError(f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''} in training mode: lrpc "
                            "explains the model in inference mode (BatchNorm with its running statistics, no "
                            "Dropout); call model.eval() before explaining")
