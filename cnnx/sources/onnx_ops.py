"""What each ONNX op cnnx runs computes: a function per op, from the node, its inputs and the opset, on cnnx's own
numpy ops; which ops make maps worth showing as stages; and the geometry helpers the explainer shares."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnx.base.errors import CnnxError, printable
from cnnx.compute import grad as reverse
from cnnx.compute import ops

__all__ = ["ACTIVATION_OPS", "OPS", "RUN", "SHOWN", "SUPPORTED", "Op", "attributes", "conv_pads", "pairs",
           "pool_geometry", "run_checked", "run_node"]

Shape = tuple[int, ...]


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pairs(node_attrs: dict, key: str, default: int, n: int = 2) -> list[int]:
    return list(node_attrs.get(key, [default] * n))


# ---------------------------------------------------------------- the ops


def text_of(value, default: str) -> str:
    """A string attribute (onnx keeps it as bytes), or ``default`` where it is absent."""
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else value


def along_channels(value, ndim: int) -> np.ndarray:
    """One value per channel, shaped to broadcast over maps (N, C, ...) of ``ndim`` axes."""
    return np.asarray(value).reshape((1, -1) + (1,) * (ndim - 2))


def conv_pads(attrs: dict, x_shape: Shape, kernel: Shape) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``, as ONNX defines them."""
    strides, dilations = pairs(attrs, "strides", 1), pairs(attrs, "dilations", 1)
    auto = text_of(attrs.get("auto_pad"), "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s, d in zip(x_shape[-2:], kernel, strides, dilations, strict=True):
            out = -(-n // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
            pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
        return pads[0][0], pads[1][0], pads[0][1], pads[1][1]
    if auto == "VALID":
        return 0, 0, 0, 0
    top, left, bottom, right = pairs(attrs, "pads", 0, 4)
    return top, left, bottom, right


def _padded(x: np.ndarray, pads, fill: float) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)


def _conv(node, x, w, b=None):
    attrs = node.attrs
    pads = conv_pads(attrs, x.shape, w.shape[2:])
    symmetric = pads[0] == pads[2] and pads[1] == pads[3]
    return ops.conv2d(
        x if symmetric else _padded(x, pads, 0.0), w, b, stride=tuple(pairs(attrs, "strides", 1)),
        padding=(pads[0], pads[1]) if symmetric else 0, dilation=tuple(pairs(attrs, "dilations", 1)),
        groups=attrs.get("group", 1),
    )


def transpose_geometry(attrs: dict, x_shape: Shape, w_shape: Shape) -> tuple:
    """A ConvTranspose's strides, dilations, (top, left, bottom, right) crop and output padding, as ONNX defines
    them: from ``pads``, or from ``output_shape`` or ``auto_pad`` (the crop split as ONNX says)."""
    strides, dilations = pairs(attrs, "strides", 1), pairs(attrs, "dilations", 1)
    extra = pairs(attrs, "output_padding", 0)
    auto = text_of(attrs.get("auto_pad"), "NOTSET")
    wanted = attrs.get("output_shape")
    if wanted is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        wanted = [n * s for n, s in zip(x_shape[2:], strides, strict=True)]
    if wanted is None:
        return strides, dilations, (0, 0, 0, 0) if auto == "VALID" else tuple(pairs(attrs, "pads", 0, 4)), extra
    begin, end = [], []
    for n, s, d, k, e, o in zip(x_shape[2:], strides, dilations, w_shape[2:], extra, list(wanted)[-2:], strict=True):
        total = s * (n - 1) + e + d * (k - 1) + 1 - o
        first = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return strides, dilations, (begin[0], begin[1], end[0], end[1]), extra


def _conv_transpose(node, x, w, b=None):
    strides, dilations, pads, extra = transpose_geometry(node.attrs, x.shape, w.shape)
    return reverse.conv_transpose2d(x, w, b, strides, pads, extra, dilations, node.attrs.get("group", 1))


def pool_geometry(attrs: dict, x_shape: Shape):
    kernel = list(attrs["kernel_shape"])
    strides, dilations = pairs(attrs, "strides", 1), pairs(attrs, "dilations", 1)
    pads = list(conv_pads(attrs, x_shape, kernel))
    if attrs.get("ceil_mode", 0):  # the last window may start inside the input and reach past it
        for axis, (n, k, s, d) in enumerate(zip(x_shape[-2:], kernel, strides, dilations, strict=True)):
            span = d * (k - 1) + 1
            padded = n + pads[axis] + pads[axis + 2]
            out = -(-(padded - span) // s) + 1
            if (out - 1) * s >= n + pads[axis]:
                out -= 1
            pads[axis + 2] += max(0, (out - 1) * s + span - padded)
    return kernel, strides, dilations, tuple(pads)


def _max_pool(node, x):
    kernel, strides, dilations, pads = pool_geometry(node.attrs, x.shape)
    return ops.window_reduce(x, kernel, strides, dilations, _pairs(pads), np.maximum, -np.inf)


def _average_pool(node, x):
    kernel, strides, dilations, pads = pool_geometry(node.attrs, x.shape)
    if list(x.shape[-2:]) == kernel and not any(pads) and dilations == [1, 1]:  # one window: the mean of each map
        return x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    sums = ops.window_reduce(x, kernel, strides, dilations, _pairs(pads), np.add, 0.0)
    return np.divide(sums, average_pool_counts(node, x.shape), out=sums)


def _pairs(pads) -> tuple[tuple[int, int], tuple[int, int]]:
    """ONNX's (top, left, bottom, right) as ((top, bottom), (left, right))."""
    top, left, bottom, right = pads
    return (top, bottom), (left, right)


def average_pool_counts(node, x_shape) -> np.ndarray:
    """How many cells each window of an AveragePool divides by: the input's, and the explicit padding's only with
    count_include_pad; ceil_mode's extra cells never."""
    attrs = node.attrs
    kernel, strides, dilations, pads = pool_geometry(attrs, x_shape)
    explicit = conv_pads(attrs, x_shape, kernel)
    ones = np.ones((1, 1, *x_shape[-2:]), np.float32)
    counted = np.pad(ones, ((0, 0), (0, 0), (explicit[0], explicit[2]), (explicit[1], explicit[3])),
                     constant_values=1.0 if attrs.get("count_include_pad", 0) else 0.0)
    extra = (0, 0, pads[2] - explicit[2], pads[3] - explicit[3])
    return ops.window_reduce(counted, kernel, strides, dilations, _pairs(extra), np.add, 0.0)


def _box_mean(node, x):
    """An average pool over other than two axes (PyTorch's LocalResponseNorm pools over channels as a third):
    window sums along each axis from running sums, in float64; no ceil_mode, dilations or auto_pad."""
    attrs, n = node.attrs, x.ndim - 2
    kernel = list(attrs["kernel_shape"])
    strides, pads = list(attrs.get("strides", [1] * n)), list(attrs.get("pads", [0] * 2 * n))
    auto = attrs.get("auto_pad", b"NOTSET")
    if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1] * n)) or auto not in (
        b"NOTSET", "NOTSET"
    ):
        raise ValueError(f"an average pool over {n} axes takes no ceil_mode, dilations or auto_pad in cnnx")
    widths = list(zip(pads[:n], pads[n:], strict=True))
    sums = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *widths])
    counts = np.pad(np.ones(x.shape[2:]), widths, constant_values=1.0 if attrs.get("count_include_pad", 0) else 0.0)
    for axis, (k, s) in enumerate(zip(kernel, strides, strict=True)):
        sums, counts = _window_sums(sums, axis + 2, k, s), _window_sums(counts, axis, k, s)
    return (sums / counts).astype(np.float32)


