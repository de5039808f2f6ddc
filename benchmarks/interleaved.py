"""Median times of several candidates, measured round-robin, so a noisy machine slows them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# Seconds between two runs: the threads a run leaves spinning (ONNX Runtime's pool, OpenBLAS's) go to sleep before the
# next candidate starts, so that on two cores neither is timed with the other's idle threads on a core (measured: a
# run right after ONNX Runtime's took 1.4x its time alone, and ONNX Runtime's right after cnnx's up to 3x).
PAUSE = 0.1


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Each candidate warmed up once, then run once a round for ``rounds`` rounds, apart by ``PAUSE``; the median
    seconds of each."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()  # warm up
    for _ in range(rounds):
        for name, run in candidates.items():
            time.sleep(PAUSE)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
