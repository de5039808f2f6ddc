"""The reverse pass of each ONNX op cnnx runs: its inputs' gradients from its outputs', with ONNX's attributes read
as the forward op reads them (``onnx_ops``), the arithmetic in ``compute.grad``.

``GRADS[op](node, inputs, outputs, grads, opset)`` gives one gradient per input (None for an input nothing flows
to: weights, shapes, axes).  Ops that only move values (Reshape, Transpose, Slice, Gather, Expand, Pad, ...) share
one rule: the op is run on the positions of its input's values, which says where each output value came from,
and each output's gradient is added back there.  Ops whose values never depend on the image (Shape, Constant,
ConstantOfShape, Range, Equal) pass nothing back.
"""

from __future__ import annotations

import math

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.compute import grad as reverse
from cnnx.compute.ops import conv2d
from cnnx.sources.onnx_ops import (
    OPS,
    SELU,
    along_channels,
    average_pool_counts,
    conv_pads,
    cumulative_sum,
    group_channels,
    group_shape,
    pad_widths,
    pairs,
    per_axis,
    pool_geometry,
    reduce_axes,
    resize_taps,
    run_node,
    text_of,
    transpose_geometry,
)


def _moved(node, inputs, outputs, grads, opset):
    """An op that moves values (none computed): traced on its input's positions, its gradient scattered back."""
    x = np.asarray(inputs[0])
    positions = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    traced = run_node(node, [positions, *inputs[1:]], opset)
    total = np.zeros(x.size, np.float64)
    for where, g in zip(traced, grads, strict=True):
        if g is not None:
            np.add.at(total, where.astype(np.int64).ravel(), np.asarray(g, np.float64).ravel())
    return [total.reshape(x.shape).astype(np.float32)] + [None] * (len(inputs) - 1)


def _conv(node, inputs, outputs, grads, opset):
    x, w = inputs[0], inputs[1]
    attrs = node.attrs
    top, left, bottom, right = conv_pads(attrs, x.shape, w.shape[2:])
    padded = np.broadcast_to(np.float32(0), (*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right))
    grad_x = reverse.conv2d_backward(  # the input's gradient reads its shape alone
        grads[0], padded, w, stride=tuple(pairs(attrs, "strides", 1)),
        dilation=tuple(pairs(attrs, "dilations", 1)), groups=attrs.get("group", 1), need_weight=False)[0]
    return [reverse.fold_padding(grad_x, ((top, bottom), (left, right)))] + [None] * (len(inputs) - 1)


def _conv_transpose(node, inputs, outputs, grads, opset):
    """A transposed convolution's input gradient: the convolution by the same weights over the gradient placed back
    on the uncropped grid."""
    x, w = inputs[0], inputs[1]
    strides, dilations, (top, left, bottom, right), _ = transpose_geometry(node.attrs, x.shape, w.shape)
    g = np.asarray(grads[0], np.float32)
    full = np.zeros((*g.shape[:2], g.shape[2] + top + bottom, g.shape[3] + left + right), np.float32)
    full[:, :, top : top + g.shape[2], left : left + g.shape[3]] = g
    back = conv2d(full, w, stride=tuple(strides), dilation=tuple(dilations), groups=node.attrs.get("group", 1))
    return [back[:, :, : x.shape[2], : x.shape[3]]] + [None] * (len(inputs) - 1)


def _batch_norm(node, inputs, outputs, grads, opset):
    x, scale, _, _, var = inputs[:5]
    factor = (scale / np.sqrt(var + node.attrs.get("epsilon", 1e-5))).astype(np.float32)
    return [grads[0] * along_channels(factor, x.ndim)] + [None] * (len(inputs) - 1)


def _activation(function: str, **read):
    """An elementwise activation's rule, its options read from the node: ``name=(attribute, default)``."""
    def backward(node, inputs, outputs, grads, opset):
        options = {key: node.attrs.get(attribute, default) for key, (attribute, default) in read.items()}
        options = {key: text_of(value, "") if isinstance(value, bytes) else value for key, value in options.items()}
        return [reverse.activation_backward(function, grads[0], inputs[0], outputs[0], **options)] + \
            [None] * (len(inputs) - 1)
    return backward


def _clip(node, inputs, outputs, grads, opset):
    if opset >= 11:
        low = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else -np.inf
        high = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else np.inf
    else:
        low, high = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
    return [reverse.activation_backward("clip", grads[0], inputs[0], low=low, high=high)] + [None] * (len(inputs) - 1)


