"""The reverse pass: each op's vector-Jacobian product, beside the forward ops and with their arguments.

``conv2d_backward(grad, x, weight, ...)`` takes the gradient of some number
with respect to ``conv2d(x, weight, ...)``'s output and gives it with respect
to the input, the weights and the bias, as ``torch.autograd`` would.  The
input's gradient is itself a convolution (the output's gradient, spread by the
stride, correlated with the kernels turned and transposed), so it runs on the
same fast paths as the forward op; the weights' is one product per tap.  A
window op's (pools) goes back through the same windows: each window's
gradient is added at its taps, to the largest one for a max pool (the first,
in the window's row order, as torch picks it).  Padding that reads the border
(reflect, replicate, circular) sends its gradient back to the pixels it read.

Everything is float32 in and out, as the forward ops; sums over many values
are taken in float64 where the forward op takes them so.
"""

from __future__ import annotations

import numpy as np

from cnnx.base.runtime import blas_threads, strips
from cnnx.compute import engine
from cnnx.compute.ops import (
    as_batch,
    as_pair,
    bilinear_corners,
    conv2d,
    conv_padding,
    erf,
    pool_geometry,
    pool_pads,
    window_counts,
)

__all__ = [
    "activation_backward",
    "avg_pool2d_backward",
    "conv2d_backward",
    "conv_transpose2d",
    "fold_padding",
    "linear_backward",
    "log_softmax_backward",
    "max_pool2d_backward",
    "resample_backward",
    "softmax_backward",
    "spread_windows",
    "unbroadcast",
]


# ---------------------------------------------------------------- convolution


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups: int = 1,
                    padding_mode: str = "zeros", *, need_weight: bool = True, need_input: bool = True):
    """Gradients of ``ops.conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode)``: with respect
    to ``x`` (its shape), ``weight`` and the bias, given ``grad_out`` (the output's shape).

    ``need_weight=False`` skips the weights' and bias's (None), for a gradient with respect to the image alone;
    ``need_input=False`` the input's, for a network's first layer in training.

    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> kernel = np.ones((1, 1, 3, 3), np.float32)
    >>> grad_x, grad_w, grad_b = conv2d_backward(np.ones((1, 2, 2), np.float32), image, kernel)
    >>> grad_x[0]  # how many of the four windows read each pixel
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]], dtype=float32)
    >>> float(grad_b[0]), float(grad_w[0, 0, 0, 0])  # four outputs; the top-left taps read 0, 1, 4 and 5
    (4.0, 10.0)
    """
    x, batched = as_batch(x)
    g, _ = as_batch(grad_out, "grad_out")
    weight = np.asarray(weight, np.float32)
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    stride, dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = conv_padding(padding, (kh, kw), dilation, stride)
    padded_shape = (H + sum(pads[0]), W + sum(pads[1]))
    grad_x = None
    if need_input:
        grad_padded = _input_gradient(g, weight, groups, stride, dilation, padded_shape)
        grad_x = fold_padding(grad_padded, pads, padding_mode)
    grad_w = grad_b = None
    if need_weight:
        padded = _padded(x, pads, padding_mode)
        grad_w = _weight_gradient(g, padded, (O, Cg, kh, kw), groups, stride, dilation)
        grad_b = g.sum(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
    return (grad_x if batched or grad_x is None else grad_x[0]), grad_w, grad_b


def conv_transpose2d(x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0),
                     dilation=(1, 1), groups: int = 1) -> np.ndarray:
    """A transposed convolution (ONNX's ConvTranspose, torch's ``conv_transpose2d``) of ``x`` (N, C_in, H, W) by
    ``weight`` (C_in, C_out / groups, kh, kw): the input gradient of the convolution by the same weights, spread
    over the whole grid the stride makes (and ``output_padding`` rows and columns more), then cropped by ``pads``
    (top, left, bottom, right), plus the bias.

    >>> x = np.ones((1, 1, 2, 2), np.float32)
    >>> conv_transpose2d(x, np.ones((1, 1, 2, 2), np.float32), stride=(2, 2))[0, 0]  # each input a 2x2 block
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]], dtype=float32)
    """
    x = np.asarray(x, np.float32)
    weight = np.asarray(weight, np.float32)
    kernel = weight.shape[2:]
    full = [(n - 1) * s + d * (k - 1) + 1 + extra
            for n, s, d, k, extra in zip(x.shape[2:], stride, dilation, kernel, output_padding, strict=True)]
    spread = _input_gradient(x, weight, groups, tuple(stride), tuple(dilation), tuple(full))
    if list(spread.shape[2:]) != full:  # the stride-1 path makes the grid without the output padding's rows
        spread = np.pad(spread, ((0, 0), (0, 0), (0, full[0] - spread.shape[2]), (0, full[1] - spread.shape[3])))
    top, left, bottom, right = pads
    out = np.ascontiguousarray(spread[:, :, top : full[0] - bottom, left : full[1] - right])
    if bias is not None:
        out += np.asarray(bias, np.float32).reshape(1, -1, 1, 1)
    return out


