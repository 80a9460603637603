"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``: this folder is on the path)."""
from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)
