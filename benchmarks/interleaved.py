"""Median times of several candidates, measured round-robin, so a noisy machine slows them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int, repeat: int = 1) -> dict[str, float]:
    """Each candidate warmed up once, then in each of ``rounds`` rounds run ``repeat`` times in a row, the fastest of
    those counting; the median over the rounds of each.

    Runs of milliseconds want ``repeat`` of 2 or more: on two cores the first run after another candidate's is slowed
    by what that one left behind (ONNX Runtime's spinning threads, OpenBLAS's) and by cores gone idle. Measured:
    MobileNetV2 took 68 ms on cnnx run by turns with ONNX Runtime, 33 ms from the second run of a block on; ONNX
    Runtime's ResNet-50 took up to 3x its time alone right after cnnx's.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()  # warm up
    for _ in range(rounds):
        for name, run in candidates.items():
            block = []
            for _ in range(repeat):
                start = time.perf_counter()
                run()
                block.append(time.perf_counter() - start)
            times[name].append(min(block))
    return {name: statistics.median(values) for name, values in times.items()}
