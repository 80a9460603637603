"""The job folder ``JOB/``: what it holds, and how a run creates it, resumes it or refuses it.

``job.json`` is written once, when the job is created, and last (after the empty store and the parts folder),
so a folder with a ``job.json`` is a complete, resumable job. Its ``config`` is the job's identity: the model
(spec and a hash of its weights), rules, target, unit, stored arrays, metrics, preprocessing and a hash of the
image list. A run whose identity differs is refused unless ``overwrite``, which deletes the job's files (and
only those) and starts over. ``_SUCCESS`` is written after the merged table and the summary.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..outputs import prepare_output_dir
from ..errors import LrpcError

__all__ = ["JobFolder"]


class JobFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.job_json = self.path / "job.json"
        self.maps = self.path / "maps.zarr"
        self.parts = self.path / "parts"
        self.table = self.path / "table.parquet"
        self.concepts = self.path / "concepts.parquet"
        self.summary = self.path / "summary.json"
        self.success = self.path / "_SUCCESS"

    @property
    def _entries(self) -> tuple[Path, ...]:
        return (self.success, self.summary, self.concepts, self.table, self.job_json, self.parts, self.maps)

    def read_config(self) -> dict | None:
        if not self.job_json.is_file():
            return None
        try:
            return json.loads(self.job_json.read_text())["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise LrpcError(f"{self.job_json} is unreadable ({exc}); rerun with --overwrite to start over") from exc

    def open(self, config: dict, info: dict, *, overwrite: bool, create_store) -> None:
        """Make the folder hold a job of ``config``: create it, keep it (same config) or refuse / replace it.

        ``create_store(path)`` makes the empty store of a new job; ``info`` goes into ``job.json`` beside the
        config (for people, not compared).
        """
        prepare_output_dir(self.path)
        config = json.loads(json.dumps(config))  # as it reads back from job.json: lists, not tuples
        existing = self.read_config()
        if existing == config and not overwrite:
            missing = [entry.name for entry in (self.maps, self.parts) if not entry.is_dir()]
            if missing:
                raise LrpcError(f"{self.path} is damaged: {' and '.join(missing)} missing; rerun with --overwrite "
                                "to start over")
            return
        if existing is not None and not overwrite:
            raise LrpcError(f"{self.path} holds a job made with other settings ({_differences(existing, config)}); "
                            "rerun with the job's own settings to resume it, or pass --overwrite to discard "
                            "its results and start over")
        if existing is None:
            ours = {entry.name for entry in self._entries}
            foreign = sorted(entry.name for entry in os.scandir(self.path)
                             if entry.name not in ours and not entry.name.startswith("."))
            if foreign:
                raise LrpcError(f"{self.path} is not empty and holds no lrpc dataset job ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder")
        self._clear()  # leftovers of a creation that was interrupted before job.json, or the replaced job
        create_store(self.maps)
        self.parts.mkdir()
        _write_json(self.job_json, {"config": config, **info})

    def _clear(self) -> None:
        for entry in self._entries:
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()

    @property
    def complete(self) -> bool:
        return self.success.is_file()

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text())

    def finish(self, summary: dict) -> None:
        """Write the summary, then ``_SUCCESS`` (the table is already merged)."""
        _write_json(self.summary, summary)
        self.success.write_text("")


def _write_json(path: Path, content: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


def _differences(before: dict, now: dict) -> str:
    keys = [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    return "; ".join(f"{key}: {_short(before.get(key))} in the job, {_short(now.get(key))} now" for key in keys)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:16] + "…" + text[-8:]
