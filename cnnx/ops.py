"""Core compute: convolution, activations and pooling over numpy arrays.

Signatures, defaults and output sizes follow ``torch.nn.functional``, so
PyTorch can serve as an oracle and PyTorch users need no new vocabulary.
Arrays are channel-first float32: ``(C, H, W)`` for one image or
``(N, C, H, W)`` for a batch; every op accepts both and returns the same rank.

The work is done in row strips sized to stay in cache, spread over a small
thread pool (numpy releases the GIL inside its loops and inside BLAS).  A
strip always computes the same numbers whichever thread runs it, so results
do not depend on the thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

__all__ = [
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "conv_output_size",
    "pool_output_size",
    "num_threads",
    "set_num_threads",
]

# Bytes of input one strip may touch: about half of a typical 1-2 MiB L2.
_STRIP_BYTES = 1 << 19
_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

_threads: int | None = None
_executor: ThreadPoolExecutor | None = None


# ---------------------------------------------------------------- threads


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
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    _threads = n
    if _executor is not None:
        _executor.shutdown()
        _executor = None


def _for_each_strip(work: Callable[[int, int], None], n_rows: int, row_bytes: int) -> None:
    """Call ``work(r0, r1)`` on row strips of ``range(n_rows)``, on the thread pool."""
    global _executor
    step = max(1, _STRIP_BYTES // max(1, row_bytes))
    strips = [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]
    threads = min(num_threads(), len(strips))
    if threads <= 1:
        for r0, r1 in strips:
            work(r0, r1)
        return
    if _executor is None or _executor._max_workers != num_threads():
        _executor = ThreadPoolExecutor(max_workers=num_threads(), thread_name_prefix="cnnx")
    for future in [_executor.submit(work, r0, r1) for r0, r1 in strips]:
        future.result()


# ---------------------------------------------------------------- argument checks


def _as_batch(x, name: str = "x") -> tuple[np.ndarray, bool]:
    """Return ``x`` as a float32 (N, C, H, W) array and whether it came batched."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be a 3-D (C, H, W) or 4-D (N, C, H, W) array; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must hold real numbers; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    return (x, True) if x.ndim == 4 else (x[None], False)


