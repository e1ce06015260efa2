"""Runtimes that run exported models: ONNX Runtime here, Core ML on macOS, ONNX Runtime on an Android phone."""

from __future__ import annotations

import time
from typing import Callable


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Latency percentiles in ms of `call`, warm-up runs excluded."""
    import numpy as np

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(times)), "repeats": repeats}
