"""How cnnx uses the machine: how many threads, the fixed strip grid, and the thread pools.

Every module that works in parallel (the ops, statistics, colouring, image
loading, PNG writing) goes through here, so one setting (``CNNX_NUM_THREADS``
or ``set_num_threads``) governs them all, and a pool that is replaced is
shut down.  Work is cut into a fixed grid of strips whose size does not
depend on the thread count, so results do not either.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

from cnnx.base.choices import threads_from_environment

__all__ = [
    "STRIP_BYTES", "background", "blas_threads", "buffer", "num_threads", "run_tasks", "set_num_threads", "strips",
]

# Bytes a strip's buffers may take.  Measured on a 2-core EPYC (2 MiB L2 per
# core, 32 MiB L3): 4 MiB, about 64 rows of a 4096-wide image, was fastest;
# smaller strips lose to per-call overhead, which two threads contend for.
STRIP_BYTES = 1 << 22

_threads: int | None = None
_lock = threading.Lock()
# Two pools: the strips of one op (the calling thread runs one run of them), and work that goes on in the
# background while the next stage is computed (PNG encoding), which must never queue in front of the strips.
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_blas: ThreadpoolController | None = None
_blas_limit = None  # the limit in force while any thread runs strips
_blas_users = 0


def num_threads() -> int:
    """Threads cnnx uses: ``set_num_threads``, else ``CNNX_NUM_THREADS``, else the usable cores."""
    if _threads is not None:
        return _threads
    asked = threads_from_environment()
    if asked is not None:
        return asked
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Set the number of threads cnnx uses; ``None`` restores the default.  The pools are rebuilt on next use."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    with _lock:
        _threads = n
        for _, pool in _pools.values():
            pool.shutdown(wait=False)
        _pools.clear()


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The pool called ``name`` with ``workers`` threads; one of another size is shut down and replaced."""
    with _lock:
        held = _pools.get(name)
        if held is None or held[0] != workers:
            if held is not None:
                held[1].shutdown(wait=False)
            held = _pools[name] = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"cnnx-{name}"))
        return held[1]


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """A context in which BLAS runs on one thread, held while any thread is inside one.

    The strips already keep every core busy; OpenBLAS's own threads beside
    them made the products 2 to 4 times slower and erratic (measured here),
    and a product must round the same whatever the thread count.  The limit
    is the process's: it is set when the first thread enters and restored
    when the last leaves, so threads never undo it under each other.
    """
    global _blas, _blas_limit, _blas_users
    with _lock:
        if _blas_users == 0:
            _blas = _blas or ThreadpoolController()
            _blas_limit = _blas.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()


@contextmanager
def blas_threads() -> Iterator[None]:
    """BLAS on as many threads as cnnx uses, for one large product run outside the strips (one thread if so set);
    its overflow is quiet, as in the strips (``run_tasks``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if num_threads() == 1:
            with _single_threaded_blas():
                yield
        else:
            yield


# Element operations (multiply-adds, comparisons) below which an op's tasks all run on the calling thread. Handing
# work to another thread costs about 0.1 ms here (more when the other core has gone idle, as on a virtual machine),
# and a depthwise layer or pool of under a million operations took no longer on one thread than on two.
SERIAL_WORK = 1_000_000


def run_tasks(tasks: list, work: Callable[[object, dict], None], operations: int | None = None) -> None:
    """Call ``work(task, scratch)`` for every task; each thread runs a contiguous run of tasks with its own scratch.

    ``operations``, the whole work's element operations where the caller knows them: under ``SERIAL_WORK`` every
    task runs here, on the calling thread.
    """
    small = operations is not None and operations < SERIAL_WORK
    threads = 1 if small else min(num_threads(), len(tasks))
    runs = [tasks[k * len(tasks) // threads : (k + 1) * len(tasks) // threads] for k in range(max(threads, 1))]

    def run(chunk: list) -> None:
        scratch: dict = {}
        # float32 arithmetic that overflows, or meets NaN, gives inf or NaN: the statistics count them and the
        # command says so in one line, so numpy's warning (set per thread) would only repeat it with a source path.
        with np.errstate(over="ignore", invalid="ignore"):
            for task in chunk:
                work(task, scratch)

    with _single_threaded_blas():
        if threads <= 1:
            return run(tasks)
        pool = _pool("strips", max(num_threads() - 1, 1))
        futures = [pool.submit(run, chunk) for chunk in runs[1:]]
        run(runs[0])  # the calling thread takes the first run
        for future in futures:
            future.result()


def background(function: Callable, items) -> list[Future]:
    """``function(item)`` for every item on a pool as large as the thread count, while the caller goes on.

    With one thread they run here and now, one after another.
    """
    if num_threads() == 1:
        done = []
        for item in items:
            future: Future = Future()
            future.set_result(function(item))
            done.append(future)
        return done
    pool = _pool("background", num_threads())
    return [pool.submit(function, item) for item in items]


def buffer(scratch: dict, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """An array of ``shape`` (float32 unless told) from the thread's scratch, reused across strips (contents
    undefined)."""
    size = math.prod(shape)
    held = scratch.get(name)
    if held is None or held.size < size or held.dtype != dtype:
        held = scratch[name] = np.empty(size, dtype)
    return held[:size].reshape(shape)


def strips(n_rows: int, row_bytes: int) -> list[tuple[int, int]]:
    """The fixed grid of ``(first, stop)`` row strips for rows costing ``row_bytes`` each."""
    step = max(1, min(n_rows, STRIP_BYTES // max(1, row_bytes)))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]