def _prelu(node, inputs, outputs, grads, opset):
    x, slope = inputs
    return [np.where(x > 0, grads[0], grads[0] * slope).astype(np.float32), None]


def _elementwise(partials):
    """A broadcasting op of two or more operands: each operand's gradient is ``partials(k, inputs, output)`` times
    the output's, summed back to the operand's shape."""
    def backward(node, inputs, outputs, grads, opset):
        return [reverse.unbroadcast(grads[0] * partials(k, inputs, outputs[0]), np.shape(x))
                for k, x in enumerate(inputs)]
    return backward


def _max_pool(node, inputs, outputs, grads, opset):
    x = inputs[0]
    kernel, strides, dilations, (top, left, bottom, right) = pool_geometry(node.attrs, x.shape)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    grad = reverse.max_windows_backward(grads[0], padded, kernel, strides, dilations)
    return [reverse.fold_padding(grad, ((top, bottom), (left, right)))]


def _average_pool(node, inputs, outputs, grads, opset):
    x = inputs[0]
    if x.ndim != 4:
        raise CnnxError(f"node {node.name or node.op}: the reverse pass goes through average pools over two axes")
    kernel, strides, dilations, (top, left, bottom, right) = pool_geometry(node.attrs, x.shape)
    share = grads[0] / average_pool_counts(node, x.shape)
    shape = (*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right)
    if list(x.shape[-2:]) == kernel and not (top or left or bottom or right):  # one window: the map's mean
        shape = x.shape
    grad = reverse.spread_windows(share.astype(np.float32), shape, kernel, strides, dilations)
    return [reverse.fold_padding(grad, ((top, bottom), (left, right)))]


def _reduced(node, inputs, outputs, grads, opset, axes):
    """The output's gradient with the reduced axes put back (size 1), for broadcasting over the input."""
    g = grads[0]
    if not node.attrs.get("keepdims", 1):
        for axis in sorted(a % inputs[0].ndim for a in axes):
            g = np.expand_dims(g, axis)
    return g


def _reduce_axes(node, inputs, opset):
    return list(reduce_axes(node, inputs, opset, inputs[0].ndim))


def _reduction(partial):
    """A Reduce op whose gradient is the output's, spread over each reduced group, times ``partial(x, y, axes)`` (y
    the output with its reduced axes kept)."""
    def backward(node, inputs, outputs, grads, opset):
        axes = _reduce_axes(node, inputs, opset)
        x = inputs[0]  # its shape alone, for ReduceMean and ReduceSum (their values may have been let go)
        g = _reduced(node, inputs, outputs, grads, opset, axes)
        y = _reduced(node, inputs, outputs, outputs, opset, axes)
        return [np.broadcast_to(g * partial(x, y, axes), x.shape).astype(np.float32)] + [None] * (len(inputs) - 1)
    return backward


def _others_product(x, y, axes):
    """The product of the other values of each reduced group, zeros and all: the products before and after each
    value, in the group's order."""
    ends = list(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(np.asarray(x, np.float64), axes, ends)
    flat = moved.reshape(*moved.shape[: x.ndim - len(axes)], -1)
    ones = np.ones((*flat.shape[:-1], 1))
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.flip(np.cumprod(np.concatenate([ones, np.flip(flat, -1)[..., :-1]], axis=-1), axis=-1), -1)
    return np.moveaxis((before * after).reshape(moved.shape), ends, axes)


def _reduce_extreme(node, inputs, outputs, grads, opset, axes=None, pick=np.argmax):
    """Each reduction's gradient to the first of its largest (``pick``: smallest) values."""
    x = inputs[0]
    axes = sorted(a % x.ndim for a in (axes if axes is not None else _reduce_axes(node, inputs, opset)))
    g = _reduced(node, inputs, outputs, grads, opset, axes)
    ends = list(range(x.ndim - len(axes), x.ndim))
    moved = np.moveaxis(x, axes, ends)
    lead = moved.shape[: x.ndim - len(axes)]
    flat = moved.reshape(*lead, -1)
    first = np.zeros(flat.shape, np.float32)
    np.put_along_axis(first, pick(flat, axis=-1)[..., None], np.moveaxis(g, axes, ends).reshape(*lead, 1), axis=-1)
    return [np.moveaxis(first.reshape(moved.shape), ends, axes)] + [None] * (len(inputs) - 1)


def _gemm(node, inputs, outputs, grads, opset):
    attrs = node.attrs
    a, b = inputs[0], inputs[1]
    alpha, g = attrs.get("alpha", 1.0), grads[0]
    a_used = a.T if attrs.get("transA", 0) else a
    b_used = b.T if attrs.get("transB", 0) else b
    grad_a = alpha * (g @ b_used.T)
    grad_b = alpha * (a_used.T @ g)
    result = [grad_a.T if attrs.get("transA", 0) else grad_a, grad_b.T if attrs.get("transB", 0) else grad_b]
    if len(inputs) > 2:
        result.append(reverse.unbroadcast(attrs.get("beta", 1.0) * g, np.shape(inputs[2])))
    return [np.asarray(r, np.float32) for r in result]


def _matmul(node, inputs, outputs, grads, opset):
    a, b, g = inputs[0], inputs[1], grads[0]
    grad_a = np.matmul(g, np.swapaxes(b, -1, -2))
    if b.ndim == 2:
        grad_b = a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])
    else:
        grad_b = reverse.unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape)
    return [reverse.unbroadcast(grad_a, a.shape), np.asarray(grad_b, np.float32)]


