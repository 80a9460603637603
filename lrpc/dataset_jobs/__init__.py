"""Explaining whole datasets as resumable jobs: ``lrpc explain-dataset`` / ``lrpc.explain_dataset`` on one process
or under ``torchrun``.

A job folder ``JOB/`` holds ``maps.zarr`` (``lrpc.dataset_jobs.store``), ``table.parquet``
(``lrpc.dataset_jobs.table``), ``job.json`` (``lrpc.dataset_jobs.job``), ``summary.json`` and ``_SUCCESS``. Images
are cut into units of consecutive indices (``lrpc.dataset_jobs.worklist``), each explained as one batch, stored as
one zarr chunk and committed by its table part; ranks split the missing units (``lrpc.dataset_jobs.distributed``).
zarr and pyarrow (``pip install 'lrpc[dataset]'``) are imported only when a job runs.
"""
from .engine import METRICS, describe, explain_dataset
from .store import decode

__all__ = ["METRICS", "decode", "describe", "explain_dataset"]