def _window_sums(values: np.ndarray, axis: int, size: int, step: int) -> np.ndarray:
    """The sums of windows of ``size`` along ``axis``, every ``step``-th, from running sums."""
    running = np.cumsum(values, axis=axis)
    running = np.concatenate([np.zeros_like(np.take(running, [0], axis=axis)), running], axis=axis)
    starts = np.arange(0, values.shape[axis] - size + 1, step)
    return np.take(running, starts + size, axis=axis) - np.take(running, starts, axis=axis)


def _batch_norm(node, x, scale, bias, mean, var):
    eps = node.attrs.get("epsilon", 1e-5)
    factor = (scale / np.sqrt(var + eps)).astype(np.float32)
    out = np.multiply(x, along_channels(factor, x.ndim), dtype=np.float32)  # two passes over the map, no copies
    out += along_channels((bias - mean * factor).astype(np.float32), x.ndim)
    return out


def _gemm(node, a, b, c=None):
    attrs = node.attrs
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        out = out + attrs.get("beta", 1.0) * c
    return out.astype(np.float32)


def _softmax(node, x, opset: int):
    axis = node.attrs.get("axis", -1 if opset >= 13 else 1)
    if opset < 13:  # the input is flattened to 2-D from ``axis`` on, as opsets before 13 say
        shape = x.shape
        flat = x.reshape(math.prod(shape[:axis]), -1)
        return ops.softmax(flat, dim=-1).reshape(shape)
    return ops.softmax(x, dim=axis)


def _log_softmax(node, x, opset: int):
    """LogSoftmax, its axis read as Softmax's (flattened to 2-D from ``axis`` on before opset 13)."""
    axis = node.attrs.get("axis", -1 if opset >= 13 else 1)
    if opset < 13:
        return ops.log_softmax(x.reshape(math.prod(x.shape[:axis]), -1), dim=-1).reshape(x.shape)
    return ops.log_softmax(x, dim=axis)


# The exponential activations, as ONNX defines them (alpha, gamma: their attributes with ONNX's defaults), in float32.
SELU = (1.67326319217681884765625, 1.05070102214813232421875)


def _exponential_linear(x, alpha: float, gamma: float = 1.0, inner: float = 1.0):
    """``gamma * x`` above zero, ``gamma * alpha * (exp(x / inner) - 1)`` at or below: ELU (gamma 1, inner 1), SELU
    (its constants), CELU (inner alpha)."""
    x = np.asarray(x, np.float32)
    below = np.float32(alpha) * np.expm1(np.minimum(x, 0) / np.float32(inner))
    return (np.float32(gamma) * np.where(x > 0, x, below)).astype(np.float32)


def _softplus(x):
    return np.logaddexp(np.float32(0), np.asarray(x, np.float32))


def _mish(x):
    x = np.asarray(x, np.float32)
    return x * np.tanh(_softplus(x))


def resize_taps(node, inputs, opset: int, shape) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """What Resize (and Upsample, as opsets before 10 call it) reads for each output row and column: per resized
    axis, its index, and the input positions (out, taps) and weights (out, taps) each output value sums, as ONNX
    defines them (a nearest value one tap, linear two, cubic four; positions past the border read the border).

    A map (N, C, H, W) is resized over its height and width; anything else is refused in one line.
    """
    attrs = node.attrs
    mode = text_of(attrs.get("mode"), "nearest")
    if node.op == "Upsample" or opset < 11:  # scales only, the output's grid laid on the input's from the corner
        scales = attrs.get("scales") if node.op == "Upsample" and opset < 9 else inputs[1]
        sizes, transform, nearest = None, "asymmetric", "floor"
    else:
        scales, sizes = (inputs[k] if len(inputs) > k and inputs[k] is not None else None for k in (2, 3))
        transform = text_of(attrs.get("coordinate_transformation_mode"), "half_pixel")
        nearest = text_of(attrs.get("nearest_mode"), "round_prefer_floor")
        if attrs.get("antialias", 0) or text_of(attrs.get("keep_aspect_ratio_policy"), "stretch") != "stretch":
            raise CnnxError(f"node {node.name or node.op} (Resize): cnnx resizes without antialiasing and stretches "
                            "to the sizes given")
    if mode not in ("nearest", "linear", "cubic") or transform == "tf_crop_and_resize":
        raise CnnxError(f"node {node.name or node.op} ({node.op}): cnnx resizes by nearest, linear or cubic "
                        f"interpolation over the whole map; this one asks for {mode}, {transform}")
    axes = [a % len(shape) for a in attrs.get("axes", range(len(shape)))]
    wanted = np.asarray(sizes if sizes is not None and np.size(sizes) else scales, np.float64).ravel()
    if not (np.isfinite(wanted).all() and (wanted > 0).all()):
        raise CnnxError(f"node {node.name or node.op} ({node.op}): its scales or sizes must be above zero; got "
                        f"{wanted.tolist()}")
    given_sizes = sizes is not None and np.size(sizes) > 0
    out, scale = list(shape), [1.0] * len(shape)
    for axis, value in zip(axes, wanted, strict=True):
        out[axis] = int(value) if given_sizes else int(np.float32(shape[axis]) * np.float32(value))
        scale[axis] = out[axis] / shape[axis] if given_sizes else float(value)
    if len(shape) != 4 or out[:2] != list(shape[:2]):
        raise CnnxError(f"node {node.name or node.op} ({node.op}): cnnx resizes the height and width of maps "
                        f"(N, C, H, W); this one makes {list(shape)} into {out}")
    options = (mode, transform, nearest, attrs.get("cubic_coeff_a", -0.75), attrs.get("exclude_outside", 0))
    # The width first: its gathers pick columns, cheaper on the smaller map; the height's then copy whole rows.
    return [(axis, *_taps(shape[axis], out[axis], scale[axis], *options)) for axis in (3, 2)]


