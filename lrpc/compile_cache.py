"""Where ``explainer.compile()`` keeps torch.compile's on-disk caches, so that a second process starts warm.

``torch.compile`` (inductor) stores what it compiled on disk: the FX graph cache (the generated code and the
built C++ / Triton kernels) and the AOT autograd cache. A process that compiles the same generated module
again finds its entries there and skips inductor's code generation and the C++ compiler; only dynamo's tracing
runs again (ResNet-50 under ``otsuki2024`` at batch 8: a first call of 55 s in a first process, 5.7 s in a
second; the shipped ground-truth ResNet: 70.9 s and 2.7 s). ``explainer.compile(options={"freezing": True})``
folds the weights into constants instead: 2 % faster calls on ResNet-50, but then the AOT autograd cache takes
no part and every process folds and pre-packs the weights again (a warm first call of 11.8 s).

The directory is ``TORCHINDUCTOR_CACHE_DIR`` when it is set (by the user, or by an earlier ``torch.compile`` in
this process, which fixes it at its first compile); otherwise ``explainer.compile()`` sets it to
``$XDG_CACHE_HOME/lrpc/torch-compile`` (``~/.cache/lrpc/torch-compile``), a per-user directory that outlives a
reboot, where torch's own default sits under ``/tmp``.

What invalidates an entry is torch's cache key: the generated graph's code (so the model's architecture, the
rule set, the input's size, dtype, device and layout and the batch size of a static compile), the torch
version and inductor's configuration. Weight VALUES are not part of it: with ``freezing`` the folded weights
are constants the cached code reads by name, recomputed from the model in every process, so a model with
changed weights hits the cache and still gets its own answer (tested). Deleting the directory is always safe.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lrpc" / "torch-compile"


def use_cache_dir() -> str | None:
    """The directory torch.compile's caches use from now on in this process (see the module docstring); None
    where lrpc's default cannot be created (a read-only home), which leaves torch's own default."""
    if not os.environ.get(CACHE_DIR_VARIABLE):
        directory = default_cache_dir()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        os.environ[CACHE_DIR_VARIABLE] = str(directory)
    return os.environ[CACHE_DIR_VARIABLE]


def cache_hits() -> dict[str, int]:
    """This process's hits and misses of inductor's FX graph cache and of the AOT autograd cache so far."""
    from torch._dynamo.utils import counters
    return {"fx_graph_hits": counters["inductor"]["fxgraph_cache_hit"],
            "fx_graph_misses": counters["inductor"]["fxgraph_cache_miss"],
            "autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
            "autograd_misses": counters["aot_autograd"]["autograd_cache_miss"]}
