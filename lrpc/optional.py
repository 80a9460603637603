"""Optional dependencies: zarr, pyarrow and tqdm (the ``dataset`` extra) are imported only where they are used
(a dataset job, its concept tables, its report), never at ``import lrpc``."""
from __future__ import annotations

import importlib

from .errors import LrpcError

__all__ = ["require"]

_PACKAGES = {"zarr": "zarr>=3.1,<3.2", "pyarrow": "pyarrow", "tqdm": "tqdm"}


def require(module: str):
    """Import ``module`` (``zarr``, ``pyarrow``, ``pyarrow.parquet``, ``tqdm``) or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _PACKAGES[module.partition(".")[0]]
        raise LrpcError(f"lrpc explain-dataset needs {package}, which is not installed: "
                        f"pip install 'lrpc[dataset]'") from exc