def _taps(size: int, out: int, scale: float, mode: str, transform: str, nearest: str, a: float, exclude: int):
    """One axis's positions and weights, (out, taps) each: where each output lands on the input (``transform``),
    then the nearest position or the linear or cubic weights of its neighbours."""
    y = np.arange(out, dtype=np.float64)
    if transform == "align_corners":
        x = y * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    elif transform == "asymmetric":
        x = y / scale
    elif transform == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif transform == "pytorch_half_pixel":
        x = (y + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    elif transform == "half_pixel_symmetric":
        x = size / 2 * (1 - out / (scale * size)) + (y + 0.5) / scale - 0.5
    elif transform == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:
        raise CnnxError(f"Resize: unknown coordinate_transformation_mode {printable(transform)!r}")
    if mode == "nearest":
        rounding = {"round_prefer_floor": lambda v: np.ceil(v - 0.5), "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                    "floor": np.floor, "ceil": np.ceil}.get(nearest)
        if rounding is None:
            raise CnnxError(f"Resize: unknown nearest_mode {printable(nearest)!r}")
        return np.clip(rounding(x), 0, size - 1).astype(np.int64)[:, None], np.ones((out, 1))
    first = np.floor(x)
    r = (x - first)[:, None]
    if mode == "linear":
        positions, weights = first[:, None] + np.arange(2), np.hstack([1 - r, r])
    else:  # cubic: the convolution kernel of Keys, with a = cubic_coeff_a, over four neighbours
        positions = first[:, None] + np.arange(-1, 3)
        d = np.abs(positions - x[:, None])
        weights = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                           np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    if exclude:
        weights = np.where((positions >= 0) & (positions < size), weights, 0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(positions, 0, size - 1).astype(np.int64), weights


def _resize(node, inputs, opset: int) -> np.ndarray:
    """Resize and Upsample: each resized axis in turn, each output value its taps' weighted sum (read where they
    lie, so a NaN or an infinity stays where it was)."""
    x = np.asarray(inputs[0], np.float32)
    for axis, positions, weights in resize_taps(node, inputs, opset, x.shape):
        along = [1] * x.ndim
        along[axis] = -1
        taps = [np.take(x, positions[:, k], axis=axis) for k in range(positions.shape[1])]
        if len(taps) == 2:  # linear: the first tap plus the weighed step to the second, in place
            np.subtract(taps[1], taps[0], out=taps[1])
            taps[1] *= weights[:, 1].astype(np.float32).reshape(along)
            x = np.add(taps[0], taps[1], out=taps[0])
        elif len(taps) == 1:
            x = taps[0]
        else:
            x = sum(tap * weights[:, k].astype(np.float32).reshape(along) for k, tap in enumerate(taps))
    return x


def _lrn(node, x):
    """x over (bias + alpha/size * the sum of squares of ``size`` neighbouring channels) ** beta, as ONNX's LRN. In
    float32 with the window summed as ``size`` shifted slices (a few passes, where float64 cumulative sums took
    several times ONNX Runtime's whole network); in float64 where a square would overflow float32."""
    attrs = node.attrs
    size, alpha, beta, bias = attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    wide = float(np.abs(x).max(initial=0)) ** 2 * size > 1e38  # a window's sum would pass float32's largest
    squares = np.square(x, dtype=np.float64 if wide else np.float32)
    padded = np.pad(squares, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    C = x.shape[1]
    base = padded[:, :C].copy()
    for k in range(1, size):
        base += padded[:, k : k + C]
    base *= alpha / size
    base += bias
    if beta == 0.75:  # the usual beta, by square roots: several times faster than a power
        root = np.sqrt(base)
        base = np.multiply(root, np.sqrt(root, out=base), out=base)
    else:
        np.power(base, beta, out=base)
    return np.divide(x, base, dtype=np.float32, casting="unsafe") if wide else np.divide(x, base, out=base)


def _reshape(node, x, shape):
    shape = [int(s) for s in shape]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def axes_of(node, inputs, opset: int, since: int) -> list[int] | None:
    """An op's axes: an attribute before opset ``since``, its second input from then on."""
    if opset >= since and len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in inputs[1]]
    axes = node.attrs.get("axes")
    return None if axes is None else list(axes)


def reduce_axes(node, inputs, opset: int, ndim: int) -> tuple[int, ...]:
    """The axes a Reduce op reduces: an attribute before opset 18 (13 for ReduceSum), its second input from then on;
    none given means all, unless ``noop_with_empty_axes`` says none."""
    axes = axes_of(node, inputs, opset, 13 if node.op == "ReduceSum" else 18)
    if not axes:
        return () if axes is not None and node.attrs.get("noop_with_empty_axes", 0) else tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


def _reduce(node, inputs, opset: int, reducer):
    """A Reduce op, its sums taken in float64 (``reducer(x, axes, keepdims)``)."""
    x = np.asarray(inputs[0], np.float32)
    keep = bool(node.attrs.get("keepdims", 1))
    return np.asarray(reducer(x, reduce_axes(node, inputs, opset, x.ndim), keep), np.float32)


def _sum(x, axes, keep):
    return x.sum(axis=axes, keepdims=keep, dtype=np.float64)


def _log_sum_exp(x, axes, keep):
    top = x.max(axis=axes, keepdims=True).astype(np.float64) if x.size else np.zeros(())
    top = np.where(np.isfinite(top), top, 0)
    total = np.log(np.exp(x - top).sum(axis=axes, keepdims=True, dtype=np.float64)) + top
    return total if keep else np.squeeze(total, axis=axes)


REDUCERS = {
    "ReduceMean": lambda x, axes, keep: x.mean(axis=axes, keepdims=keep, dtype=np.float64),
    "ReduceMax": lambda x, axes, keep: x.max(axis=axes, keepdims=keep),
    "ReduceMin": lambda x, axes, keep: x.min(axis=axes, keepdims=keep),
    "ReduceSum": _sum,
    "ReduceProd": lambda x, axes, keep: x.prod(axis=axes, keepdims=keep, dtype=np.float64),
    "ReduceL1": lambda x, axes, keep: _sum(np.abs(x), axes, keep),
    "ReduceL2": lambda x, axes, keep: np.sqrt(_sum(np.square(x, dtype=np.float64), axes, keep)),
    "ReduceSumSquare": lambda x, axes, keep: _sum(np.square(x, dtype=np.float64), axes, keep),
    "ReduceLogSumExp": _log_sum_exp,
}


def _clip(node, inputs, opset: int):
    attrs = node.attrs
    if opset >= 11:
        low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else -np.inf
        high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.inf
    else:
        low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    return np.clip(np.asarray(inputs[0], np.float32), low, high, dtype=np.float32)


def pad_widths(node, inputs, opset: int) -> list[tuple[int, int]]:
    """Pad's (before, after) for every axis: an attribute before opset 11, an input from then on, for the axes
    given (opset 18) or all; below zero, that many values are cut off."""
    x = inputs[0]
    pads = [int(p) for p in (inputs[1] if opset >= 11 else node.attrs["pads"])]
    axes = [int(a) % x.ndim for a in inputs[3]] if opset >= 18 and len(inputs) > 3 and inputs[3] is not None else \
        list(range(x.ndim))
    widths = [(0, 0)] * x.ndim
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + len(axes)])
    return widths


def _pad(node, inputs, opset: int):
    """Pad: constant, reflect, edge or wrap (opset 19), each side by its width, a negative one a crop."""
    attrs = node.attrs
    value = (inputs[2].item() if opset >= 11 and len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0))
    mode = text_of(attrs.get("mode"), "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise CnnxError(f"node {node.name or node.op} (Pad): mode {printable(mode)!r}; cnnx pads with constant, "
                        "reflect, edge or wrap")
    widths = pad_widths(node, inputs, opset)
    x = inputs[0][tuple(slice(max(0, -a), x_size - max(0, -b)) for (a, b), x_size in zip(widths, inputs[0].shape,
                                                                                          strict=True))]
    options = {"constant_values": value} if mode == "constant" else {}
    return np.pad(x, [(max(0, a), max(0, b)) for a, b in widths], mode=mode, **options)