def _input_gradient(g, weight, groups, stride, dilation, padded_shape) -> np.ndarray:
    """The gradient of the padded input.

    With stride 1 it is a convolution: the output's gradient, bordered by the kernel's reach, correlated with the
    kernels turned half a turn and each group's transposed.  For grouped (depthwise) and large kernels the forward
    op's fast paths run it 4x to 9x faster than a product; for a bank spanning every channel turning the weights
    costs more than it saves.  Otherwise each output pixel's gradient times the kernels (one product, every tap's
    columns at once: the transpose of the forward op's gathered taps) is added back at the pixels each tap read, a
    strip of output rows at a time, so the columns stay in cache and a large photo needs no more memory than a
    strip.
    """
    N, O, Hout, Wout = g.shape
    _, Cg, kh, kw = weight.shape
    (s0, s1), (d0, d1) = stride, dilation
    C = Cg * groups
    if (s0, s1) == (1, 1) and (groups > 1 or kh * kw > 9):
        turned = weight[:, :, ::-1, ::-1].reshape(groups, O // groups, Cg, kh, kw).transpose(0, 2, 1, 3, 4)
        return conv2d(g, np.ascontiguousarray(turned.reshape(C, O // groups, kh, kw)),
                      padding=((kh - 1) * d0, (kw - 1) * d1), dilation=(d0, d1), groups=groups)
    banks = weight.reshape(groups, O // groups, Cg * kh * kw).transpose(0, 2, 1)  # BLAS reads it transposed
    if (kh, kw) == (1, 1) and (s0, s1) == (1, 1) and tuple(padded_shape) == (Hout, Wout):
        # A 1x1 convolution (most of ResNet's): the product is the gradient itself, with nothing to add back.
        rows = np.ascontiguousarray(g.reshape(N, groups, O // groups, Hout * Wout).transpose(1, 2, 0, 3))
        with blas_threads():
            product = np.matmul(banks, rows.reshape(groups, O // groups, N * Hout * Wout))
        return np.ascontiguousarray(product.reshape(C, N, Hout, Wout).transpose(1, 0, 2, 3))
    out = np.zeros((N, C, *padded_shape), np.float32)
    row_bytes = 4 * N * Wout * (C * kh * kw + O)
    for r0, r1 in strips(Hout, row_bytes):
        R = r1 - r0
        rows = np.ascontiguousarray(g[:, :, r0:r1].reshape(N, groups, O // groups, R * Wout).transpose(1, 2, 0, 3))
        with blas_threads():
            columns = np.matmul(banks, rows.reshape(groups, O // groups, N * R * Wout))  # (groups, Cg*kh*kw, N*R*Wout)
        columns = columns.reshape(groups, Cg, kh, kw, N, R, Wout)
        for i in range(kh):
            for j in range(kw):
                top, left = r0 * s0 + i * d0, j * d1
                at = out[:, :, top : top + (R - 1) * s0 + 1 : s0, left : left + (Wout - 1) * s1 + 1 : s1]
                at += columns[:, :, i, j].reshape(C, N, R, Wout).transpose(1, 0, 2, 3)
    return out


GATHERED_BYTES = 32 << 20  # the weights' gradient gathers every tap's inputs at once up to this size


def _weight_gradient(g, padded, shape, groups, stride, dilation) -> np.ndarray:
    """``grad_w[o, c, i, j]``: the sum over the batch and the output's pixels of the output's gradient times the
    input the tap (i, j) read there.  Every tap's inputs gathered side by side make it one product (a training
    batch of small images); past ``GATHERED_BYTES``, one product per tap, every group's at once."""
    O, Cg, kh, kw = shape
    N, Hout, Wout = g.shape[0], g.shape[2], g.shape[3]
    (s0, s1), (d0, d1) = stride, dilation
    by_group = np.ascontiguousarray(g.reshape(N, groups, O // groups, Hout * Wout).transpose(1, 2, 0, 3))
    by_group = by_group.reshape(groups, O // groups, N * Hout * Wout)

    def read(i: int, j: int) -> np.ndarray:  # what tap (i, j) read at every output pixel: (N, C, Hout, Wout)
        return padded[:, :, i * d0 : i * d0 + (Hout - 1) * s0 + 1 : s0, j * d1 : j * d1 + (Wout - 1) * s1 + 1 : s1]

    if 4 * Cg * groups * kh * kw * N * Hout * Wout <= GATHERED_BYTES:
        taps = np.empty((groups * Cg, kh, kw, N, Hout, Wout), np.float32)  # each tap's inputs, copied once
        for i in range(kh):
            for j in range(kw):
                taps[:, i, j] = read(i, j).transpose(1, 0, 2, 3)
        with blas_threads():
            product = np.matmul(by_group, taps.reshape(groups, Cg * kh * kw, N * Hout * Wout).transpose(0, 2, 1))
        return np.ascontiguousarray(product.reshape(O, Cg, kh, kw))
    grad = np.empty(shape, np.float32)
    for i in range(kh):
        for j in range(kw):
            taps = read(i, j).reshape(N, groups, Cg, Hout * Wout).transpose(1, 2, 0, 3).reshape(groups, Cg, -1)
            grad[:, :, i, j] = np.matmul(by_group, taps.transpose(0, 2, 1)).reshape(O, Cg)
    return grad


_NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _padded(x: np.ndarray, pads, mode: str) -> np.ndarray:
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=_NUMPY_MODES[mode])


def fold_padding(grad_padded: np.ndarray, pads, mode: str = "zeros") -> np.ndarray:
    """The gradient of a padded array (..., H + top + bottom, W + left + right) taken back to the array: the
    inside as it is, and each border cell's gradient added to the pixel it copied (none for a zero border)."""
    (top, bottom), (left, right) = pads
    H, W = grad_padded.shape[-2] - top - bottom, grad_padded.shape[-1] - left - right
    if mode == "zeros":
        return np.ascontiguousarray(grad_padded[..., top : top + H, left : left + W])
    return np.ascontiguousarray(_folded(_folded(grad_padded, top, bottom, mode, -2), left, right, mode, -1))


def _folded(grad: np.ndarray, before: int, after: int, mode: str, axis: int) -> np.ndarray:
    """One axis of ``fold_padding``: the inside, with each of the few border rows (or columns) added to the one it
    copied."""
    moved = np.moveaxis(grad, axis, 0)
    size = moved.shape[0] - before - after
    out = moved[before : before + size].copy()
    border = np.r_[0:before, before + size : before + size + after]
    for row, copied in zip(border, engine.border_map(border - before, size, mode), strict=True):
        out[copied] += moved[row]
    return np.moveaxis(out, 0, axis)


# ---------------------------------------------------------------- pooling


def spread_windows(grad, padded_shape, kernel, stride, dilation, taps=None) -> np.ndarray:
    """The transpose of reading windows: each window's gradient (N, C, Hout, Wout) added at every tap it read,
    into an array of ``padded_shape``; ``taps(i, j)``, if given, scales (or masks) the gradient at tap (i, j)."""
    out = np.zeros(padded_shape, np.float32)
    Hout, Wout = grad.shape[-2:]
    (kh, kw), (s0, s1), (d0, d1) = kernel, stride, dilation
    for i in range(kh):
        for j in range(kw):
            at = out[..., i * d0 : i * d0 + (Hout - 1) * s0 + 1 : s0, j * d1 : j * d1 + (Wout - 1) * s1 + 1 : s1]
            at += grad if taps is None else taps(i, j)
    return out


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode: bool = False, output=None) -> np.ndarray:
    """Gradient of ``ops.max_pool2d`` with respect to ``x``: each window's to its largest value (the first in
    the window's row order where several tie, as torch does).  ``output``, the pool's own result where the caller
    kept it, saves finding each window's largest again.

    >>> max_pool2d_backward([[[1.0]]], [[[1, 3], [3, 2]]], 2)
    array([[[0., 1.],
            [0., 0.]]], dtype=float32)
    """
    x, batched = as_batch(x)
    g, _ = as_batch(grad_out, "grad_out")
    kernel, stride, dilation, pad, size = pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    if _tiles(x.shape, kernel, stride, dilation, pad, size):
        largest = None if output is None else as_batch(output, "output")[0]
        grad = _tiled_max_backward(g, x, kernel, largest)
        return grad if batched else grad[0]
    pads = pool_pads(x.shape[-2:], kernel, stride, dilation, pad, size)
    padded = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    grad = max_windows_backward(g, padded, kernel, stride, dilation)
    grad = fold_padding(grad, pads)
    return grad if batched else grad[0]


def _tiles(shape, kernel, stride, dilation, pad, size) -> bool:
    """Whether the windows tile the image exactly: no overlap, no gap, no padding, nothing left over."""
    return (tuple(kernel) == tuple(stride) and tuple(dilation) == (1, 1) and not any(pad)
            and all(n == k * m for n, k, m in zip(shape[-2:], kernel, size, strict=True)))


def _tiled_max_backward(g: np.ndarray, x: np.ndarray, kernel, largest: np.ndarray | None = None) -> np.ndarray:
    """Windows that tile the image (a 2x2 pool of stride 2): tap by tap, each window's gradient put at its first
    largest value (NaN counts as largest, as in the forward op), read in place, nothing transposed."""
    kh, kw = kernel
    taps = [(i, j) for i in range(kh) for j in range(kw)]

    def tap(a: np.ndarray, i: int, j: int) -> np.ndarray:
        return a[..., i::kh, j::kw]

    if largest is None or largest.shape != g.shape:
        largest = tap(x, 0, 0).copy()
        for i, j in taps[1:]:
            np.maximum(largest, tap(x, i, j), out=largest)
    nan = bool(np.isnan(largest).any())  # a window holding NaN has NaN as its largest
    finite = bool(np.isfinite(g).all())  # then g times a mask is g or 0 (NaN times 0 would be NaN)
    grad = np.empty(x.shape, np.float32) if finite else np.zeros(x.shape, np.float32)
    open_ = np.ones(g.shape, bool)  # windows whose largest value has not been met yet
    for i, j in taps:
        if (i, j) == taps[-1]:
            hit = open_  # every window still open has its largest here
        else:
            hit = tap(x, i, j) == largest
            if nan:
                hit |= np.isnan(tap(x, i, j))
            hit &= open_
            open_ ^= hit
        if finite:  # every place written once, in one pass
            np.multiply(g, hit, out=tap(grad, i, j))
        else:
            np.copyto(tap(grad, i, j), g, where=hit)
    return grad


def max_windows_backward(g: np.ndarray, padded: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """The gradient of the padded input of a max over windows: each window's at its first largest tap."""
    Hout, Wout = g.shape[-2:]
    (kh, kw), (s0, s1), (d0, d1) = kernel, stride, dilation

    def tap(i: int, j: int) -> np.ndarray:
        return padded[..., i * d0 : i * d0 + (Hout - 1) * s0 + 1 : s0, j * d1 : j * d1 + (Wout - 1) * s1 + 1 : s1]

    largest = tap(0, 0).copy()
    for i in range(kh):
        for j in range(kw):
            np.maximum(largest, tap(i, j), out=largest)
    open_ = np.ones(g.shape, bool)  # windows whose largest value has not been met yet

    def first_largest(i: int, j: int) -> np.ndarray:
        hit = open_ & ((tap(i, j) == largest) | np.isnan(tap(i, j)))
        open_[hit] = False
        return np.where(hit, g, np.float32(0))

    return spread_windows(g, padded.shape, kernel, stride, dilation, first_largest)


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                        count_include_pad: bool = True) -> np.ndarray:
    """Gradient of ``ops.avg_pool2d`` with respect to its input (of ``x_shape``): each window's, over its count,
    at every cell it averaged.

    >>> avg_pool2d_backward([[[4.0]]], (1, 2, 2), 2)
    array([[[1., 1.],
            [1., 1.]]], dtype=float32)
    """
    g, batched = as_batch(grad_out, "grad_out")
    shape = tuple(x_shape) if len(x_shape) == 4 else (1, *x_shape)
    H, W = shape[-2:]
    sides = np.broadcast_to(np.float32(0), (H, W))
    kernel, stride, _, pad, size = pool_geometry(sides, kernel_size, stride, padding, 1, ceil_mode)
    pads = pool_pads((H, W), kernel, stride, (1, 1), pad, size)
    rows = window_counts(H, kernel[0], stride[0], pad[0], size[0], count_include_pad)
    cols = window_counts(W, kernel[1], stride[1], pad[1], size[1], count_include_pad)
    share = (g / np.outer(rows, cols)).astype(np.float32)
    padded = (*g.shape[:2], H + sum(pads[0]), W + sum(pads[1]))
    grad = fold_padding(spread_windows(share, padded, kernel, stride, (1, 1)), pads)
    return grad if batched else grad[0]


# ---------------------------------------------------------------- activations, products, probabilities


def activation_backward(function: str, grad_out, x, output=None, **options) -> np.ndarray:
    """Gradient of an elementwise activation with respect to its input ``x`` (``output`` is its value, where the
    derivative reads it): relu, relu6, leaky_relu (``slope``), sigmoid, tanh, abs, hard_sigmoid (``alpha``,
    ``beta``), hard_swish, silu, gelu (``approximate``: "none" or "tanh"), clip (``low``, ``high``), exp."""
    g = np.asarray(grad_out, np.float32)
    x = np.asarray(x, np.float32)
    if function == "relu":
        return np.where(x > 0, g, np.float32(0))
    if function in ("relu6", "clip"):
        low, high = (0, 6) if function == "relu6" else (options.get("low"), options.get("high"))
        inside = (x > low) & (x < high)  # torch passes nothing at the bounds themselves
        return np.where(inside, g, np.float32(0))
    if function == "leaky_relu":
        return np.where(x > 0, g, g * np.float32(options.get("slope", 0.01)))
    if function == "abs":
        return g * np.sign(x)
    if function in ("sigmoid", "tanh", "exp"):
        y = output if output is not None else {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh,
                                                "exp": np.exp}[function](x)
        return g * {"sigmoid": lambda: y * (1 - y), "tanh": lambda: 1 - y * y, "exp": lambda: y}[function]()
    if function == "hard_sigmoid":
        alpha, beta = options.get("alpha", 0.2), options.get("beta", 0.5)
        inside = (alpha * x + beta > 0) & (alpha * x + beta < 1)
        return np.where(inside, g * np.float32(alpha), np.float32(0))
    if function == "hard_swish":  # x * min(max(x / 6 + 1/2, 0), 1), as torch differentiates it
        return np.where(x < -3, np.float32(0), np.where(x > 3, g, g * (x / 3 + np.float32(0.5))))
    if function == "silu":
        s = 1 / (1 + np.exp(-x.astype(np.float64)))
        return (g * s * (1 + x * (1 - s))).astype(np.float32)
    if function == "gelu":
        return g * _gelu_derivative(x.astype(np.float64), options.get("approximate", "none")).astype(np.float32)
    raise ValueError(f"no derivative for activation {function!r}")


def _gelu_derivative(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    phi = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return 0.5 * (1 + erf(x / np.sqrt(2))) + x * phi


def linear_backward(grad_out, x, weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``ops.linear(x, weight, bias)`` (x (N, in), weight (out, in)): input, weight and bias."""
    g = np.asarray(grad_out, np.float32)
    return g @ weight, g.T @ np.asarray(x, np.float32), g.sum(axis=0, dtype=np.float64).astype(np.float32)


def softmax_backward(grad_out, output, axis: int = -1) -> np.ndarray:
    """Gradient of a softmax with respect to its scores, from its output ``y``: ``y * (g - sum(g * y))``."""
    g, y = np.asarray(grad_out, np.float64), np.asarray(output, np.float64)
    return (y * (g - (g * y).sum(axis=axis, keepdims=True))).astype(np.float32)


def log_softmax_backward(grad_out, output, axis: int = -1) -> np.ndarray:
    """Gradient of a log-softmax with respect to its scores, from its output: ``g - exp(y) * sum(g)``."""
    g, y = np.asarray(grad_out, np.float64), np.asarray(output, np.float64)
    return (g - np.exp(y) * g.sum(axis=axis, keepdims=True)).astype(np.float32)


def resample_backward(grad_out, shape, rows, cols) -> np.ndarray:
    """Gradient of ``ops.resample(x, rows, cols)`` with respect to ``x`` of ``shape`` (C, H, W): each sample's
    gradient shared among its four neighbours by their weights."""
    g = np.asarray(grad_out, np.float64)
    (r0, c0), (r1, c1), (wr, wc) = bilinear_corners(shape[1:], rows, cols)
    out = np.zeros(shape, np.float64)
    for r, c, weight in ((r0, c0, (1 - wr) * (1 - wc)), (r0, c1, (1 - wr) * wc), (r1, c0, wr * (1 - wc)),
                         (r1, c1, wr * wc)):
        np.add.at(out, (slice(None), r, c), g * weight)
    return out.astype(np.float32)


def unbroadcast(grad: np.ndarray, shape) -> np.ndarray:
    """A gradient of a broadcast result summed back to an operand of ``shape`` (numpy's broadcasting rules)."""
    grad = np.asarray(grad)
    shape = tuple(shape)
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    kept = tuple(k for k, n in enumerate(shape) if n == 1 and grad.shape[k] != 1)
    if kept:
        grad = grad.sum(axis=kept, keepdims=True)
    return grad.astype(np.float32).reshape(shape)
