"""Core compute: convolution, activations and pooling over numpy arrays.

Signatures, defaults and output sizes follow ``torch.nn.functional``, so
PyTorch can serve as an oracle and PyTorch users need no new vocabulary.
Arrays are channel-first float32: ``(C, H, W)`` for one image or
``(N, C, H, W)`` for a batch; every op accepts both and returns the same rank.

This module checks arguments and works out sizes; ``engine`` does the
arithmetic in cache-sized strips on a small thread pool.  Results do not
depend on the number of threads (``CNNX_NUM_THREADS`` or ``set_num_threads``).
"""

from __future__ import annotations

import numpy as np

from cnnx.base.choices import PADDING_MODES
from cnnx.base.runtime import num_threads, set_num_threads
from cnnx.compute import engine

__all__ = [
    "absolute",
    "avg_pool2d",
    "conv2d",
    "check_border",
    "conv_output_size",
    "conv_padding",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "num_threads",
    "pool_output_size",
    "relu",
    "set_num_threads",
    "sigmoid",
    "softmax",
    "tanh",
]



# ---------------------------------------------------------------- argument checks


def as_batch(x, name: str = "x") -> tuple[np.ndarray, bool]:
    """Return ``x`` as a float32 (N, C, H, W) array and whether it came batched."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be a 3-D (C, H, W) or 4-D (N, C, H, W) array; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must hold real numbers; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    return (x, True) if x.ndim == 4 else (x[None], False)


def as_pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
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


def conv_padding(padding, kernel, dilation, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for a conv2d ``padding`` argument, a ``kernel`` of (kH, kW), pairs of the rest."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, as in torch; got stride {stride}")
            return _same_padding(kernel[0], dilation[0]), _same_padding(kernel[1], dilation[1])
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same'; got {padding!r}")
    ph, pw = as_pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def check_border(mode: str, rows: tuple[int, int], cols: tuple[int, int], H: int, W: int) -> None:
    """torch's limits: reflect mirrors once (padding < size), circular wraps once (padding <= size)."""
    if mode == "reflect" and (max(rows) >= H or max(cols) >= W):
        raise ValueError(f"padding_mode='reflect' needs padding smaller than the input {H}x{W}; got {rows}, {cols}")
    if mode == "circular" and (max(rows) > H or max(cols) > W):
        raise ValueError(f"padding_mode='circular' needs padding at most the input {H}x{W}; got {rows}, {cols}")


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
    *,
    out: np.ndarray | None = None,
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
    out : float32 array of the output's shape, optional
        Where to write the result (numpy's convention; not in torch).

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
    x, batched = as_batch(x)
    weight = np.asarray(weight, dtype=np.float32)
    N, C, H, W = x.shape
    _check_bank(weight, C, groups)
    O, C_group, kh, kw = weight.shape
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(PADDING_MODES)}; got {padding_mode!r}")
    stride = as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
    rows, cols = conv_padding(padding, (kh, kw), dilation, stride)
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

    check_border(padding_mode, rows, cols, H, W)
    x = np.ascontiguousarray(x)
    shape = (N, O, (padded[0] - span[0]) // stride[0] + 1, (padded[1] - span[1]) // stride[1] + 1)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != (shape if batched else shape[1:]) or out.dtype != np.float32:
        wanted = shape if batched else shape[1:]
        raise ValueError(f"out must be a float32 array of shape {wanted}; got {out.dtype} {out.shape}")
    elif not batched:
        out = out[None]
    if groups == 1 and N > 1 and engine.batch_fits(x.shape, weight.shape, out.shape):
        engine.correlate_batch(x, weight, stride, dilation, (rows, cols), padding_mode, out)
        N = 0  # done: a batch of small images is one product
        engine.add_bias(out.transpose(1, 0, 2, 3), bias)
    for n in range(N):
        if groups > 1:
            engine.correlate_grouped(x[n], weight, groups, stride, dilation, (rows, cols), padding_mode, out[n])
            engine.add_bias(out[n], bias)
        else:  # the bias added as each strip is stored
            engine.correlate(x[n], weight, stride, dilation, (rows, cols), padding_mode, out[n], bias)
    return out if batched else out[0]


def _check_bank(weight: np.ndarray, channels: int, groups) -> None:
    """A bank of kernels (O, C // groups, kH, kW) that fits ``channels`` input channels in ``groups`` groups."""
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kH, kW); got shape {weight.shape}")
    O, C_group, kh, kw = weight.shape
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    if channels % groups or O % groups:
        raise ValueError(f"groups={groups} must divide input channels {channels} and output channels {O}")
    if C_group != channels // groups:
        raise ValueError(f"weight expects {C_group * groups} input channels ({C_group} per group, groups={groups}); "
                         f"input has {channels}")
    if min(O, kh, kw) < 1:
        raise ValueError(f"weight must have at least one kernel of at least 1x1; got shape {weight.shape}")


