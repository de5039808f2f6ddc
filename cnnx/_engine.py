"""How the ops run fast: cache-sized row strips, a small thread pool, contiguous tap views.

The output rows are cut into a fixed grid of strips whose working set fits in
the L2 cache.  Each strip gathers the padded input rows it needs into a
buffer of its own (so the image is never padded as a whole), then visits the
kernel's taps.  With stride 1 a strip is one flat array: the tap at (i, j) is
the contiguous slice starting ``i*dilation*W_padded + j*dilation`` elements in,
and each output row carries ``W_padded - W_out`` wrapped columns that are
dropped when the strip is stored.

Threads take contiguous runs of the strip grid.  A strip computes the same
numbers whichever thread runs it and however many there are, so results do
not depend on the thread count.  numpy releases the GIL inside its loops and
BLAS calls, which is what lets two Python threads use two cores.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from threadpoolctl import ThreadpoolController

# Bytes a strip's buffers may take.  Measured on a 2-core EPYC (2 MiB L2 per
# core, 32 MiB L3): 4 MiB, about 64 rows of a 4096-wide image, was fastest;
# smaller strips lose to per-call overhead, which two threads contend for.
STRIP_BYTES = 1 << 22

_threads: int | None = None
_executor: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None


def num_threads() -> int:
    """Threads the ops use: ``set_num_threads``, else ``CNNX_NUM_THREADS``, else the usable cores."""
    if _threads is not None:
        return _threads
    env = os.environ.get("CNNX_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the ops use; ``None`` restores the default."""
    global _threads, _executor
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    _threads = n
    if _executor is not None:
        _executor.shutdown()
        _executor = None