def _pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, as torch accepts for sizes, strides and dilations."""
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis: ``(size + 2*padding - dilation*(kernel-1) - 1) // stride + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(
    size: int, kernel: int, *, stride: int, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Pooling output length along one axis, with torch's rule for ``ceil_mode``.

    Under ``ceil_mode`` a last, partial window is kept only if it starts inside
    the input or its left padding (``torch.nn.MaxPool2d`` documentation).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """torch's "same": total ``dilation*(kernel-1)``, the odd pixel after (bottom, right)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def _conv_padding(padding, kernel, dilation, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for a conv2d ``padding`` argument."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, as in torch; got stride {stride}")
            return _same_padding(kernel[0], dilation[0]), _same_padding(kernel[1], dilation[1])
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same'; got {padding!r}")
    ph, pw = _pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def _pad(x: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], mode: str, fill: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` as ``torch.nn.functional.pad`` would."""
    if rows == (0, 0) and cols == (0, 0):
        return x
    H, W = x.shape[-2:]
    if mode == "reflect" and (max(rows) >= H or max(cols) >= W):
        raise ValueError(f"padding_mode='reflect' needs padding smaller than the input {H}x{W}; got {rows}, {cols}")
    if mode == "circular" and (max(rows) > H or max(cols) > W):
        raise ValueError(f"padding_mode='circular' needs padding at most the input {H}x{W}; got {rows}, {cols}")
    width = [(0, 0)] * (x.ndim - 2) + [rows, cols]
    np_mode = _PADDING_MODES[mode]
    if np_mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=fill)
    return np.pad(x, width, mode=np_mode)


# ---------------------------------------------------------------- convolution


def conv2d(
    x,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """2-D cross-correlation of an image with a bank of kernels, as ``torch.nn.functional.conv2d``.

    The kernel is not flipped, as in every deep-learning framework.

    Parameters
    ----------
    x : array, shape (C, H, W) or (N, C, H, W)
        Input image(s).
    weight : array, shape (O, C // groups, kH, kW)
        One kernel per output channel.
    bias : array, shape (O,), optional
        Added to each output channel.
    stride, dilation : int or (int, int)
        Step between windows and between kernel taps.
    padding : int, (int, int), "valid" or "same"
        Border added on each side.  "same" keeps H and W (stride 1 only); for
        an even kernel the extra pixel goes after (bottom, right), as in torch.
    groups : int
        Input and output channels are split into this many independent groups;
        ``groups == C`` is a depthwise convolution.
    padding_mode : "zeros", "reflect", "replicate" or "circular"
        What the border holds, as ``torch.nn.Conv2d(padding_mode=...)``.

    Returns
    -------
    array, shape (O, H_out, W_out) or (N, O, H_out, W_out), float32
        ``H_out = (H + 2*padding - dilation*(kH-1) - 1) // stride + 1``, likewise
        ``W_out``.  Rows and columns that a stride leaves over at the bottom and
        right are not visited.

    Examples
    --------
    The lesson's worked example (its printed ``[[3, 1], [2, 0]]`` is wrong):

    >>> image = [[[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]]]
    >>> vertical_edge = [[[[1, 0, -1], [1, 0, -1], [1, 0, -1]]]]
    >>> conv2d(image, vertical_edge)
    array([[[-1.,  1.],
            [-1., -3.]]], dtype=float32)
    """
    x, batched = _as_batch(x)
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kH, kW); got shape {weight.shape}")
    N, C, H, W = x.shape
    O, C_group, kh, kw = weight.shape
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    if C % groups or O % groups:
        raise ValueError(f"groups={groups} must divide input channels {C} and output channels {O}")
    if C_group != C // groups:
        raise ValueError(
            f"weight expects {C_group * groups} input channels ({C_group} per group, groups={groups}); input has {C}"
        )
    if min(O, kh, kw) < 1:
        raise ValueError(f"weight must have at least one kernel of at least 1x1; got shape {weight.shape}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(_PADDING_MODES)}; got {padding_mode!r}")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    rows, cols = _conv_padding(padding, (kh, kw), dilation, stride)
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    padded = (H + sum(rows), W + sum(cols))
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"kernel {kh}x{kw} (dilation {dilation}) spans {span[0]}x{span[1]}, "
            f"larger than the padded input {padded[0]}x{padded[1]}"
        )
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float32)
        if bias.shape != (O,):
            raise ValueError(f"bias must have shape ({O},); got {bias.shape}")

    xp = np.ascontiguousarray(_pad(x, rows, cols, padding_mode))
    out = np.empty((N, O, (padded[0] - span[0]) // stride[0] + 1, (padded[1] - span[1]) // stride[1] + 1), np.float32)
    O_group = O // groups
    for n in range(N):
        for g in range(groups):
            _correlate(
                xp[n, g * C_group : (g + 1) * C_group],
                weight[g * O_group : (g + 1) * O_group],
                stride,
                dilation,
                out[n, g * O_group : (g + 1) * O_group],
            )
    if bias is not None:
        out += bias[:, None, None]
    return out if batched else out[0]


def _tap(plane: np.ndarray, r0: int, r1: int, offset: tuple[int, int], stride, n_cols: int) -> np.ndarray:
    """The view of ``plane`` that one kernel tap at ``offset`` sees for output rows ``r0:r1``."""
    top = r0 * stride[0] + offset[0]
    return plane[..., top : top + stride[0] * (r1 - r0 - 1) + 1 : stride[0], offset[1] : offset[1] + stride[1] * (n_cols - 1) + 1 : stride[1]]


def _correlate(xp: np.ndarray, w: np.ndarray, stride, dilation, out: np.ndarray) -> None:
    """``out[o] = sum over (c, i, j) of w[o, c, i, j] * tap (c, i, j) of xp``, for one group."""
    O, C, kh, kw = w.shape
    if O == 1 and C == 1:
        factors = _separable(w[0, 0])
        if factors is not None:
            return _correlate_separable(xp[0], *factors, stride, dilation, out[0])
        return _correlate_taps(xp[0], w[0, 0], stride, dilation, out[0])
    return _correlate_matmul(xp, w, stride, dilation, out)


def _correlate_taps(plane: np.ndarray, kernel: np.ndarray, stride, dilation, out: np.ndarray) -> None:
    """One kernel over one plane: multiply-accumulate tap by tap, skipping zero taps."""
    taps = [((i * dilation[0], j * dilation[1]), kernel[i, j]) for i, j in np.ndindex(kernel.shape) if kernel[i, j]]
    n_cols = out.shape[1]

    def strip(r0: int, r1: int) -> None:
        acc = out[r0:r1]
        if not taps:
            acc.fill(0)
            return
        scratch = np.empty_like(acc)
        (offset, value), *rest = taps
        np.multiply(_tap(plane, r0, r1, offset, stride, n_cols), value, out=acc)
        for offset, value in rest:
            np.multiply(_tap(plane, r0, r1, offset, stride, n_cols), value, out=scratch)
            acc += scratch

    _for_each_strip(strip, out.shape[0], plane.shape[1] * stride[0] * 4 * 3)


def _separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
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
    error = np.abs(np.outer(column, row) - kernel).max()
    if error > 1e-6 * np.abs(kernel).max():
        return None
    return column, row


def _correlate_separable(plane, column, row, stride, dilation, out) -> None:
    """A rank-1 kernel as a vertical then a horizontal 1-D pass, strip by strip."""
    n_cols = out.shape[1]
    width = plane.shape[1]
    vertical = [((i * dilation[0], 0), v) for i, v in enumerate(column) if v]
    horizontal = [((0, j * dilation[1]), v) for j, v in enumerate(row) if v]

    def strip(r0: int, r1: int) -> None:
        middle = np.empty((r1 - r0, width), np.float32)
        scratch = np.empty_like(middle)
        _accumulate(middle, scratch, [(_tap(plane, r0, r1, o, (stride[0], 1), width), v) for o, v in vertical])
        acc = out[r0:r1]
        _accumulate(acc, scratch[:, :n_cols], [(_tap(middle, 0, r1 - r0, o, (1, stride[1]), n_cols), v) for o, v in horizontal])

    _for_each_strip(strip, out.shape[0], width * stride[0] * 4 * 4)


def _accumulate(acc: np.ndarray, scratch: np.ndarray, terms) -> None:
    """``acc = sum(view * value for view, value in terms)``, with no temporaries."""
    (view, value), *rest = terms
    np.multiply(view, value, out=acc)
    for view, value in rest:
        np.multiply(view, value, out=scratch)
        acc += scratch


def _correlate_matmul(xp: np.ndarray, w: np.ndarray, stride, dilation, out: np.ndarray) -> None:
    """Many channels or kernels: per strip, gather the taps (im2col) and make one BLAS product."""
    O, C, kh, kw = w.shape
    weights = w.reshape(O, C * kh * kw)
    offsets = [(i * dilation[0], j * dilation[1]) for i in range(kh) for j in range(kw)]
    n_cols = out.shape[2]

    def strip(r0: int, r1: int) -> None:
        columns = np.empty((C, kh * kw, r1 - r0, n_cols), np.float32)
        for k, offset in enumerate(offsets):
            columns[:, k] = _tap(xp, r0, r1, offset, stride, n_cols)
        product = weights @ columns.reshape(C * kh * kw, -1)
        out[:, r0:r1] = product.reshape(O, r1 - r0, n_cols)

    _for_each_strip(strip, out.shape[1], n_cols * 4 * (C * kh * kw + O))


# ---------------------------------------------------------------- pooling


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Check pooling arguments as torch does; return kernel, stride, dilation, padding and output size."""
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or (not np.isscalar(stride) and len(stride) == 0) else _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    pad = _pair(padding, "padding", minimum=0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size {kernel}; got {pad}")
    H, W = x.shape[-2:]
    size = tuple(
        pool_output_size(n, k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
        for n, k, s, p, d in zip((H, W), kernel, stride, pad, dilation)
    )
    if min(size) < 1:
        raise ValueError(
            f"kernel_size {kernel} (dilation {dilation}, padding {pad}) does not fit the {H}x{W} input: "
            f"output would be {size[0]}x{size[1]}"
        )
    return kernel, stride, dilation, pad, size


def _pool(x: np.ndarray, kernel, stride, dilation, pad, size, reduce, fill: float) -> np.ndarray:
    """Reduce every window with ``reduce``: along rows first, then along columns, strip by strip.

    Windows that run past the input (padding, or ceil_mode's last window) see ``fill``.
    """
    N, C, H, W = x.shape
    rows = (pad[0], (size[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1 - H - pad[0])
    cols = (pad[1], (size[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1 - W - pad[1])
    xp = _pad(x, (rows[0], max(rows[1], 0)), (cols[0], max(cols[1], 0)), "zeros", fill)
    xp = xp.reshape(N * C, *xp.shape[2:])
    out = np.empty((N * C, *size), np.float32)
    width = xp.shape[2]

    def strip(r0: int, r1: int) -> None:
        middle = np.empty((N * C, r1 - r0, width), np.float32)
        for i in range(kernel[0]):
            view = _tap(xp, r0, r1, (i * dilation[0], 0), (stride[0], 1), width)
            np.copyto(middle, view) if i == 0 else reduce(middle, view, out=middle)
        acc = out[:, r0:r1]
        for j in range(kernel[1]):
            view = _tap(middle, 0, r1 - r0, (0, j * dilation[1]), (1, stride[1]), size[1])
            np.copyto(acc, view) if j == 0 else reduce(acc, view, out=acc)

    _for_each_strip(strip, size[0], N * C * width * stride[0] * 4 * 2)
    return out.reshape(N, C, *size)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> np.ndarray:
    """Maximum over sliding windows, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : array, shape (C, H, W) or (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf border on each side, at most half the kernel.
    dilation : int or (int, int)
        Step between the elements of one window.
    ceil_mode : bool
        Round the output size up, keeping a last partial window if it starts
        inside the input or its left padding; otherwise leftover rows and
        columns at the bottom and right are dropped.

    Returns
    -------
    array, float32
        ``H_out = (H + 2*padding - dilation*(kernel_size-1) - 1) // stride + 1``
        (rounded up under ``ceil_mode``), likewise ``W_out``.  NaN propagates.

    Examples
    --------
    >>> max_pool2d([[[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]]], 2)
    array([[[2., 3.],
            [2., 2.]]], dtype=float32)
    """
    x, batched = _as_batch(x)
    kernel, stride, dilation, pad, size = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = _pool(x, kernel, stride, dilation, pad, size, np.maximum, -np.inf)
    return out if batched else out[0]


def avg_pool2d(
    x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True
) -> np.ndarray:
    """Mean over sliding windows, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : array, shape (C, H, W) or (N, C, H, W)
    kernel_size, stride, padding, ceil_mode
        As in ``max_pool2d``; the padding holds zeros.
    count_include_pad : bool
        Count the zero padding in the divisor.  Either way, the part of a
        ceil_mode window past the padding is never counted (torch's rule).

    Returns
    -------
    array, float32
        Same size as ``max_pool2d`` gives.

    Examples
    --------
    >>> avg_pool2d([[[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]]], 2)
    array([[[1. , 1.5],
            [1. , 1. ]]], dtype=float32)
    """
    x, batched = _as_batch(x)
    kernel, stride, _, pad, size = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    out = _pool(x, kernel, stride, (1, 1), pad, size, np.add, 0.0)
    H, W = x.shape[-2:]
    rows = _window_counts(H, kernel[0], stride[0], pad[0], size[0], count_include_pad)
    cols = _window_counts(W, kernel[1], stride[1], pad[1], size[1], count_include_pad)
    if rows.min() == rows.max() and cols.min() == cols.max():
        out *= np.float32(1.0 / (rows[0] * cols[0]))
    else:
        out /= np.outer(rows, cols).astype(np.float32)
    return out if batched else out[0]


def _window_counts(n: int, kernel: int, stride: int, pad: int, size: int, include_pad: bool) -> np.ndarray:
    """How many elements each window along one axis averages over (torch's AvgPool2d rule)."""
    start = np.arange(size) * stride - pad
    end = np.minimum(start + kernel, n + pad)
    if include_pad:
        return end - start
    return np.minimum(end, n) - np.maximum(start, 0)


# ---------------------------------------------------------------- activations


def _activation_input(x, inplace: bool) -> np.ndarray:
    """The array an activation writes into: ``x`` itself when in place, else a float32 copy."""
    if inplace:
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise ValueError("inplace=True needs a float32 numpy array")
        return x
    return np.array(x, dtype=np.float32)


def relu(x, inplace: bool = False) -> np.ndarray:
    """``max(0, x)`` elementwise, as ``torch.nn.functional.relu``.

    With ``inplace=True`` the float32 array ``x`` is overwritten and returned;
    nothing is allocated.  NaN stays NaN, as in torch (``np.maximum`` propagates it).

    Examples
    --------
    >>> relu([[-1.0, 1.0], [-1.0, -3.0]])
    array([[0., 1.],
           [0., 0.]], dtype=float32)
    """
    y = _activation_input(x, inplace)
    return np.maximum(y, 0, out=y)


def leaky_relu(x, negative_slope: float = 0.01, inplace: bool = False) -> np.ndarray:
    """``x`` where positive, ``negative_slope * x`` elsewhere, as ``torch.nn.functional.leaky_relu``.

    Examples
    --------
    >>> leaky_relu([-10.0, 0.0, 10.0], 0.1)
    array([-1.,  0., 10.], dtype=float32)
    """
    y = _activation_input(x, inplace)
    negative = y < 0
    np.multiply(y, np.float32(negative_slope), out=y, where=negative)
    return y


def sigmoid(x, inplace: bool = False) -> np.ndarray:
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` so no exp can overflow.

    Examples
    --------
    >>> sigmoid([0.0, 1000.0, -1000.0])
    array([0.5, 1. , 0. ], dtype=float32)
    """
    y = _activation_input(x, inplace)
    np.multiply(y, np.float32(0.5), out=y)
    np.tanh(y, out=y)
    np.add(y, np.float32(1.0), out=y)
    return np.multiply(y, np.float32(0.5), out=y)


def tanh(x, inplace: bool = False) -> np.ndarray:
    """Hyperbolic tangent elementwise.

    Examples
    --------
    >>> tanh([0.0])
    array([0.], dtype=float32)
    """
    y = _activation_input(x, inplace)
    return np.tanh(y, out=y)