def _softmax_family(backward):
    """Softmax's and LogSoftmax's reverse step (``backward(g, y, axis)``), their axis read as the forward op reads it
    (flattened to 2-D from ``axis`` on before opset 13)."""
    def step(node, inputs, outputs, grads, opset):
        x = inputs[0]
        axis = node.attrs.get("axis", -1 if opset >= 13 else 1)
        if opset < 13:
            flat = (math.prod(x.shape[:axis]), -1)
            return [backward(grads[0].reshape(flat), outputs[0].reshape(flat), axis=-1).reshape(x.shape)]
        return [backward(grads[0], outputs[0], axis=axis)]
    return step


def _extreme(node, inputs, outputs, grads, opset):
    """Max and Min: each operand's gradient where it is the output, shared among the operands that tie there (as
    torch shares it)."""
    held = [np.broadcast_to(x, outputs[0].shape) == outputs[0] for x in inputs]
    ties = np.maximum(sum(h.astype(np.float32) for h in held), 1)
    return [reverse.unbroadcast(np.where(h, grads[0] / ties, np.float32(0)), np.shape(x))
            for h, x in zip(held, inputs, strict=True)]


def _exponential_linear(alpha: float, gamma: float = 1.0, celu: bool = False):
    """ELU, SELU and CELU: ``gamma`` above zero, ``gamma * alpha * exp(x / inner) / inner`` below (``inner`` alpha for
    CELU, else 1), their attributes read from the node."""
    def partial(node, x):
        a, g = node.attrs.get("alpha", alpha), node.attrs.get("gamma", gamma)
        inner = a if celu else 1.0
        below = g * a / inner * np.exp(np.minimum(x.astype(np.float64), 0) / inner)
        return np.where(x > 0, g, below)
    return _unary(partial)


def _unary(partial):
    """An elementwise op of one input whose derivative ``partial(node, x)`` reads its attributes."""
    def backward(node, inputs, outputs, grads, opset):
        return [(grads[0] * partial(node, inputs[0])).astype(np.float32)] + [None] * (len(inputs) - 1)
    return backward