def _single_threaded_blas():
    """A context in which BLAS runs on one thread.

    The strips already keep every core busy; OpenBLAS's own threads beside
    them made the products 2 to 4 times slower and erratic (measured here).
    """
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def run_tasks(tasks: list, work: Callable[[object, dict], None]) -> None:
    """Call ``work(task, scratch)`` for every task; each thread runs a contiguous run of tasks with its own scratch."""
    threads = min(num_threads(), len(tasks))
    runs = [tasks[k * len(tasks) // threads : (k + 1) * len(tasks) // threads] for k in range(max(threads, 1))]

    def run(chunk: list) -> None:
        scratch: dict = {}
        for task in chunk:
            work(task, scratch)

    if threads <= 1:
        return run(tasks)
    with _single_threaded_blas():
        _run_on_pool(runs, run)


def _run_on_pool(runs: list[list], run: Callable[[list], None]) -> None:
    """The first run on the calling thread, the others on the pool."""
    global _executor
    threads = len(runs)
    if _executor is None or _executor._max_workers < threads - 1:
        _executor = ThreadPoolExecutor(max_workers=max(num_threads() - 1, 1), thread_name_prefix="cnnx")
    futures = [_executor.submit(run, chunk) for chunk in runs[1:]]
    run(runs[0])
    for future in futures:
        future.result()


def buffer(scratch: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of ``shape`` from the thread's scratch, reused across strips (contents undefined)."""
    size = math.prod(shape)
    held = scratch.get(name)
    if held is None or held.size < size:
        held = scratch[name] = np.empty(size, np.float32)
    return held[:size].reshape(shape)


def strips(n_rows: int, row_bytes: int) -> list[tuple[int, int]]:
    """The fixed grid of ``(first, stop)`` output-row strips for rows costing ``row_bytes`` each."""
    step = max(1, min(n_rows, STRIP_BYTES // max(1, row_bytes)))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def border_map(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The input index each padded coordinate reads, as ``torch.nn.functional.pad`` does; -1 reads the fill value."""
    if mode == "zeros":
        return np.where((index >= 0) & (index < size), index, -1)
    if mode == "replicate":
        return np.clip(index, 0, size - 1)
    if mode == "circular":
        return index % size
    period = 2 * (size - 1)  # reflect: mirror about the edge pixels without repeating them
    if period == 0:
        return np.zeros_like(index)
    folded = np.abs(index) % period
    return np.where(folded >= size, period - folded, folded)


def border_columns(W: int, pads, mode: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the left and right padding columns read from, as indices into a padded row; None for a fill."""
    (_, _), (left, right) = pads
    if mode == "zeros" or not (left or right):
        return None
    return left + border_map(np.arange(-left, 0), W, mode), left + border_map(np.arange(W, W + right), W, mode)


def gather_rows(x: np.ndarray, first: int, stop: int, pads, mode: str, fill: float, columns, out: np.ndarray) -> np.ndarray:
    """Copy padded rows ``first:stop`` of the (C, H, W) image into ``out`` (C, stop-first, W_padded).

    ``columns`` is what ``border_columns`` gave for this image, padding and mode.
    """
    (top, _), (left, right) = pads
    H, W = x.shape[1:]
    lo, hi = max(first, top), min(stop, top + H)
    if lo < hi:
        out[:, lo - first : hi - first, left : left + W] = x[:, lo - top : hi - top]
    for row in [*range(first, min(lo, stop)), *range(max(hi, first), stop)]:
        source = int(border_map(np.array([row - top]), H, mode)[0])
        out[:, row - first, left : left + W] = fill if source < 0 else x[:, source]
    if columns is not None:
        out[:, :, :left] = out[:, :, columns[0]]
        out[:, :, left + W :] = out[:, :, columns[1]]
    elif left or right:
        out[:, :, :left] = fill
        out[:, :, left + W :] = fill
    return out


# ---------------------------------------------------------------- convolution


def separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column, row)`` with ``outer(column, row) == kernel`` to float32 rounding, or None.

    The row is the kernel's own row of largest magnitude, so integer kernels
    such as Sobel factor into exact numbers.
    """
    kh, kw = kernel.shape
    if kh < 2 or kw < 2:
        return None
    i = int(np.argmax(np.abs(kernel).max(axis=1)))
    row = kernel[i]
    j = int(np.argmax(np.abs(row)))
    if row[j] == 0:
        return None
    column = (kernel[:, j] / row[j]).astype(np.float32)
    if np.abs(np.outer(column, row) - kernel).max() > 1e-6 * np.abs(kernel).max():
        return None
    return column, row


def _accumulate(acc: np.ndarray, scratch: np.ndarray, terms: list) -> None:
    """``acc = sum(view * value for view, value in terms)`` with no temporaries (zero terms give zeros)."""
    if not terms:
        acc.fill(0)
        return
    (view, value), *rest = terms
    np.multiply(view, value, out=acc)
    for view, value in rest:
        np.multiply(view, value, out=scratch)
        acc += scratch


def correlate(x: np.ndarray, w: np.ndarray, stride, dilation, pads, mode: str, out: np.ndarray) -> None:
    """``out[o] = sum over (c, i, j) of w[o, c, i, j] * padded x[c]`` shifted by the tap, for one group.

    Chooses per kernel bank: two 1-D passes for one rank-1 kernel, a
    multiply-accumulate over the non-zero taps for one output channel, and a
    gather of the taps (im2col) with one BLAS product for several.
    """
    O, C, kh, kw = w.shape
    W = x.shape[2]
    Wp = W + pads[1][0] + pads[1][1]
    Wout = out.shape[2]
    s0, s1 = stride
    d0, d1 = dilation
    flat = stride == (1, 1)
    slack = d1 * (kw - 1) if flat else 0
    factors = separable(w[0, 0]) if O == 1 and C == 1 else None
    taps = [(c, i, j) for c in range(C) for i in range(kh) for j in range(kw)]
    K = len(taps)
    if factors is None and O == 1:
        taps = [t for t in taps if w[0][t]]
    weights = w.reshape(O, K)
    width = Wp if flat else Wout  # columns of one output row as computed
    per_row = Wp * C * s0 + width * (K + 2 * O if O > 1 else 3)
    borders = border_columns(W, pads, mode)

    def work(strip: tuple[int, int], scratch: dict) -> None:
        r0, r1 = strip
        R = r1 - r0
        first, stop = r0 * s0, (r1 - 1) * s0 + d0 * (kh - 1) + 1
        held = buffer(scratch, "input", (C, (stop - first) * Wp + slack))
        held[:, (stop - first) * Wp :] = 0
        grid = gather_rows(x, first, stop, pads, mode, 0.0, borders, held[:, : (stop - first) * Wp].reshape(C, -1, Wp))

        def tap(c: int, i: int, j: int, source: np.ndarray = held) -> np.ndarray:
            if flat:
                start = i * d0 * Wp + j * d1
                return source[c, start : start + R * Wp]
            return grid[c, i * d0 : i * d0 + s0 * (R - 1) + 1 : s0, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1]

        if factors is not None:
            result = _separable_strip(factors, tap, grid, R, Wp, Wout, stride, dilation, flat, scratch)
        elif O == 1:
            result = buffer(scratch, "acc", (1, R * width))
            scratch_row = buffer(scratch, "product", (R * width,))
            view = (lambda a: a) if flat else (lambda a: a.reshape(R, Wout))
            _accumulate(view(result[0]), view(scratch_row), [(tap(*t), w[0][t]) for t in taps])
        else:
            columns = buffer(scratch, "columns", (K, R * width))
            for k, t in enumerate(taps):
                if flat:
                    columns[k] = tap(*t)
                else:
                    columns[k].reshape(R, Wout)[...] = tap(*t)
            result = np.matmul(weights, columns, out=buffer(scratch, "acc", (O, R * width)))
        out[:, r0:r1] = result.reshape(O, R, width)[:, :, :Wout]

    run_tasks(strips(out.shape[1], 4 * per_row), work)


def _separable_strip(factors, tap, grid, R, Wp, Wout, stride, dilation, flat, scratch) -> np.ndarray:
    """A rank-1 kernel on one strip: the column pass over all padded columns, then the row pass."""
    column, row = factors
    (s0, s1), (d0, d1) = stride, dilation
    slack = d1 * (len(row) - 1)
    if flat:
        middle = buffer(scratch, "middle", (R * Wp + slack,))
        middle[R * Wp :] = 0
        product = buffer(scratch, "product", (R * Wp,))
        _accumulate(middle[: R * Wp], product, [(tap(0, i, 0), v) for i, v in enumerate(column) if v])
        result = buffer(scratch, "acc", (1, R * Wp))
        terms = [(middle[j * d1 : j * d1 + R * Wp], v) for j, v in enumerate(row) if v]
        _accumulate(result[0], product, terms)
        return result
    middle = buffer(scratch, "middle", (R, Wp))
    product = buffer(scratch, "product", (R, Wp))
    rows = [(grid[0, i * d0 : i * d0 + s0 * (R - 1) + 1 : s0], v) for i, v in enumerate(column) if v]
    _accumulate(middle, product, rows)
    result = buffer(scratch, "acc", (1, R * Wout))
    columns = [(middle[:, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1], v) for j, v in enumerate(row) if v]
    _accumulate(result[0].reshape(R, Wout), product[:, :Wout], columns)
    return result


# ---------------------------------------------------------------- pooling


def pool(x: np.ndarray, kernel, stride, dilation, pads, fill: float, reduce, out: np.ndarray) -> None:
    """Reduce every window of each (H, W) plane of ``x`` with ``reduce``, rows first, then columns.

    ``pads`` may reach past the padding a caller asked for (ceil_mode's last
    window); those cells hold ``fill``.
    """
    P, H, W = x.shape
    (top, bottom), (left, right) = pads
    Wp = W + left + right
    Hout, Wout = out.shape[1:]
    (kh, kw), (s0, s1), (d0, d1) = kernel, stride, dilation
    padded = top or bottom or left or right

    def work(task: tuple[int, int, int], scratch: dict) -> None:
        p, r0, r1 = task
        R = r1 - r0
        first, stop = r0 * s0, (r1 - 1) * s0 + d0 * (kh - 1) + 1
        if padded:
            held = buffer(scratch, "input", (1, stop - first, Wp))
            grid = gather_rows(x[p : p + 1], first, stop, pads, "zeros", fill, None, held)[0]
        else:
            grid = x[p, first:stop]
        rows = [grid[i * d0 : i * d0 + s0 * (R - 1) + 1 : s0] for i in range(kh)]
        middle = _reduce_all(rows, reduce, buffer(scratch, "middle", (R, Wp)))
        columns = [middle[:, j * d1 : j * d1 + s1 * (Wout - 1) + 1 : s1] for j in range(kw)]
        _reduce_all(columns, reduce, out[p, r0:r1])

    row_bytes = 4 * Wp * (s0 * (2 if padded else 1) + 1)
    run_tasks([(p, r0, r1) for p in range(P) for r0, r1 in strips(Hout, row_bytes)], work)


def _reduce_all(views: list[np.ndarray], reduce, out: np.ndarray) -> np.ndarray:
    """``out = reduce(views[0], views[1], ...)``, pairwise, in as few passes as there are views minus one."""
    if len(views) == 1:
        np.copyto(out, views[0])
        return out
    reduce(views[0], views[1], out=out)
    for view in views[2:]:
        reduce(out, view, out=out)
    return out