def _shape(node, x) -> np.ndarray:
    """ONNX's Shape: the dimensions from ``start`` to ``end`` (opset 15), negative ones counted from the last."""
    dims = np.array(x.shape, np.int64)
    return dims[slice(node.attrs.get("start", 0), node.attrs.get("end"))]


def _divide(a, b):
    """ONNX's Div: true division of floats, and of integers (shapes, say) the floor."""
    return np.divide(a, b) if np.issubdtype(np.result_type(a, b), np.floating) else np.floor_divide(a, b)


def _constant(node):
    from onnx import numpy_helper

    attrs = node.attrs
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key in ("value_float", "value_int"):
        if key in attrs:
            return np.array(attrs[key])
    for key in ("value_floats", "value_ints"):
        if key in attrs:
            return np.array(list(attrs[key]))
    raise CnnxError(f"Constant node {node.name!r}: only numeric values are supported")


def _constant_of_shape(node, shape):
    from onnx import numpy_helper

    value = node.attrs.get("value")
    fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return np.full([int(s) for s in shape], fill.reshape(-1)[0], dtype=fill.dtype)



# Each op: how to compute its outputs from its inputs (None where an optional input is absent) and the opset.
def _hard_sigmoid(node, x):
    return np.clip(node.attrs.get("alpha", 0.2) * x + node.attrs.get("beta", 0.5), 0, 1).astype(np.float32)


def _flatten(node, x):
    return x.reshape(math.prod(x.shape[: node.attrs.get("axis", 1)]), -1)


def _squeeze(node, inputs, opset: int):
    axes = axes_of(node, inputs, opset, 13)
    return np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))


def _gather(node, x, indices):
    return np.take(x, np.asarray(indices, np.int64), axis=node.attrs.get("axis", 0))


def _gelu(node, x):
    """GELU as opset 20 defines it: exactly, x * Phi(x), or with the tanh approximation; in float32, as ONNX Runtime
    computes it."""
    approximate = text_of(node.attrs.get("approximate"), "none")
    x = np.asarray(x, np.float32)
    if approximate == "tanh":
        inner = np.float32(np.sqrt(2 / np.pi)) * (x + np.float32(0.044715) * x**3)
        out = np.tanh(inner, out=inner)
    else:
        out = ops.erf(x * np.float32(1 / np.sqrt(2)))
    out += 1
    out *= x
    out *= np.float32(0.5)
    return out


def _layer_norm(node, x, scale, bias=None):
    """LayerNormalization (opset 17): each sample normalised over the axes from ``axis`` on, then scaled and
    shifted."""
    axis = node.attrs.get("axis", -1) % x.ndim
    centred = normalised(x, tuple(range(axis, x.ndim)), node.attrs.get("epsilon", 1e-5))
    centred *= scale
    if bias is not None:
        centred += bias
    return centred


def normalised(x, axes, epsilon: float) -> np.ndarray:
    """``x`` less its mean over ``axes``, over its standard deviation there (plus ``epsilon`` under the root): the
    mean and variance summed in float64, the rest in float32."""
    x = np.asarray(x, np.float32)
    centred = x - x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
    variance = np.square(centred).mean(axis=axes, keepdims=True, dtype=np.float64)
    centred *= (1 / np.sqrt(variance + epsilon)).astype(np.float32)
    return centred


def _instance_norm(node, x, scale, bias):
    """InstanceNormalization: each channel of each image normalised over its map, then scaled and shifted."""
    normed = normalised(x, tuple(range(2, x.ndim)), node.attrs.get("epsilon", 1e-5))
    return normed * along_channels(scale, x.ndim) + along_channels(bias, x.ndim)


def group_shape(node, x_shape) -> tuple[int, ...]:
    """GroupNormalization's view of a map (N, C, ...): (N, groups, the rest), each group normalised as one."""
    groups = node.attrs["num_groups"]
    if x_shape[1] % groups:
        raise CnnxError(f"node {node.name or node.op} (GroupNormalization): {x_shape[1]} channels do not split into "
                        f"{groups} groups")
    return (x_shape[0], groups, -1)


