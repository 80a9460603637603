"""zarr and pyarrow (the ``dataset`` extra) are imported only when a dataset job runs."""
from __future__ import annotations

import importlib

from ..errors import LrpcError

__all__ = ["require"]

_PACKAGES = {"zarr": "zarr>=3.1,<3.2", "pyarrow": "pyarrow"}


def require(module: str):
    """Import ``module`` (``zarr``, ``pyarrow``, ``pyarrow.parquet``) or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _PACKAGES[module.partition(".")[0]]
        raise LrpcError(f"lrpc explain-dataset writes its store with {package}, which is not installed: "
                        f"pip install 'lrpc[dataset]'") from exc
