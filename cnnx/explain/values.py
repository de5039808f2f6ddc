"""Any value of any stage of any source, worked out from what made it and checked against it: a chain's stage from
the stage before, an ONNX network's layer from the network's input."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.explain.checks import agree, as_float32_does
from cnnx.sources.source import StageSource


@dataclass
class ChannelSum:
    """One input channel's part of a convolution's output value: the window, the kernel, the products, their sum."""

    channel: int
    total: float
    values: list[list[float]] | None = None  # kept for the channels that weigh most
    weights: list[list[float]] | None = None
    products: list[list[float]] | None = None


@dataclass
class LayerExplanation:
    """One output value of a real convolution layer: every input channel's sum, the bias, and the map's value."""

    model: str
    layer: str
    channel: int
    row: int
    col: int
    kernel: list[int]
    stride: list[int]
    dilation: list[int]
    parts: list[ChannelSum]
    bias: float
    total: float
    map_value: float
    map_shape: list[int]


@as_float32_does
def explain_layer(graph, image: np.ndarray, layer: str, channel: int, row: int, col: int, shown: int = 3):
    """The arithmetic of output (channel, row, col) of a Conv node, summed over every input channel, plus bias.

    ``image`` is the model's prepared input (C, H, W); batch normalisations are already folded into the
    weights, as the model runs.  The ``shown`` channels that weigh most keep their windows and products.
    """
    node, inputs, output = graph.run_to(image, layer)
    if node.op != "Conv" or node.inputs[1] not in graph.constants:
        raise CnnxError(f"node {layer!r} is a {node.op}; explain conv takes a Conv node with weights of its own")
    x, weights = np.asarray(inputs[0], np.float64)[0], np.asarray(inputs[1], np.float64)
    bias = float(inputs[2][channel]) if len(inputs) > 2 and inputs[2] is not None else 0.0
    O, per_group, kh, kw = weights.shape
    _, H_out, W_out = output.shape[1:]
    if not (0 <= channel < O and 0 <= row < H_out and 0 <= col < W_out):
        raise CnnxError(f"{layer} has {O} maps of {H_out}x{W_out}: channel 0..{O - 1}, --at ROW,COL within "
                        f"0..{H_out - 1}, 0..{W_out - 1}; got channel {channel} at {row},{col}")
    geometry = graph.conv_geometry(node, inputs[0].shape)
    (s0, s1), (d0, d1), (top, left) = geometry["strides"], geometry["dilations"], geometry["pads"][:2]
    first = (channel // (O // geometry["group"])) * per_group
    rows = [row * s0 - top + i * d0 for i in range(kh)]
    cols = [col * s1 - left + j * d1 for j in range(kw)]
    parts = []
    for c in range(per_group):
        window = np.array([[x[first + c, r, q] if 0 <= r < x.shape[1] and 0 <= q < x.shape[2] else 0.0 for q in cols]
                           for r in rows])
        products = window * weights[channel, c]
        parts.append(ChannelSum(first + c, float(products.sum()), window.tolist(), weights[channel, c].tolist(),
                                products.tolist()))
    kept = sorted(parts, key=lambda p: -abs(p.total))[:shown]
    for part in parts:
        if part not in kept:
            part.values = part.weights = part.products = None
    total = sum(p.total for p in parts) + bias
    value = float(output[0, channel, row, col])
    agree(np.array([value]), np.array([total]), "channel sums and bias", "the layer")
    return LayerExplanation(graph.path.name, layer, channel, row, col, [kh, kw], [s0, s1], [d0, d1], parts, bias,
                            total, value, [O, H_out, W_out])


@dataclass
class ValueExplanation:
    """How one value of a stage came from the stage before: the rule, the numbers it used, and the value."""

    stage: int
    op: str
    channel: int
    row: int
    col: int
    rule: str
    parts: list[ChannelSum] = field(default_factory=list)  # a convolution's input channels, or a pool's window
    inputs: list[float] = field(default_factory=list)  # an activation's input, a dense layer's top contributions
    names: list[str] = field(default_factory=list)
    bias: float = 0.0
    total: float = 0.0
    value: float = 0.0


def _read_window(plane: np.ndarray, rows: list[int], cols: list[int], mode: str) -> np.ndarray:
    """The input values at padded coordinates, read through the border as ``padding_mode`` says (0 outside)."""
    from cnnx.compute.engine import border_map

    r = border_map(np.array(rows), plane.shape[0], mode)
    c = border_map(np.array(cols), plane.shape[1], mode)
    window = plane[np.clip(r, 0, None)][:, np.clip(c, 0, None)].astype(np.float64)
    window[r < 0, :] = 0.0
    window[:, c < 0] = 0.0
    return window


@as_float32_does
def explain_value(
    stage, before: np.ndarray, after: np.ndarray, index: int, channel: int, row: int, col: int, *, flip: bool = False
):
    """One value of a chain stage (``stages`` kinds), worked out from the stage before, and checked against it.

    ``before`` and ``after`` are the two stages' arrays (C, H, W); convolutions by named kernels or weight
    files, activations, pooling, dense layers and softmax are worked out; for others (random filters) the rule
    is said and the value given.
    """
    from cnnx.sources.kernels import RandomBank

    value = float(after[channel, row, col])
    explained = ValueExplanation(index, stage.name, channel, row, col, "", value=value)
    if stage.name in ("relu", "leaky_relu", "sigmoid", "tanh", "abs"):
        x = float(before[channel, row, col])
        explained.rule = {"relu": "max(0, x)", "leaky_relu": f"x if x > 0 else {stage.slope:g} x",
                          "sigmoid": "1 / (1 + exp(-x))", "tanh": "tanh(x)", "abs": "|x|"}[stage.name]
        explained.inputs, explained.total = [x], float(stage.apply(np.array([[[x]]], np.float32))[0, 0, 0])
    elif stage.name in ("maxpool", "avgpool"):
        rows = [row * stage.step - stage.padding + i for i in range(stage.size)]
        cols = [col * stage.step - stage.padding + j for j in range(stage.size)]
        plane = np.asarray(before[channel], np.float64)
        inside = np.array([[0 <= r < plane.shape[0] and 0 <= q < plane.shape[1] for q in cols] for r in rows])
        window = _read_window(plane, rows, cols, "zeros")
        if stage.kind == "max":
            window[~inside] = -np.inf
            explained.rule, explained.total = "the largest value of the window", float(window.max())
        else:
            explained.rule = f"the mean of the {stage.size}x{stage.size} window (padding counts as 0)"
            explained.total = float(window.mean())
        explained.parts = [ChannelSum(channel, explained.total, np.where(inside, window, np.nan).tolist())]
    elif stage.name == "conv" and not any(isinstance(s, RandomBank) for s in stage.sources):
        _conv_parts(stage, before, explained, flip)
    elif stage.name == "dense":
        x = before.reshape(-1).astype(np.float64)
        weights = stage.source.weights.astype(np.float64)
        products = weights[col] * x
        top = np.argsort(-np.abs(products))[:8]
        explained.rule = f"the sum of all {x.size} inputs times their weights, plus the bias (the largest 8 shown)"
        explained.inputs, explained.names = products[top].tolist(), [f"input {k}" for k in top]
        explained.bias = float(stage.source.bias[col]) if stage.source.bias is not None else 0.0
        explained.total = float(products.sum()) + explained.bias
    elif stage.name == "softmax":
        scores = before.reshape(-1).astype(np.float64)
        explained.rule = "exp(score) / the sum of exp(every score)"
        explained.inputs = [float(scores[col])]
        explained.total = float(np.exp(scores[col] - scores.max()) / np.exp(scores - scores.max()).sum())
    else:
        explained.rule = f"{stage.name}: the value as computed (its arithmetic is not shown for this stage)"
        explained.total = value
    # A sum past float32's range is what the stage holds as inf: the float64 arithmetic shown, rounded to float32.
    held = float(np.float32(explained.total)) if not np.isfinite(value) else explained.total
    if held != value and not np.isclose(held, value, rtol=1e-4, atol=1e-5 * max(1, abs(value)), equal_nan=True):
        raise RuntimeError(f"the arithmetic shown gives {explained.total}, the stage holds {value}")
    return explained


def _conv_parts(stage, before: np.ndarray, explained: ValueExplanation, flip: bool) -> None:
    """The input channels' windows, weights and products behind one output of a conv stage (no random filters)."""
    from cnnx.sources.kernels import WeightBank

    C = before.shape[0]
    at, channel = 0, explained.channel
    for source in stage.sources:
        count = stage.outputs_of(source, C)
        if channel < at + count:
            break
        at += count
    k = channel - at
    inputs, scale, bias = list(range(C)), 1.0, 0.0
    if isinstance(source, WeightBank):  # a filter over every channel, from a file
        weights = source.weights[k]
        bias = source.bias[k] if source.bias is not None else 0.0
    elif stage.combine == "depthwise":  # channel-major: each input channel with each kernel
        kernels = list(source)
        weights, inputs = kernels[k % len(kernels)].weights[None], [k // len(kernels)]
    else:  # one kernel on the channels' mean
        weights, scale = np.broadcast_to(source[k].weights, (C, *source[k].weights.shape)), 1.0 / C
    if flip:
        weights = weights[..., ::-1, ::-1]
    kh, kw = weights.shape[-2:]
    (top, _), (left, _) = ops.conv_padding(stage.padding, (kh, kw), (stage.dilation,) * 2, (stage.stride,) * 2)
    rows = [explained.row * stage.stride - top + i * stage.dilation for i in range(kh)]
    cols = [explained.col * stage.stride - left + j * stage.dilation for j in range(kw)]
    for position, c in enumerate(inputs):
        window = _read_window(np.asarray(before[c]), rows, cols, stage.padding_mode)
        kernel = np.asarray(weights[position], np.float64) * scale
        products = window * kernel
        part = ChannelSum(c, float(products.sum()), window.tolist(), kernel.tolist(), products.tolist())
        explained.parts.append(part)
    explained.bias = float(bias) + float(stage.bias)
    explained.total = sum(p.total for p in explained.parts) + explained.bias
    what = "the mean over the input channels of" if scale != 1 else "the sum over the input channels of"
    explained.rule = f"{what} the window under the kernel times its weights, plus the bias"


# An ONNX activation's rule, from its input x and the node's attributes and constant inputs at the value's place.
@as_float32_does
def explain_node(graph, image: np.ndarray, layer: str, index: int, channel: int, row: int, col: int):
    """One value of any written node of an ONNX graph, worked out from the node's inputs and checked against it.

    (channel, row, col) is the place in the stage as written (a row of values is (0, 0, k)).  A Conv's sum
    over its input channels is ``explain_layer``'s; activations (GELU too), sums and products, pools, global pools,
    concatenations, fully connected layers (a Linear on channels-last maps too), softmax, flattening, layer
    normalisation and LRN are shown here; any other op says so.
    """
    from cnnx.sources.graph import stage_shape

    node, inputs, output = graph.run_to(image, layer)
    place = np.unravel_index(np.ravel_multi_index((channel, row, col), stage_shape(output.shape)), output.shape)
    value = float(output[place])
    explained = ValueExplanation(index, node.op, channel, row, col, "", value=value)
    at = _NodeValue(node, inputs, output, place, node.attrs, graph.opset)
    _node_rule(at)(explained, at)
    agree(np.array([value]), np.array([explained.total]), "arithmetic", f"node {layer}")
    return explained


@dataclass
class _NodeValue:
    """A node, its inputs and output, and the place of the value explained, with the node's attributes."""

    node: object
    inputs: list
    output: np.ndarray
    place: tuple
    attrs: dict
    opset: int

    def of(self, array) -> float:
        """An input's value at the value's place, broadcast as the op broadcasts it."""
        return float(np.broadcast_to(array, self.output.shape)[self.place])


def _node_rule(at: _NodeValue):
    """How a value of this node is worked out: as the op table says its values are (``Op.value``), where the
    output's shape is one that rule reads."""
    from cnnx.sources.onnx_ops import OPS

    op, ndim = at.node.op, at.output.ndim
    kind = OPS[op].value
    if kind == "pool":
        if ndim != 4:
            return _value_as_computed
        return lambda explained, at: _pool_window(explained, at.inputs[0], at.place, at.attrs, op == "MaxPool")
    shown_here = {  # the shapes each rule reads; the rest are shown as computed
        "global": lambda: op.startswith("Global") or _over_space(at.attrs, at.inputs),
        "dense": lambda: ndim == 2 or (op == "MatMul" and np.ndim(at.inputs[1]) == 2),
        "softmax": lambda: ndim == 2 and at.attrs.get("axis", -1) in (-1, 1),
        "lrn": lambda: ndim == 4,
        "resize": lambda: ndim == 4,
    }
    if kind not in _NODE_RULES or not shown_here.get(kind, lambda: True)():
        return _value_as_computed
    return _NODE_RULES[kind]


def _activation_value(explained: ValueExplanation, at: _NodeValue) -> None:
    op, inputs, attrs = at.node.op, at.inputs, at.attrs
    extra = [at.of(inputs[1])] if op == "PRelu" else []
    if op == "Clip":
        given = [v if v is None else float(np.asarray(v)) for v in (inputs + [None, None])[1:3]]
        bounds = given if at.opset >= 11 else [attrs.get("min"), attrs.get("max")]
        extra = [-np.inf if bounds[0] is None else bounds[0], np.inf if bounds[1] is None else bounds[1]]
    x = at.of(inputs[0])
    explained.rule, explained.total = _op_rule(op)(x, attrs, extra)
    explained.inputs, explained.names = [x], ["x ="]


def _joined_value(explained: ValueExplanation, at: _NodeValue) -> None:
    symbol, combine = _op_rule(at.node.op)
    values = [at.of(i) for i in at.inputs]
    explained.rule = symbol.join(f"[{name}]" for name in at.node.inputs)
    explained.inputs, explained.names = values, [f"{name} =" for name in at.node.inputs]
    explained.total = float(combine.reduce(np.array(values, np.float64)))


def _global_value(explained: ValueExplanation, at: _NodeValue) -> None:
    plane = np.asarray(at.inputs[0][0, at.place[1]], np.float64)
    largest = "Max" in at.node.op
    explained.rule = f"the {'largest' if largest else 'mean'} of the {plane.shape[0]}x{plane.shape[1]} values " \
                     f"of input channel {at.place[1]}"
    explained.total = float(plane.max() if largest else plane.mean())
    explained.parts = [ChannelSum(int(at.place[1]), explained.total, plane.tolist() if plane.size <= 256 else None)]


def _concatenated_value(explained: ValueExplanation, at: _NodeValue) -> None:
    axis = at.attrs["axis"] % at.output.ndim
    offset = int(at.place[axis])
    which = 0
    while offset >= at.inputs[which].shape[axis]:
        offset, which = offset - at.inputs[which].shape[axis], which + 1
    source = list(at.place)
    source[axis] = offset
    part = "channel" if axis == 1 else "place"
    explained.rule = (f"copied from the concatenation's input {which + 1} of {len(at.inputs)} (the value named "
                      f"{at.node.inputs[which]}), its {part} {offset}")
    explained.total = float(at.inputs[which][tuple(source)])


def _dense_value(explained: ValueExplanation, at: _NodeValue) -> None:
    inputs, attrs, place = at.inputs, at.attrs, at.place
    a, b = np.asarray(inputs[0], np.float64), np.asarray(inputs[1], np.float64)
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    products = attrs.get("alpha", 1.0) * a[tuple(place[:-1])] * b[:, place[-1]]  # its row (any stack) by a column
    top = np.argsort(-np.abs(products))[:8]
    explained.rule = f"the sum of all {products.size} inputs times their weights, plus the bias (the largest " \
                     f"{len(top)} shown)"
    explained.inputs, explained.names = products[top].tolist(), [f"input {k}:" for k in top]
    has_bias = at.node.op == "Gemm" and len(inputs) > 2 and inputs[2] is not None
    explained.bias = attrs.get("beta", 1.0) * at.of(inputs[2]) if has_bias else 0.0
    explained.total = float(products.sum()) + explained.bias


def _resized_value(explained: ValueExplanation, at: _NodeValue) -> None:
    """A Resize's (or Upsample's) value: the input's values around where it lands, each times the product of its
    row's and its column's interpolation weights (positions past the border read the border's)."""
    from cnnx.sources.onnx_ops import resize_taps, text_of

    x, (n, c, i, j) = at.inputs[0], at.place
    taps = {axis: (positions, weights) for axis, positions, weights in resize_taps(at.node, at.inputs, at.opset,
                                                                                   x.shape)}
    weights: dict[tuple[int, int], float] = {}
    for r, wr in zip(taps[2][0][i], taps[2][1][i], strict=True):
        for q, wq in zip(taps[3][0][j], taps[3][1][j], strict=True):
            weights[int(r), int(q)] = weights.get((int(r), int(q)), 0.0) + float(wr) * float(wq)
    used = {place: w for place, w in weights.items() if w != 0} or weights
    mode = text_of(at.attrs.get("mode"), "nearest")
    explained.rule = (f"{mode} resampling: the input's values around where this one lands, each times its weight "
                      f"({len(used)} of them)")
    explained.inputs = [float(x[n, c, r, q]) for r, q in used]
    explained.names = [f"row {r}, column {q} (weight {w:.4g}):" for (r, q), w in used.items()]
    explained.total = sum(w * float(x[n, c, r, q]) for (r, q), w in used.items())


def _softmax_value(explained: ValueExplanation, at: _NodeValue) -> None:
    scores = np.asarray(at.inputs[0][at.place[0]], np.float64)
    explained.rule = "exp(score) / the sum of exp(every score)"
    explained.inputs, explained.names = [float(scores[at.place[1]])], ["score ="]
    explained.total = float(np.exp(scores[at.place[1]] - scores.max()) / np.exp(scores - scores.max()).sum())


def _flattened_value(explained: ValueExplanation, at: _NodeValue) -> None:
    source = np.unravel_index(int(np.ravel_multi_index(at.place, at.output.shape)), at.inputs[0].shape)
    explained.rule = f"the input's value at {tuple(int(s) for s in source[1:])}, laid out in one row"
    explained.total = float(at.inputs[0][source])


def _op_rule(op: str):
    """The op table's rule for an op: an activation's formula, a join's symbol and ufunc."""
    from cnnx.sources.onnx_ops import OPS

    return OPS[op].rule


def _normalised_value(explained: ValueExplanation, at: _NodeValue) -> None:
    """A normalisation's value: its input less the mean of the values normalised with it, over their spread, scaled
    and shifted."""
    group, scale, bias = _norm_group(at)
    mean, variance = float(group.mean()), float(group.var())
    epsilon = at.attrs.get("epsilon", 1e-5)
    explained.rule = f"(x - mean) / sqrt(variance + {epsilon:g}) * scale + bias, the mean and variance over the " \
                     f"{group.size} values normalised together"
    explained.inputs = [at.of(at.inputs[0]), mean, variance, scale]
    explained.names = ["x =", "mean =", "variance =", "scale ="]
    explained.bias = bias
    explained.total = (at.of(at.inputs[0]) - mean) / np.sqrt(variance + epsilon) * scale + bias


def _norm_group(at: _NodeValue) -> tuple[np.ndarray, float, float]:
    """The values normalised together with this one (float64), and its scale and bias: a sample's trailing axes
    (LayerNormalization), its channel's map (InstanceNormalization), or its group of channels (GroupNormalization,
    scaled per group before opset 21)."""
    x, place, op = at.inputs[0], at.place, at.node.op
    bias = at.inputs[2] if len(at.inputs) > 2 and at.inputs[2] is not None else None
    if op == "LayerNormalization":
        axis = at.attrs.get("axis", -1) % x.ndim
        return np.asarray(x[tuple(place[:axis])], np.float64), at.of(at.inputs[1]), 0.0 if bias is None else at.of(bias)
    channel = place[1]
    if op == "InstanceNormalization":
        group, index = x[place[0], channel], channel
    else:
        per = x.shape[1] // at.attrs["num_groups"]
        group = x[place[0], channel // per * per : (channel // per + 1) * per]
        index = channel // per if at.opset < 21 else channel
    return np.asarray(group, np.float64), float(at.inputs[1][index]), float(bias[index])


def _lrn_value(explained: ValueExplanation, at: _NodeValue) -> None:
    x, attrs, (n, c, i, j) = at.inputs[0], at.attrs, at.place
    size, alpha, beta, bias = attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    low, high = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
    squares = float(np.square(np.asarray(x[n, low:high, i, j], np.float64)).sum())
    explained.rule = f"x / ({bias:g} + {alpha:g} / {size} * the sum of the squares of channels {low} to {high - 1} " \
                     f"here) ^ {beta:g}"
    explained.inputs, explained.names = [float(x[n, c, i, j]), squares], ["x =", "sum of squares ="]
    explained.total = float(x[n, c, i, j]) / (bias + alpha / size * squares) ** beta


def _value_as_computed(explained: ValueExplanation, at: _NodeValue) -> None:
    explained.rule = f"{at.node.op}: the value as computed (its arithmetic is not shown for this op)"
    explained.total = explained.value


def _over_space(attrs: dict, inputs: list) -> bool:
    """A reduction of (1, C, H, W) over its rows and columns alone, the axes given as opsets 13 or 18 give them."""
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = np.asarray(inputs[1]).tolist()
    return inputs[0].ndim == 4 and axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def _pool_window(explained: ValueExplanation, x: np.ndarray, place, attrs: dict, largest: bool) -> None:
    """A pool's window of its input at the value's place, padding shown as empty, and what it makes of it."""
    from cnnx.sources.onnx_ops import conv_pads, pool_geometry

    kernel, strides, dilations, pads = pool_geometry(attrs, x.shape)
    _, c, r, q = (int(v) for v in place)
    rows = np.array([r * strides[0] - pads[0] + i * dilations[0] for i in range(kernel[0])])
    cols = np.array([q * strides[1] - pads[1] + j * dilations[1] for j in range(kernel[1])])
    plane = np.asarray(x[0, c], np.float64)
    H, W = plane.shape
    inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
    window = _read_window(plane, rows.tolist(), cols.tolist(), "zeros")
    if largest:
        explained.rule, explained.total = "the largest value of the window", float(window[inside].max())
    else:
        counted = inside
        if attrs.get("count_include_pad", 0):  # the explicit padding counts as zeros; what ceil_mode adds never
            top, left, bottom, right = conv_pads(attrs, x.shape, kernel)
            counted = ((rows >= -top) & (rows < H + bottom))[:, None] & ((cols >= -left) & (cols < W + right))[None, :]
        explained.rule = f"the mean of the {int(counted.sum())} values of the window" + (
            " (padding counts as 0)" if counted.sum() > inside.sum() else "")
        explained.total = float(window[counted].sum() / counted.sum())
    explained.parts = [ChannelSum(c, explained.total, np.where(inside, window, np.nan).tolist())]


@as_float32_does
def explain_stage(source: StageSource, stage: int, channel: int, row: int, col: int, array):
    """One value of stage ``stage`` of any source of stages, worked out from what made it and checked against it.

    ``array(k)`` gives stage k's (C, H, W) values, the prepared input at 0.  A chain's or a shipped model's stage
    is worked out from the stage before (``explain_value``); an ONNX network's written layer from the network's
    input, run up to it: a convolution as its sum over every input channel (``explain_layer``), any other op by
    its rule (``explain_node``).
    """
    if stage < 1:
        raise CnnxError("the input is where the numbers start: point at a stage after it")
    pipeline = source.pipeline
    if pipeline is not None:
        if stage > len(pipeline.stages):
            raise CnnxError(f"the pipeline has stages 1 to {len(pipeline.stages)}; got {stage}")
        flip = pipeline.convention == "convolution"
        before, after = array(stage - 1), array(stage)
        return explain_value(pipeline.stages[stage - 1], before, after, stage, channel, row, col, flip=flip)
    written = source.chosen()
    if stage > len(written):
        raise CnnxError(f"the model writes stages 1 to {len(written)}; got {stage}")
    node = written[stage - 1]  # stage k is the k-th node written; unnamed nodes go by their output
    if node.op != "Conv":
        return explain_node(source, array(0), node.outputs[0], stage, channel, row, col)
    if tuple(source.shapes.get(node.outputs[0], ())[2:]) == (1, 1):
        channel, row, col = col, 0, 0  # a vector of channels is written as one row of values
    return explain_layer(source, array(0), node.outputs[0], channel, row, col)


# How a value of each kind of op (the op table's ``value``) is worked out.
_NODE_RULES = {"activation": _activation_value, "join": _joined_value, "global": _global_value,
               "concat": _concatenated_value, "dense": _dense_value, "softmax": _softmax_value,
               "flatten": _flattened_value, "normalisation": _normalised_value, "lrn": _lrn_value,
               "resize": _resized_value}
