"""Where lrpc writes files: output directories checked before any work is done."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import LrpcError


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check a file can be written there, or raise an LrpcError saying why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lrpc-write-test-"):
            pass
    except FileExistsError as exc:
        raise LrpcError(f"output directory {path} cannot be created: a file of that name exists") from exc
    except OSError as exc:
        raise LrpcError(f"output directory {path} is not writable: {exc.strerror or exc}") from exc
    return path