def conv2d_scratch(x_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups: int = 1) -> int:
    """Bytes ``conv2d`` holds beyond its input and output for these shapes, on all threads, at most.

    For the memory a run needs, known before it starts; the arguments are ``conv2d``'s.
    """
    C, H, W = x_shape[-3:]
    O, C_group, kh, kw = weight_shape
    stride, dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    rows, cols = conv_padding(padding, (kh, kw), dilation, stride)
    out = tuple(
        (n + sum(p) - (d * (k - 1) + 1)) // s + 1
        for n, p, k, s, d in zip((H, W), (rows, cols), (kh, kw), stride, dilation, strict=True)
    )
    if groups > 1:
        return engine.grouped_scratch(x_shape[-3:], weight_shape, groups, stride, dilation, (rows, cols), out,
                                      num_threads())
    return engine.correlate_scratch((C, H, W), weight_shape, stride, dilation, (rows, cols), out, num_threads())


# ---------------------------------------------------------------- pooling


def pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Check pooling arguments as torch does; return kernel, stride, dilation, padding and output size."""
    kernel = as_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or (not np.isscalar(stride) and len(stride) == 0) else as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
    pad = as_pair(padding, "padding", minimum=0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size {kernel}; got {pad}")
    H, W = x.shape[-2:]
    size = tuple(
        pool_output_size(n, k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
        for n, k, s, p, d in zip((H, W), kernel, stride, pad, dilation, strict=True)
    )
    if min(size) < 1:
        raise ValueError(
            f"kernel_size {kernel} (dilation {dilation}, padding {pad}) does not fit the {H}x{W} input: "
            f"output would be {size[0]}x{size[1]}"
        )
    return kernel, stride, dilation, pad, size


def pool_pads(sides, kernel, stride, dilation, pad, size) -> tuple[tuple[int, int], tuple[int, int]]:
    """The padding the windows reach: ``pad`` before, and after whatever the last window (ceil_mode's) needs."""
    reach = zip(sides, kernel, stride, dilation, pad, size, strict=True)
    after = [(m - 1) * s + d * (k - 1) + 1 - n - p for n, k, s, d, p, m in reach]
    return (pad[0], max(after[0], 0)), (pad[1], max(after[1], 0))


def _pool(x: np.ndarray, kernel, stride, dilation, pad, size, reduce, fill: float) -> np.ndarray:
    """Reduce every window; cells in the padding or past the input (ceil_mode's last window) hold ``fill``."""
    return window_reduce(x, kernel, stride, dilation, pool_pads(x.shape[-2:], kernel, stride, dilation, pad, size),
                         reduce, fill)


def window_reduce(x: np.ndarray, kernel, stride, dilation, pads, reduce, fill: float) -> np.ndarray:
    """Every window of each map of ``x`` (N, C, H, W) reduced by the ufunc ``reduce`` (``np.maximum``, ``np.add``),
    the padding ``((top, bottom), (left, right))`` (either side may differ) holding ``fill``: no padded copy."""
    N, C, H, W = x.shape
    size = [(n + a + b - d * (k - 1) - 1) // s + 1
            for n, (a, b), k, s, d in zip((H, W), pads, kernel, stride, dilation, strict=True)]
    if min(size) < 1:
        raise ValueError(f"window {tuple(kernel)} does not fit the padded {H}x{W} input")
    out = np.empty((N * C, *size), np.float32)
    planes = np.ascontiguousarray(x, np.float32).reshape(N * C, H, W)
    engine.pool(planes, tuple(kernel), tuple(stride), tuple(dilation), pads, fill, reduce, out)
    return out.reshape(N, C, *size)


def pool2d_scratch(x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> int:
    """Bytes ``max_pool2d`` or ``avg_pool2d`` holds beyond its input and output for these shapes, at most."""
    planes, (H, W) = int(np.prod(x_shape[:-2])), x_shape[-2:]
    sides = np.broadcast_to(np.float32(0), (H, W))  # the checks read the shape alone
    kernel, stride, dilation, pad, size = pool_geometry(sides, kernel_size, stride, padding, dilation, ceil_mode)
    pads = pool_pads((H, W), kernel, stride, dilation, pad, size)
    return engine.pool_scratch((planes, H, W), kernel, stride, dilation, pads, size, num_threads())


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
    x, batched = as_batch(x)
    kernel, stride, dilation, pad, size = pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
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
    x, batched = as_batch(x)
    kernel, stride, _, pad, size = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    out = _pool(x, kernel, stride, (1, 1), pad, size, np.add, 0.0)
    H, W = x.shape[-2:]
    rows = window_counts(H, kernel[0], stride[0], pad[0], size[0], count_include_pad)
    cols = window_counts(W, kernel[1], stride[1], pad[1], size[1], count_include_pad)
    if rows.min() == rows.max() and cols.min() == cols.max():
        out *= np.float32(1.0 / (rows[0] * cols[0]))
    else:
        out /= np.outer(rows, cols).astype(np.float32)
    return out if batched else out[0]


def window_counts(n: int, kernel: int, stride: int, pad: int, size: int, include_pad: bool) -> np.ndarray:
    """How many elements each window along one axis averages over (torch's AvgPool2d rule)."""
    start = np.arange(size) * stride - pad
    end = np.minimum(start + kernel, n + pad)
    if include_pad:
        return end - start
    return np.minimum(end, n) - np.maximum(start, 0)


# ---------------------------------------------------------------- activations


_MASK_BLOCK = 1 << 15  # values a block of leaky_relu takes: a 32 KiB mask, in cache


def _activation_arrays(x, inplace: bool) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) of an activation: the output is ``x`` itself in place, else a new float32 array.

    Writing the first result straight into a new array saves the pass a copy would take.
    """
    if inplace:
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise ValueError("inplace=True needs a float32 numpy array")
        return x, x
    x = np.asarray(x, dtype=np.float32)
    return x, np.empty_like(x)


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
    x, y = _activation_arrays(x, inplace)
    return np.maximum(x, np.float32(0), out=y)


def leaky_relu(x, negative_slope: float = 0.01, inplace: bool = False) -> np.ndarray:
    """``x`` where positive, ``negative_slope * x`` elsewhere, as ``torch.nn.functional.leaky_relu``.

    Examples
    --------
    >>> leaky_relu([-10.0, 0.0, 10.0], 0.1)
    array([-1.,  0., 10.], dtype=float32)
    """
    x, y = _activation_arrays(x, inplace)
    if y is not x:
        np.copyto(y, x)
    slope = np.float32(negative_slope)
    if not y.flags.c_contiguous:
        np.multiply(y, slope, out=y, where=y < 0)
        return y
    # The mask of negatives takes a byte a value: a block at a time, it stays small however large y is.
    flat = y.reshape(-1)
    for start in range(0, flat.size, _MASK_BLOCK):
        block = flat[start : start + _MASK_BLOCK]
        np.multiply(block, slope, out=block, where=block < 0)
    return y


def sigmoid(x, inplace: bool = False) -> np.ndarray:
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` so no exp can overflow.

    Examples
    --------
    >>> sigmoid([0.0, 1000.0, -1000.0])
    array([0.5, 1. , 0. ], dtype=float32)
    """
    x, y = _activation_arrays(x, inplace)
    np.multiply(x, np.float32(0.5), out=y)
    np.tanh(y, out=y)
    np.add(y, np.float32(1.0), out=y)
    return np.multiply(y, np.float32(0.5), out=y)


def absolute(x, inplace: bool = False) -> np.ndarray:
    """``|x|`` elementwise: how strong a response is, whatever its sign.

    Examples
    --------
    >>> absolute([-3.0, 0.0, 2.0])
    array([3., 0., 2.], dtype=float32)
    """
    x, y = _activation_arrays(x, inplace)
    return np.abs(x, out=y)


def tanh(x, inplace: bool = False) -> np.ndarray:
    """Hyperbolic tangent elementwise.

    Examples
    --------
    >>> tanh([0.0])
    array([0.], dtype=float32)
    """
    x, y = _activation_arrays(x, inplace)
    return np.tanh(x, out=y)


# ---------------------------------------------------------------- the fully connected end


def resample(x, rows, cols) -> np.ndarray:
    """Bilinear samples of each plane of ``x`` (C, H, W) at the real coordinates ``rows`` and ``cols`` (any shape,
    alike), the border repeated beyond the edges: a shifted, scaled or turned copy of an image.

    >>> resample(np.array([[[0.0, 2.0], [4.0, 6.0]]]), np.array([[0.5]]), np.array([[0.25]]))
    array([[[2.5]]], dtype=float32)
    """
    x = np.asarray(x, np.float32)
    (r0, c0), (r1, c1), (wr, wc) = bilinear_corners(x.shape[1:], rows, cols)
    top = x[:, r0, c0] * (1 - wc) + x[:, r0, c1] * wc
    bottom = x[:, r1, c0] * (1 - wc) + x[:, r1, c1] * wc
    return (top * (1 - wr) + bottom * wr).astype(np.float32)


def bilinear_corners(size, rows, cols):
    """The four neighbours of each coordinate (clamped into the image) and the weights of the second ones."""
    H, W = size
    rows = np.clip(np.asarray(rows, np.float64), 0, H - 1)
    cols = np.clip(np.asarray(cols, np.float64), 0, W - 1)
    r0, c0 = np.floor(rows).astype(np.intp), np.floor(cols).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, H - 1), np.minimum(c0 + 1, W - 1)
    return (r0, c0), (r1, c1), ((rows - r0).astype(np.float32), (cols - c0).astype(np.float32))