def _group_norm(node, x, scale, bias, opset: int):
    """GroupNormalization: each group of channels normalised over its channels and maps together, then scaled and
    shifted per channel (per group before opset 21)."""
    normed = normalised(x.reshape(group_shape(node, x.shape)), 2, node.attrs.get("epsilon", 1e-5)).reshape(x.shape)
    scale, bias = (along_channels(group_channels(node, v, x.shape[1], opset), x.ndim) for v in (scale, bias))
    return normed * scale + bias


def group_channels(node, value, channels: int, opset: int) -> np.ndarray:
    """A GroupNormalization scale or bias, one per channel: before opset 21 one per group, shared by its channels."""
    return np.repeat(value, channels // node.attrs["num_groups"]) if opset < 21 else np.asarray(value)


def _depth_to_space(node, x):
    """DepthToSpace: each pixel's blocks of channels laid out as a block of pixels (DCR: depth, column, row;
    CRD: column, row, depth), as PixelShuffle exports."""
    b, c, h, w = x.shape
    size = node.attrs["blocksize"]
    if text_of(node.attrs.get("mode"), "DCR") == "CRD":
        blocks = x.reshape(b, c // size**2, size, size, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        blocks = x.reshape(b, size, size, c // size**2, h, w).transpose(0, 3, 4, 1, 5, 2)
    return blocks.reshape(b, c // size**2, h * size, w * size)


def _space_to_depth(node, x):
    b, c, h, w = x.shape
    size = node.attrs["blocksize"]
    blocks = x.reshape(b, c, h // size, size, w // size, size).transpose(0, 3, 5, 1, 2, 4)
    return blocks.reshape(b, c * size**2, h // size, w // size)


def _gather_nd(data, indices, batch: int):
    """GatherND: for each index tuple in the last axis of ``indices`` (negative ones counted from the end), the
    slice of ``data`` it names, the first ``batch`` axes shared by the two."""
    indices = np.asarray(indices, np.int64)
    if batch:
        return np.stack([_gather_nd(d, i, batch - 1) for d, i in zip(data, indices, strict=True)])
    depth = indices.shape[-1]
    flat = indices.reshape(-1, depth)
    flat = np.where(flat < 0, flat + np.array(data.shape[:depth]), flat)
    return data[tuple(flat.T)].reshape(*indices.shape[:-1], *data.shape[depth:])


def cumulative_sum(x, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    """CumSum: the running sum along ``axis`` (from its end when ``reverse``), each value left out of its own
    (``exclusive``), summed in float64."""
    x = np.asarray(x)
    moved = np.flip(x, axis) if reverse else x
    total = np.cumsum(moved, axis=axis, dtype=np.float64 if x.dtype.kind == "f" else None)
    if exclusive:
        total = np.concatenate([np.zeros_like(np.take(total, [0], axis=axis)),
                                np.take(total, range(total.shape[axis] - 1), axis=axis)], axis=axis)
    return (np.flip(total, axis) if reverse else total).astype(x.dtype)


def _top_k(node, inputs, opset: int):
    """TopK: the ``k`` largest values along ``axis`` (smallest, where ``largest`` is 0), largest first, and their
    indices; ``k`` an attribute before opset 10, an input from then on. Ties keep their order (the lower index
    first), as ONNX says."""
    x = np.asarray(inputs[0])
    axis = node.attrs.get("axis", -1) % x.ndim
    k = int(np.asarray(inputs[1]).ravel()[0]) if opset >= 10 else node.attrs["k"]
    largest = node.attrs.get("largest", 1)
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    indices = np.take(order, range(k), axis=axis)
    return np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64)


def _shrink(node, x):
    """Shrink: x less ``bias`` above ``lambd``, plus it below ``-lambd``, 0 between (PyTorch's hard and soft
    shrink)."""
    lambd, bias = np.float32(node.attrs.get("lambd", 0.5)), np.float32(node.attrs.get("bias", 0.0))
    return np.where(x > lambd, x - bias, np.where(x < -lambd, x + bias, np.float32(0))).astype(np.float32)


def _arg(node, x, pick):
    """ArgMax and ArgMin: the index of the largest (smallest) value along ``axis``, the first of equals unless
    ``select_last_index``."""
    axis = node.attrs.get("axis", 0) % x.ndim
    if node.attrs.get("select_last_index", 0):
        index = x.shape[axis] - 1 - pick(np.flip(x, axis=axis), axis=axis)
    else:
        index = pick(x, axis=axis)
    return np.expand_dims(index, axis).astype(np.int64) if node.attrs.get("keepdims", 1) else index.astype(np.int64)


def per_axis(node, value, x) -> np.ndarray:
    """A quantisation's scale or zero point shaped to broadcast over ``x``: one value, or one per index of ``axis``
    (1 by default)."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1 and x.ndim == 0:
        return value.reshape(())
    if value.ndim != 1:
        raise CnnxError(f"node {node.name or node.op} ({node.op}): cnnx quantises per tensor or per axis, not by "
                        "blocks")
    shape = [1] * x.ndim
    shape[node.attrs.get("axis", 1) % x.ndim] = -1
    return value.reshape(shape)


def _quantize(node, inputs):
    """QuantizeLinear: x over the scale, rounded half to even, plus the zero point, held in the zero point's integer
    type (uint8 by default) with its range."""
    x, scale = np.asarray(inputs[0], np.float32), inputs[1]
    point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), np.uint8)
    if np.asarray(point).dtype.kind not in "iu":
        raise CnnxError(f"node {node.name or node.op} (QuantizeLinear): cnnx quantises to integers; this one makes "
                        f"{np.asarray(point).dtype}")
    kind = np.iinfo(np.asarray(point).dtype)
    levels = np.rint(x / per_axis(node, scale, x).astype(np.float32)) + per_axis(node, point, x).astype(np.float32)
    return np.clip(levels, kind.min, kind.max).astype(np.asarray(point).dtype)


def _dequantize(node, inputs):
    """DequantizeLinear: (x less the zero point) times the scale, in float32."""
    x = np.asarray(inputs[0])
    point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), x.dtype)
    shifted = x.astype(np.int64 if x.dtype.kind in "iu" else np.float32) - per_axis(node, point, x)
    return (shifted.astype(np.float32) * per_axis(node, inputs[1], x).astype(np.float32)).astype(np.float32)


def _matmul(a, b):
    """MatMul; a stack of rows times one matrix (a Linear on channels-last maps) as a single product, which BLAS
    runs at speed, not one small product per row of the stack."""
    if b.ndim == 2 and a.ndim > 2:
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[1])
    return np.matmul(a, b)


def _cast(node, x):
    from onnx import helper

    return np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))


def _slice(node, inputs, opset: int):
    """Slice: starts, ends, axes and steps as attributes before opset 10, inputs from then on."""
    x = inputs[0]
    if opset >= 10:
        starts, ends = (np.asarray(v, np.int64).tolist() for v in inputs[1:3])
        axes = np.asarray(inputs[3], np.int64).tolist() if len(inputs) > 3 and inputs[3] is not None else None
        steps = np.asarray(inputs[4], np.int64).tolist() if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends, axes, steps = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis % x.ndim] = slice(start, end, step)  # ONNX counts and clamps the ends as Python's slices do
    return x[tuple(index)]


def _split(node, inputs, opset: int):
    """Split along ``axis`` into the node's outputs: by the sizes given (an attribute before opset 13, an input from
    then on), else into equal parts (the last smaller, as opset 18's num_outputs allows)."""
    x, axis = inputs[0], node.attrs.get("axis", 0)
    sizes = inputs[1] if opset >= 13 and len(inputs) > 1 and inputs[1] is not None else node.attrs.get("split")
    parts = len(node.outputs)
    if sizes is None:
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - k * step) for k in range(parts)]
    bounds = np.cumsum([0, *np.asarray(sizes, np.int64).tolist()])
    return tuple(np.take(x, range(a, b), axis=axis) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def _range(start, limit, delta):
    return np.arange(start.item(), limit.item(), delta.item()).astype(np.asarray(start).dtype)


def _unfolded_branch(node):
    raise CnnxError(f"node {node.name or node.op} (If): its branch is chosen when the model is read, not here")


def _any_average_pool(node, x):
    """An average pool over two axes, or over others (PyTorch's LocalResponseNorm pools over channels too)."""
    return _average_pool(node, x) if x.ndim == 4 else _box_mean(node, x)


def _global_mean(x):
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)


# An activation's rule for the explainer: (x, attributes, extra) -> (the rule in words, the value).
def _leaky_rule(x, a, extra):
    return f"x if x > 0 else {a.get('alpha', 0.01):g} x", x if x > 0 else a.get("alpha", 0.01) * x


def _prelu_rule(x, a, extra):
    return f"x if x > 0 else {extra[0]:g} x (this channel's slope)", x if x > 0 else extra[0] * x


def _clip_rule(x, a, extra):
    return f"min(max(x, {extra[0]:g}), {extra[1]:g})", min(max(x, extra[0]), extra[1])


def _hard_sigmoid_rule(x, a, extra):
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    return f"min(max({alpha:g} x + {beta:g}, 0), 1)", min(max(alpha * x + beta, 0.0), 1.0)


def _elu_rule(x, a, extra):
    alpha = a.get("alpha", 1.0)
    return f"x if x > 0 else {alpha:g} (exp(x) - 1)", x if x > 0 else alpha * math.expm1(x)


def _selu_rule(x, a, extra):
    alpha, gamma = a.get("alpha", SELU[0]), a.get("gamma", SELU[1])
    return (f"{gamma:.6g} x if x > 0 else {gamma:.6g} * {alpha:.6g} (exp(x) - 1)",
            gamma * (x if x > 0 else alpha * math.expm1(x)))


def _celu_rule(x, a, extra):
    alpha = a.get("alpha", 1.0)
    return f"x if x > 0 else {alpha:g} (exp(x / {alpha:g}) - 1)", x if x > 0 else alpha * math.expm1(x / alpha)


def _softplus_value(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _shrink_rule(x, a, extra):
    lambd, bias = a.get("lambd", 0.5), a.get("bias", 0.0)
    return (f"x - {bias:g} if x > {lambd:g}, x + {bias:g} if x < -{lambd:g}, else 0",
            x - bias if x > lambd else x + bias if x < -lambd else 0.0)


def _thresholded_rule(x, a, extra):
    alpha = a.get("alpha", 1.0)
    return f"x if x > {alpha:g} else 0", x if x > alpha else 0.0


def _gelu_rule(x, a, extra):
    if text_of(a.get("approximate"), "none") == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return "x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))", x / 2 * (1 + math.tanh(inner))
    return "x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2))", x / 2 * (1 + math.erf(x / math.sqrt(2)))


@dataclass(frozen=True)
class Op:
    """What an ONNX op means to cnnx, in one place that the runner, the loader, the explainer and the stage
    selection all read.

    ``run(node, inputs, opset)`` computes its output (``node.attrs`` holds its attributes, read once at load;
    an absent optional input is None).  ``shown``: its output is a map worth a look as a stage (not a shape, a
    constant or a copy).  ``value``: how one value of it is explained (conv, activation, join, concat, pool,
    global, dense, softmax, flatten, lrn, normalisation, resize; "computed" where its arithmetic is not shown).
    ``rule``: an activation's ``(x, attributes, extra) -> (the rule in words, the value)``, a join's ``(symbol,
    numpy ufunc)``.  ``field``: what it does to the receptive field (``window``: it slides one; ``whole``: it sees
    the whole input; ``resize``: it reads neighbours on a new grid; ``spread``: a transposed convolution spreads
    each input over a window of a finer grid).
    """

    run: Callable
    shown: bool = False
    value: str = "computed"
    rule: object = None
    field: str = "same"


def _activation(run: Callable, rule: Callable) -> Op:
    return Op(run, shown=True, value="activation", rule=rule)


def _join(run: Callable, symbol: str, ufunc, *, shown: bool = True) -> Op:
    return Op(run, shown=shown, value="join", rule=(symbol, ufunc))


OPS: dict[str, Op] = {
    "Conv": Op(lambda node, inputs, opset: _conv(node, *inputs), shown=True, value="conv", field="window"),
    "ConvTranspose": Op(lambda node, inputs, opset: _conv_transpose(node, *inputs), shown=True, field="spread"),
    "BatchNormalization": Op(lambda node, inputs, opset: _batch_norm(node, *inputs[:5]), shown=True),
    "Relu": _activation(lambda node, inputs, opset: np.maximum(inputs[0], np.float32(0)),
                        lambda x, a, extra: ("max(0, x)", max(0.0, x))),
    "LeakyRelu": _activation(lambda node, inputs, opset: ops.leaky_relu(inputs[0], node.attrs.get("alpha", 0.01)),
                             _leaky_rule),
    "PRelu": _activation(
        lambda node, inputs, opset: np.where(inputs[0] < 0, inputs[0] * inputs[1], inputs[0]).astype(np.float32),
        _prelu_rule),
    "Clip": _activation(lambda node, inputs, opset: _clip(node, inputs, opset), _clip_rule),
    "Sigmoid": _activation(lambda node, inputs, opset: ops.sigmoid(inputs[0]),
                           lambda x, a, extra: ("1 / (1 + exp(-x))", 1 / (1 + np.exp(-x)))),
    "HardSigmoid": _activation(lambda node, inputs, opset: _hard_sigmoid(node, inputs[0]), _hard_sigmoid_rule),
    "HardSwish": _activation(
        lambda node, inputs, opset: (inputs[0] * np.clip(inputs[0] / 6 + 0.5, 0, 1)).astype(np.float32),
        lambda x, a, extra: ("x * min(max(x / 6 + 1/2, 0), 1)", x * min(max(x / 6 + 0.5, 0.0), 1.0))),
    "Elu": _activation(lambda node, inputs, opset: _exponential_linear(inputs[0], node.attrs.get("alpha", 1.0)),
                       _elu_rule),
    "Selu": _activation(lambda node, inputs, opset: _exponential_linear(
        inputs[0], node.attrs.get("alpha", SELU[0]), node.attrs.get("gamma", SELU[1])), _selu_rule),
    "Celu": _activation(lambda node, inputs, opset: _exponential_linear(
        inputs[0], node.attrs.get("alpha", 1.0), inner=node.attrs.get("alpha", 1.0)), _celu_rule),
    "Softplus": _activation(lambda node, inputs, opset: _softplus(inputs[0]),
                            lambda x, a, extra: ("log(1 + exp(x))", _softplus_value(x))),
    "Softsign": _activation(lambda node, inputs, opset: inputs[0] / (np.float32(1) + np.abs(inputs[0])),
                            lambda x, a, extra: ("x / (1 + |x|)", x / (1 + abs(x)))),
    "Mish": _activation(lambda node, inputs, opset: _mish(inputs[0]),
                        lambda x, a, extra: ("x * tanh(log(1 + exp(x)))", x * math.tanh(_softplus_value(x)))),
    "ThresholdedRelu": _activation(
        lambda node, inputs, opset: np.where(inputs[0] > node.attrs.get("alpha", 1.0), inputs[0], np.float32(0)),
        _thresholded_rule),
    "Abs": _activation(lambda node, inputs, opset: ops.absolute(inputs[0]),
                       lambda x, a, extra: ("|x|", abs(x))),
    "Tanh": _activation(lambda node, inputs, opset: ops.tanh(inputs[0]),
                        lambda x, a, extra: ("tanh(x)", float(np.tanh(x)))),
    "Add": _join(lambda node, inputs, opset: np.add(inputs[0], inputs[1]), " + ", np.add),
    "Sub": _join(lambda node, inputs, opset: np.subtract(inputs[0], inputs[1]), " - ", np.subtract, shown=False),
    "Mul": _join(lambda node, inputs, opset: np.multiply(inputs[0], inputs[1]), " * ", np.multiply),
    "Div": _join(lambda node, inputs, opset: _divide(*inputs[:2]), " / ", np.divide, shown=False),
    "Sum": _join(lambda node, inputs, opset: sum(inputs[1:], start=inputs[0]), " + ", np.add),
    "Mean": Op(lambda node, inputs, opset: (sum(inputs[1:], start=inputs[0]) / np.float32(len(inputs))).astype(
        np.float32), shown=True),
    "Max": _join(lambda node, inputs, opset: functools.reduce(np.maximum, inputs), " max ", np.maximum),
    "Min": _join(lambda node, inputs, opset: functools.reduce(np.minimum, inputs), " min ", np.minimum),
    "Pow": Op(lambda node, inputs, opset: np.power(inputs[0], inputs[1]).astype(inputs[0].dtype)),
    "Concat": Op(lambda node, inputs, opset: np.concatenate(inputs, axis=node.attrs["axis"]), shown=True,
                 value="concat"),
    "MaxPool": Op(lambda node, inputs, opset: _max_pool(node, inputs[0]), shown=True, value="pool", field="window"),
    "AveragePool": Op(lambda node, inputs, opset: _any_average_pool(node, inputs[0]), shown=True, value="pool",
                      field="window"),
    "GlobalAveragePool": Op(lambda node, inputs, opset: _global_mean(inputs[0]), shown=True, value="global",
                            field="whole"),
    "GlobalMaxPool": Op(lambda node, inputs, opset: inputs[0].max(axis=(2, 3), keepdims=True), shown=True,
                        value="global", field="whole"),
    **{op: Op(lambda node, inputs, opset: _reduce(node, inputs, opset, REDUCERS[node.op]), shown=True,
              value="global" if op in ("ReduceMean", "ReduceMax") else "computed", field="whole")
       for op in REDUCERS},
    "Flatten": Op(lambda node, inputs, opset: _flatten(node, inputs[0]), shown=True, value="flatten", field="whole"),
    "Reshape": Op(lambda node, inputs, opset: _reshape(node, inputs[0], inputs[1]), field="whole"),
    "Transpose": Op(lambda node, inputs, opset: np.transpose(inputs[0], node.attrs.get("perm"))),
    "Squeeze": Op(lambda node, inputs, opset: _squeeze(node, inputs, opset)),
    "Unsqueeze": Op(lambda node, inputs, opset: np.expand_dims(inputs[0], tuple(axes_of(node, inputs, opset, 13)))),
    "Gemm": Op(lambda node, inputs, opset: _gemm(node, *inputs), shown=True, value="dense", field="whole"),
    "MatMul": Op(lambda node, inputs, opset: _matmul(inputs[0], inputs[1]), shown=True, value="dense",
                 field="whole"),
    "Softmax": Op(lambda node, inputs, opset: _softmax(node, inputs[0], opset), shown=True, value="softmax",
                  field="whole"),
    "LogSoftmax": Op(lambda node, inputs, opset: _log_softmax(node, inputs[0], opset), shown=True, field="whole"),
    "LRN": Op(lambda node, inputs, opset: _lrn(node, inputs[0]), shown=True, value="lrn"),
    "Resize": Op(lambda node, inputs, opset: _resize(node, inputs, opset), shown=True, value="resize",
                 field="resize"),
    "Upsample": Op(lambda node, inputs, opset: _resize(node, inputs, opset), shown=True, value="resize",
                   field="resize"),
    "Pad": Op(lambda node, inputs, opset: _pad(node, inputs, opset)),
    "Dropout": Op(lambda node, inputs, opset: inputs[0]),
    "Identity": Op(lambda node, inputs, opset: inputs[0]),
    "Constant": Op(lambda node, inputs, opset: _constant(node)),
    "ConstantOfShape": Op(lambda node, inputs, opset: _constant_of_shape(node, inputs[0])),
    "Shape": Op(lambda node, inputs, opset: _shape(node, inputs[0])),
    "Gather": Op(lambda node, inputs, opset: _gather(node, inputs[0], inputs[1])),
    "Erf": Op(lambda node, inputs, opset: ops.erf(inputs[0])),
    "Gelu": _activation(lambda node, inputs, opset: _gelu(node, inputs[0]), _gelu_rule),
    "LayerNormalization": Op(lambda node, inputs, opset: _layer_norm(node, *inputs[:3]), shown=True,
                             value="normalisation"),
    "Cast": Op(lambda node, inputs, opset: _cast(node, inputs[0])),
    "Slice": Op(lambda node, inputs, opset: _slice(node, inputs, opset)),
    "Split": Op(lambda node, inputs, opset: _split(node, inputs, opset)),
    "Equal": Op(lambda node, inputs, opset: np.equal(inputs[0], inputs[1])),
    "Greater": Op(lambda node, inputs, opset: np.greater(inputs[0], inputs[1])),
    "Less": Op(lambda node, inputs, opset: np.less(inputs[0], inputs[1])),
    "GreaterOrEqual": Op(lambda node, inputs, opset: np.greater_equal(inputs[0], inputs[1])),
    "LessOrEqual": Op(lambda node, inputs, opset: np.less_equal(inputs[0], inputs[1])),
    "Not": Op(lambda node, inputs, opset: np.logical_not(inputs[0])),
    "And": Op(lambda node, inputs, opset: np.logical_and(inputs[0], inputs[1])),
    "Or": Op(lambda node, inputs, opset: np.logical_or(inputs[0], inputs[1])),
    "Xor": Op(lambda node, inputs, opset: np.logical_xor(inputs[0], inputs[1])),
    "TopK": Op(lambda node, inputs, opset: _top_k(node, inputs, opset)),
    "CumSum": Op(lambda node, inputs, opset: cumulative_sum(inputs[0], int(inputs[1]) % np.ndim(inputs[0]),
                                                          bool(node.attrs.get("exclusive", 0)),
                                                          bool(node.attrs.get("reverse", 0)))),
    "GatherND": Op(lambda node, inputs, opset: _gather_nd(inputs[0], inputs[1], node.attrs.get("batch_dims", 0))),
    "Shrink": _activation(lambda node, inputs, opset: _shrink(node, inputs[0]), _shrink_rule),
    "Where": Op(lambda node, inputs, opset: np.where(inputs[0], inputs[1], inputs[2])),
    "Range": Op(lambda node, inputs, opset: _range(*inputs[:3])),
    "Expand": Op(lambda node, inputs, opset: inputs[0] * np.ones(np.asarray(inputs[1], np.int64), inputs[0].dtype)),
    "Neg": Op(lambda node, inputs, opset: np.negative(inputs[0])),
    "Sqrt": Op(lambda node, inputs, opset: np.sqrt(inputs[0])),
    "Exp": Op(lambda node, inputs, opset: np.exp(inputs[0])),
    "QuantizeLinear": Op(lambda node, inputs, opset: _quantize(node, inputs)),
    "DequantizeLinear": Op(lambda node, inputs, opset: _dequantize(node, inputs)),
    "Tile": Op(lambda node, inputs, opset: np.tile(inputs[0], np.asarray(inputs[1], np.int64).tolist())),
    "Size": Op(lambda node, inputs, opset: np.array(np.size(inputs[0]), np.int64)),
    "Log": Op(lambda node, inputs, opset: np.log(inputs[0])),
    "Reciprocal": Op(lambda node, inputs, opset: np.reciprocal(inputs[0])),
    "Sign": Op(lambda node, inputs, opset: np.sign(inputs[0])),
    "Floor": Op(lambda node, inputs, opset: np.floor(inputs[0])),
    "Ceil": Op(lambda node, inputs, opset: np.ceil(inputs[0])),
    "Round": Op(lambda node, inputs, opset: np.round(inputs[0])),  # half to even, as ONNX says
    "ArgMax": Op(lambda node, inputs, opset: _arg(node, inputs[0], np.argmax)),
    "ArgMin": Op(lambda node, inputs, opset: _arg(node, inputs[0], np.argmin)),
    "DepthToSpace": Op(lambda node, inputs, opset: _depth_to_space(node, inputs[0]), shown=True, field="resize"),
    "SpaceToDepth": Op(lambda node, inputs, opset: _space_to_depth(node, inputs[0]), shown=True, field="resize"),
    "InstanceNormalization": Op(lambda node, inputs, opset: _instance_norm(node, *inputs[:3]), shown=True,
                                value="normalisation"),
    "GroupNormalization": Op(lambda node, inputs, opset: _group_norm(node, *inputs[:3], opset), shown=True,
                             value="normalisation"),
    # An If runs only as the branch it takes, chosen when the model is read (onnx_file folds it); one whose
    # condition only the image gives is refused there.
    "If": Op(lambda node, inputs, opset: _unfolded_branch(node)),
}
def run_node(node, inputs: list, opset: int) -> list[np.ndarray]:
    """A node's outputs, one array for each (Split makes several)."""
    output = OPS[node.op].run(node, inputs, opset)
    return [np.asarray(o) for o in output] if isinstance(output, tuple) else [np.asarray(output)]


def run_checked(model, node, step: Callable[..., list], *arguments) -> list:
    """``step(*arguments)``, one node's work in a stranger's graph (forward or backward): NaN and overflow are left
    to the statistics, and a node that cannot run as written is bad input, named with its ``model`` file (a
    MemoryError stays one, and cnnx's own errors say what they say)."""
    try:
        with np.errstate(all="ignore"):
            return step(*arguments)
    except (MemoryError, CnnxError):
        raise
    except Exception as error:
        raise CnnxError(f"{getattr(model, 'name', None) or 'the model'}: node {node.name or node.op} ({node.op}) "
                        f"cannot run: {printable(error)}") from None


SUPPORTED = tuple(sorted(OPS))
RUN = {name: op.run for name, op in OPS.items()}  # the runner's view of the table
SHOWN = frozenset(name for name, op in OPS.items() if op.shown)
ACTIVATION_OPS = frozenset(name for name, op in OPS.items() if op.value == "activation")