def _sigmoid64(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _mish_partial(node, x):
    x = np.asarray(x, np.float64)
    t = np.tanh(np.logaddexp(0, x))
    return t + x * (1 - t * t) * _sigmoid64(x)


def _resize(node, inputs, outputs, grads, opset):
    """Resize's transpose: each output's gradient back to the taps it summed, by their weights (the last axis
    resized first)."""
    g = np.asarray(grads[0], np.float32)
    for axis, positions, weights in reversed(resize_taps(node, inputs, opset, inputs[0].shape)):
        spread = np.zeros((positions.shape[0], inputs[0].shape[axis]))
        np.add.at(spread, (np.arange(positions.shape[0])[:, None], positions), weights)
        g = np.moveaxis(np.moveaxis(g, axis, -1) @ spread.astype(np.float32), -1, axis)
    return [g] + [None] * (len(inputs) - 1)


def _quantize(node, inputs, outputs, grads, opset):
    """QuantizeLinear's step, straight through (as PyTorch's fake quantisation and quantisation-aware training take
    it): the output's gradient over the scale where the value lay within the integer range, none where it was
    clipped. (Its true derivative, a staircase's, is zero almost everywhere.)"""
    x, y = np.asarray(inputs[0], np.float32), outputs[0]
    kind = np.iinfo(y.dtype)
    scale = per_axis(node, inputs[1], x).astype(np.float32)
    inside = (y > kind.min) & (y < kind.max)
    return [np.where(inside, np.asarray(grads[0], np.float32) / scale, np.float32(0))] + [None] * (len(inputs) - 1)


def _dequantize(node, inputs, outputs, grads, opset):
    """DequantizeLinear's step: the output's gradient times the scale."""
    scale = per_axis(node, inputs[1], np.asarray(inputs[0])).astype(np.float32)
    return [np.asarray(grads[0], np.float32) * scale] + [None] * (len(inputs) - 1)


def _top_k(node, inputs, outputs, grads, opset):
    """TopK's step: each chosen value's gradient back to where it was taken from (the indices, found again, pass
    nothing)."""
    x = inputs[0]
    back = np.zeros(x.shape, np.float32)
    chosen = run_node(node, inputs, opset)[1]
    np.put_along_axis(back, chosen, np.asarray(grads[0], np.float32), axis=node.attrs.get("axis", -1) % x.ndim)
    return [back] + [None] * (len(inputs) - 1)


def _concat(node, inputs, outputs, grads, opset):
    axis = node.attrs["axis"] % inputs[0].ndim
    bounds = np.cumsum([0, *(x.shape[axis] for x in inputs)])
    return [np.take(grads[0], range(a, b), axis=axis) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _split(node, inputs, outputs, grads, opset):
    axis = node.attrs.get("axis", 0)
    parts = [g if g is not None else np.zeros_like(o) for g, o in zip(grads, outputs, strict=True)]
    return [np.concatenate(parts, axis=axis).astype(np.float32)] + [None] * (len(inputs) - 1)


def _lrn(node, inputs, outputs, grads, opset):
    """y = x * s^-beta, s = bias + alpha / size * (the sum of x^2 over ``size`` neighbouring channels)."""
    x = np.asarray(inputs[0], np.float64)
    g = np.asarray(grads[0], np.float64)
    attrs = node.attrs
    size, alpha, beta, bias = attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    s = bias + alpha / size * _channel_window_sums(x * x, (size - 1) // 2, size // 2)
    # Channel k's square is in the sums of the channels whose window reaches it: the window turned round.
    t = g * x * s ** (-beta - 1)
    back = g * s**-beta - 2 * alpha * beta / size * x * _channel_window_sums(t, size // 2, (size - 1) // 2)
    return [back.astype(np.float32)]


def _channel_window_sums(values: np.ndarray, before: int, after: int) -> np.ndarray:
    padded = np.pad(values, ((0, 0), (before, after), (0, 0), (0, 0)))
    running = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0), (0, 0))), axis=1)
    return running[:, before + after + 1 :] - running[:, : -(before + after + 1)]


def _normalised_back(x, g, axes, epsilon: float) -> np.ndarray:
    """The gradient of ``onnx_ops.normalised(x, axes, epsilon)`` given ``g``, its output's (in float64)."""
    x = np.asarray(x, np.float64)
    spread = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    normed = (x - x.mean(axis=axes, keepdims=True)) * spread
    return spread * (g - g.mean(axis=axes, keepdims=True) - normed * (g * normed).mean(axis=axes, keepdims=True))


def _layer_norm(node, inputs, outputs, grads, opset):
    x = inputs[0]
    axes = tuple(range(node.attrs.get("axis", -1) % x.ndim, x.ndim))
    g = np.asarray(grads[0], np.float64) * inputs[1]
    back = _normalised_back(x, g, axes, node.attrs.get("epsilon", 1e-5))
    return [back.astype(np.float32)] + [None] * (len(inputs) - 1)


def _instance_norm(node, inputs, outputs, grads, opset):
    x, scale = inputs[0], inputs[1]
    g = np.asarray(grads[0], np.float64) * along_channels(scale, x.ndim)
    back = _normalised_back(x, g, tuple(range(2, x.ndim)), node.attrs.get("epsilon", 1e-5))
    return [back.astype(np.float32)] + [None] * (len(inputs) - 1)