def erf(x) -> np.ndarray:
    """The error function, elementwise, in the input's float precision (float64 for integers): Abramowitz and
    Stegun 7.1.26, within 1.5e-7 of it, in place on one working array (GELU's input holds millions of values).

    >>> erf(np.array([0.0, 0.5, 3.0])).round(6)
    array([0.      , 0.5205  , 0.999978])
    """
    x = np.asarray(x)
    z = np.abs(x, dtype=x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
    t = z * 0.3275911
    t += 1
    np.reciprocal(t, out=t)
    poly = t * 1.061405429
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += coefficient
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z
    np.subtract(1, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def linear(x, weight, bias=None) -> np.ndarray:
    """``x @ weight.T + bias``, as ``torch.nn.functional.linear``: a fully connected layer.

    Parameters
    ----------
    x : array, shape (..., in_features)
    weight : array, shape (out_features, in_features)
    bias : array, shape (out_features,) or any that broadcasts to the output's, as (1, out_features), optional

    Returns
    -------
    array, shape (..., out_features), float32

    Examples
    --------
    >>> linear([[1.0, 2.0]], [[1.0, 0.0], [0.5, -1.0]], [0.0, 1.0])
    array([[ 1. , -0.5]], dtype=float32)
    """
    x = np.asarray(x, np.float32)
    weight = np.asarray(weight, np.float32)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features); got shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must end in {weight.shape[1]} features to meet weight {weight.shape}; got shape {x.shape}")
    out = x @ weight.T
    if bias is not None:
        bias = np.asarray(bias, np.float32)
        try:
            fits = np.broadcast_shapes(bias.shape, out.shape) == out.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"bias must broadcast to the output's shape {out.shape}, e.g. ({weight.shape[0]},); "
                             f"got {bias.shape}")
        out += bias
    return out


def softmax(x, dim: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``dim``, as ``torch.nn.functional.softmax``.

    The largest value is subtracted first, so no exp overflows (the result is
    the same: softmax does not change when a constant is added).

    Examples
    --------
    >>> softmax([1000.0, 1000.0, -1000.0])
    array([0.5, 0.5, 0. ], dtype=float32)
    """
    x = np.asarray(x, np.float32)
    shifted = x - x.max(axis=dim, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=dim, keepdims=True)
    return shifted


def log_softmax(x, dim: int = -1) -> np.ndarray:
    """``log(softmax(x))`` along ``dim``, computed stably as ``x - max - log(sum(exp(x - max)))``.

    Examples
    --------
    >>> log_softmax([0.0, 0.0])
    array([-0.6931472, -0.6931472], dtype=float32)
    """
    x = np.asarray(x, np.float32)
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
