"""Deprecated alias of ``lrpc.dataset_jobs`` (the explain-dataset engine), and of each of its submodules.

Renamed because ``lrpc.dataset`` read like ``lrpc.data`` (the procedural tasks, shipped models and image reading)
while it holds the engine that explains a whole dataset as a resumable job. Removed in the next release.
"""
import importlib
import sys
import warnings

from ..dataset_jobs import *  # noqa: F403
from ..dataset_jobs import __all__  # noqa: F401

SUBMODULES = ("concepts", "distributed", "engine", "job", "progress", "store", "table", "worklist")

warnings.warn("lrpc.dataset is deprecated: import lrpc.dataset_jobs (the explain-dataset engine) instead; "
              "lrpc.dataset will be removed in the next release", DeprecationWarning, stacklevel=2)

for _name in SUBMODULES:   # `import lrpc.dataset.store` finds the one module under both names
    _module = importlib.import_module(f"lrpc.dataset_jobs.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module