def _group_norm(node, inputs, outputs, grads, opset):
    x = inputs[0]
    g = np.asarray(grads[0], np.float64) * along_channels(group_channels(node, inputs[1], x.shape[1], opset), x.ndim)
    grouped = group_shape(node, x.shape)
    back = _normalised_back(x.reshape(grouped), g.reshape(grouped), 2, node.attrs.get("epsilon", 1e-5))
    return [back.reshape(x.shape).astype(np.float32)] + [None] * (len(inputs) - 1)


def _global_mean(node, inputs, outputs, grads, opset):
    x = inputs[0]
    return [np.broadcast_to(grads[0] / np.float32(x.shape[2] * x.shape[3]), x.shape).astype(np.float32)]


def _nothing(node, inputs, outputs, grads, opset):
    return [None] * len(inputs)


def _pad(node, inputs, outputs, grads, opset):
    """A constant Pad's step: the output's gradient where the input's kept values lie (none to those cut off); the
    other modes read the border again, traced as the ops that move values are."""
    if text_of(node.attrs.get("mode"), "constant") != "constant":
        return _moved(node, inputs, outputs, grads, opset)
    x = inputs[0]
    kept = [(max(0, -a), size - max(0, -b), max(0, a)) for (a, b), size in zip(pad_widths(node, inputs, opset),
                                                                                 x.shape, strict=True)]
    back = np.zeros(x.shape, np.float32)
    back[tuple(slice(first, stop) for first, stop, _ in kept)] = \
        grads[0][tuple(slice(at, at + stop - first) for first, stop, at in kept)]
    return [back] + [None] * (len(inputs) - 1)


GRADS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "Relu": lambda node, inputs, outputs, grads, opset: [np.where(outputs[0] > 0, grads[0], np.float32(0))],
    "LeakyRelu": _activation("leaky_relu", slope=("alpha", 0.01)),
    "PRelu": _prelu,
    "Clip": _clip,
    "Sigmoid": _activation("sigmoid"),
    "HardSigmoid": _activation("hard_sigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _activation("hard_swish"),
    "Tanh": _activation("tanh"),
    "Abs": _activation("abs"),
    "Gelu": _activation("gelu", approximate=("approximate", "none")),
    "Exp": _activation("exp"),
    "Elu": _exponential_linear(1.0),
    "Selu": _exponential_linear(*SELU),
    "Celu": _exponential_linear(1.0, celu=True),
    "Softplus": _unary(lambda node, x: _sigmoid64(x)),
    "Softsign": _unary(lambda node, x: 1 / np.square(1 + np.abs(np.asarray(x, np.float64)))),
    "Mish": _unary(_mish_partial),
    "ThresholdedRelu": _unary(lambda node, x: (x > node.attrs.get("alpha", 1.0)).astype(np.float32)),
    "Mean": _elementwise(lambda k, x, y: 1 / len(x)),
    "Shrink": _unary(lambda node, x: (np.abs(x) > node.attrs.get("lambd", 0.5)).astype(np.float32)),
    "TopK": _top_k,
    "CumSum": lambda node, inputs, outputs, grads, opset: [cumulative_sum(  # its transpose: summed the other way
        np.asarray(grads[0], np.float32), int(inputs[1]) % np.ndim(inputs[0]), bool(node.attrs.get("exclusive", 0)),
        not node.attrs.get("reverse", 0)), None],
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Max": _extreme,
    "Min": _extreme,
    "LogSoftmax": _softmax_family(reverse.log_softmax_backward),
    "Add": _elementwise(lambda k, x, y: 1.0),
    "Sum": _elementwise(lambda k, x, y: 1.0),
    "Sub": _elementwise(lambda k, x, y: 1.0 if k == 0 else -1.0),
    "Mul": _elementwise(lambda k, x, y: x[1 - k]),
    "Div": _elementwise(lambda k, x, y: 1 / x[1] if k == 0 else -y / x[1]),
    "Pow": _elementwise(lambda k, x, y: x[1] * np.power(x[0], x[1] - 1) if k == 0 else 0.0),  # exponents are fixed
    "Neg": _elementwise(lambda k, x, y: -1.0),
    "Sqrt": _elementwise(lambda k, x, y: 0.5 / y),
    "Erf": _elementwise(lambda k, x, y: 2 / math.sqrt(math.pi) * np.exp(-np.square(x[0]))),
    "Where": lambda node, inputs, outputs, grads, opset: [
        None, reverse.unbroadcast(np.where(inputs[0], grads[0], 0), np.shape(inputs[1])),
        reverse.unbroadcast(np.where(inputs[0], 0, grads[0]), np.shape(inputs[2]))],
    "Cast": lambda node, inputs, outputs, grads, opset: [np.asarray(grads[0], np.float32)],
    "Concat": _concat,
    "Split": _split,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_mean,
    "GlobalMaxPool": lambda node, inputs, outputs, grads, opset: _reduce_extreme(node, inputs, outputs, grads, opset,
                                                                                 axes=[2, 3]),
    "ReduceMean": _reduction(lambda x, y, axes: 1 / math.prod(x.shape[a] for a in axes)),
    "ReduceMax": _reduce_extreme,
    "ReduceMin": lambda node, inputs, outputs, grads, opset: _reduce_extreme(node, inputs, outputs, grads, opset,
                                                                           pick=np.argmin),
    "ReduceSum": _reduction(lambda x, y, axes: 1.0),
    "ReduceProd": _reduction(lambda x, y, axes: _others_product(x, y, axes)),
    "ReduceL1": _reduction(lambda x, y, axes: np.sign(x)),
    "ReduceL2": _reduction(lambda x, y, axes: np.divide(x, y, out=np.zeros_like(x), where=y != 0)),
    "ReduceSumSquare": _reduction(lambda x, y, axes: 2 * x),
    "ReduceLogSumExp": _reduction(lambda x, y, axes: np.exp(x - y)),
    "InstanceNormalization": _instance_norm,
    "GroupNormalization": _group_norm,
    "Log": _elementwise(lambda k, x, y: 1 / x[0]),
    "Reciprocal": _elementwise(lambda k, x, y: -np.square(y)),
    **{op: _elementwise(lambda k, x, y: 0.0) for op in ("Sign", "Floor", "Ceil", "Round")},
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Softmax": _softmax_family(reverse.softmax_backward),
    "LRN": _lrn,
    "Resize": _resize,
    "Upsample": _resize,
    "LayerNormalization": _layer_norm,
    "Pad": _pad,
    **{op: _moved for op in ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Expand",
                             "Identity", "Dropout", "DepthToSpace", "SpaceToDepth", "Tile", "GatherND")},
    **{op: _nothing for op in ("Shape", "Constant", "ConstantOfShape", "Range", "Equal", "Greater", "Less",
                               "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "If", "ArgMax",
                               "ArgMin", "Size")},
}

assert set(GRADS) == set(OPS), set(OPS) ^ set(GRADS)  # every op cnnx runs goes backwards too

# Ops whose reverse pass reads no value of their inputs or outputs, only shapes (and constants): the values they
# take need not be kept for the reverse pass on their account.
SHAPES_ONLY = frozenset({
    "Conv", "ConvTranspose", "BatchNormalization", "Add", "Sum", "Sub", "Neg", "Cast", "Concat", "Split",
    "AveragePool",
    "GlobalAveragePool", "ReduceMean", "Pad", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice",
    "Gather", "Expand", "Identity", "Dropout", "Shape", "Constant", "ConstantOfShape", "Range", "Equal", "If",
    "Resize", "Upsample", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "ArgMax", "ArgMin",
    "DepthToSpace", "SpaceToDepth", "ReduceSum", "Sign", "Floor", "Ceil", "Round", "Tile", "Size", "Mean",
    "DequantizeLinear", "And", "Or", "Xor", "GatherND", "CumSum",
})
# Of those, the ones whose every input is a map of the same kind (a sum's terms, a concatenation's parts): none of
# their values is read; the others read their inputs after the first (a Reshape's shape, a Slice's ends, axes).
ADDED = frozenset({"Add", "Sum", "Sub", "Mean", "Concat", "Conv", "BatchNormalization"})
# Ops whose reverse pass reads their own output: those that read it alone, then those that read their inputs too.
OUTPUT_ONLY = frozenset({"Relu", "Sigmoid", "Tanh", "Exp", "Softmax", "LogSoftmax", "Sqrt"})
READS_OUTPUT = OUTPUT_ONLY | {"Div", "Max", "Min", "ReduceL2", "ReduceLogSumExp", "Reciprocal", "QuantizeLinear"}
