"""The arithmetic behind each step, as data: every convolution window, ReLU's cut, pooling's windows, shifts, fields.

Each function returns plain dataclasses that ``explain_view`` draws in the
terminal and ``as_json`` turns into JSON; numbers are computed here once.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, is_dataclass

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.sources.kernels import Kernel, parse_kernel
from cnnx.sources.source import StageSource
from cnnx.sources.stages import Conv

# The lesson's worked example, as printed in it.
LESSON_INPUT = [[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]]
LESSON_KERNEL = "vertical_edge"
LESSON_STATED_RESULT = [[3, 1], [2, 0]]
LESSON_STATED_SUM = "(1*1) + (2*0) + (1*-1) + (0*1) + (1*0) + (3*-1) + (2*1) + (1*0) + (0*-1) = 3"
RELU_RANGE = list(range(-10, 11))  # the lesson's "pixel values from -10 to 10"


def lesson_input() -> np.ndarray:
    return np.array(LESSON_INPUT, np.float64)


def parse_matrix(text: str, what: str = "--input") -> np.ndarray:
    """A 2-D matrix written as rows of numbers: ``[[1,2],[3,4]]``."""
    if not text.strip().startswith("["):
        raise CnnxError(f"{what}: write the matrix as rows of numbers, e.g. [[1,2,1,0],[0,1,3,2]]; got {text!r}")
    try:
        return parse_kernel(text).weights.astype(np.float64)
    except CnnxError as error:
        raise CnnxError(f"{what}: {error}") from None


@dataclass
class Window:
    """One output pixel of a convolution: the input values under the kernel, their products with it, the sum."""

    row: int
    col: int
    top: int  # the window's first row and column in the padded input
    left: int
    values: list[list[float]]
    products: list[list[float]]
    total: float
    written: str  # the sum written out, as the lesson writes it


@dataclass
class ConvExplanation:
    input: list[list[float]]
    kernel: str
    weights: list[list[float]]
    stride: int
    padding: int
    padded: list[list[float]]
    windows: list[Window]
    result: list[list[float]]
    convolution: list[list[float]]  # with the kernel flipped, as true convolution
    relu: list[list[float]]
    lesson: dict | None = None  # where the lesson went wrong, for its own example


def _written(values: np.ndarray, weights: np.ndarray, total: float) -> str:
    terms = " + ".join(f"({v:g}*{w:g})" for v, w in zip(values.ravel(), weights.ravel(), strict=True))
    return f"{terms} = {total:g}"


def _as_float32_does(explain):
    """An explanation's arithmetic overflows and meets NaN as the op's own float32 does: to inf and NaN, shown as
    such, with no warning beside them."""

    @functools.wraps(explain)
    def quietly(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return explain(*args, **kwargs)

    return quietly


def _agree(computed: np.ndarray, shown: np.ndarray, what: str, op: str) -> None:
    """The arithmetic shown must be what the op computes; a difference is a bug in cnnx, never the user's."""
    finite = np.abs(shown[np.isfinite(shown)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    # NaN and infinities (from weights or input that hold them) agree when both sides have them in the same place.
    if not np.allclose(computed, shown, atol=1e-5 * scale, equal_nan=True):
        raise RuntimeError(f"the {what} shown disagree with {op}")


@_as_float32_does
def explain_conv(matrix: np.ndarray, kernel: Kernel, *, stride: int = 1, padding: int = 0) -> ConvExplanation:
    """Every window of a cross-correlation of a small matrix, with zero padding, checked against ``ops.conv2d``."""
    matrix = np.asarray(matrix, np.float64)
    weights = kernel.weights.astype(np.float64)
    if matrix.ndim != 2:
        raise CnnxError(f"--input must be a 2-D matrix; got shape {matrix.shape}")
    if stride < 1 or padding < 0:
        raise CnnxError("--stride must be at least 1 and --padding at least 0")
    # Sizes are checked from the shapes before the padded copy is made: a padding of thousands is refused in
    # arithmetic, not after allocating it.
    height, width = matrix.shape[0] + 2 * padding, matrix.shape[1] + 2 * padding
    kh, kw = weights.shape
    if kh > height or kw > width:
        raise CnnxError(f"the {kh}x{kw} kernel is larger than the {height}x{width} padded input")
    rows = (height - kh) // stride + 1
    cols = (width - kw) // stride + 1
    if rows * cols > 400:
        raise CnnxError(f"that is {rows * cols} windows; explain takes inputs of up to 400 output pixels")
    padded = np.pad(matrix, padding)
    windows = []
    result = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            top, left = r * stride, c * stride
            values = padded[top : top + kh, left : left + kw]
            products = values * weights
            total = float(products.sum())
            result[r, c] = total
            windows.append(
                Window(r, c, top, left, values.tolist(), products.tolist(), total, _written(values, weights, total))
            )
    computed = ops.conv2d(matrix[None], weights[None, None], stride=stride, padding=padding)[0]
    _agree(computed, result, "window sums", "conv2d")
    flipped = ops.conv2d(matrix[None], weights[::-1, ::-1].copy()[None, None], stride=stride, padding=padding)[0]
    explanation = ConvExplanation(
        matrix.tolist(),
        kernel.spec,
        weights.tolist(),
        stride,
        padding,
        padded.tolist(),
        windows,
        result.tolist(),
        flipped.astype(np.float64).tolist(),
        np.maximum(result, 0).tolist(),
    )
    if matrix.tolist() == LESSON_INPUT and kernel.spec == LESSON_KERNEL and stride == 1 and padding == 0:
        first = windows[0]
        explanation.lesson = {
            "stated_result": LESSON_STATED_RESULT,
            "stated_first_sum": LESSON_STATED_SUM,
            "first_sum_adds_to": first.total,
            "correction": (
                f"The lesson states the result {LESSON_STATED_RESULT} and writes its first window as "
                f"{LESSON_STATED_SUM}. Those nine products add to {first.total:g}, not 3. "
                f"The cross-correlation is {result.astype(int).tolist()}; true convolution (kernel flipped) "
                f"gives {flipped.astype(int).tolist()}; "
                f"ReLU of the result is {np.maximum(result, 0).astype(int).tolist()}."
            ),
        }
    return explanation


@dataclass
class PatchExplanation:
    """One pixel of a filter's map of a real image: the patch under the kernel, products, sum, and where it lands."""

    image: str
    row: int
    col: int
    kernel: str
    weights: list[list[float]]
    padding_mode: str
    window: Window
    map_value: float  # the same pixel of the whole image's map, computed by the pipeline
    map_shape: list[int]


def _crop(centre: int, size: int, n: int, padding_mode: str) -> slice:
    """Rows (or columns) around ``centre`` that hold a ``size``-wide window and the border it reads."""
    if padding_mode == "circular" and (centre - size < 0 or centre + size >= n):
        return slice(0, n)
    return slice(max(0, centre - size), min(n, centre + size + 1))


@_as_float32_does
def explain_patch(
    image: np.ndarray, path: str, kernel: Kernel, row: int, col: int, padding_mode: str = "replicate"
) -> PatchExplanation:
    """The window of a grey image under a kernel centred at (row, col), as ``cnnx filter`` computes that map."""
    H, W = image.shape[1:]
    if not (0 <= row < H and 0 <= col < W):
        raise CnnxError(f"--at {row},{col} is outside the {H}x{W} image (rows 0..{H - 1}, columns 0..{W - 1})")
    kh, kw = kernel.weights.shape
    stage = Conv((kernel.spec,), padding="same", padding_mode=padding_mode)
    # The map's value there, from a crop that holds the window (or reaches the image's own border where it
    # does; the whole side where a circular border wraps): the whole image's map there, without all of it.
    rows = _crop(row, kh, H, padding_mode)
    cols = _crop(col, kw, W, padding_mode)
    crop = stage.apply(np.ascontiguousarray(image[:1, rows, cols]))[0]
    top, left = (kh - 1) // 2, (kw - 1) // 2  # "same" puts the odd pixel of an even kernel's padding after
    border = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[padding_mode]
    padded = np.pad(image[0].astype(np.float64), ((top, kh - 1 - top), (left, kw - 1 - left)), mode=border)
    values = padded[row : row + kh, col : col + kw]
    weights = kernel.weights.astype(np.float64)
    products = values * weights
    total = float(products.sum())
    window = Window(
        row, col, row - top, col - left, values.tolist(), products.tolist(), total, _written(values, weights, total)
    )
    value = float(crop[row - rows.start, col - cols.start])
    return PatchExplanation(path, row, col, kernel.spec, weights.tolist(), padding_mode, window, value, [H, W])


@dataclass
class ReluExplanation:
    values: list[float]
    outputs: list[float]
    stage: str | None = None
    histogram: dict | None = None  # bins, counts before and after
    zeroed: float | None = None


def explain_relu(values=RELU_RANGE) -> ReluExplanation:
    values = [float(v) for v in values]
    return ReluExplanation(values, ops.relu(np.array(values)).astype(np.float64).tolist())


def every_stage(source: StageSource, image: np.ndarray) -> list:
    """Every stage's record of a source on a loaded image."""
    return list(source.stream(source.prepare(image)))


def explain_relu_image(image: np.ndarray, source: StageSource, stage: int, bins: int = 12) -> ReluExplanation:
    """Values before and after ReLU at one stage of a source on an image: a histogram and the share zeroed."""
    results = every_stage(source, image)
    if not 1 <= stage < len(results) or results[stage].name != "relu":
        relus = [r.index for r in results if r.name == "relu"]
        raise CnnxError(f"--stage must be a relu stage of the pipeline: one of {relus}; got {stage}")
    before, after = results[stage - 1].array, results[stage].array
    edges = np.linspace(float(before.min()), float(before.max()) or 1.0, bins + 1)
    counts_before = np.histogram(before, edges)[0]
    counts_after = np.histogram(after, edges)[0]
    return ReluExplanation(
        [],
        [],
        results[stage].description,
        {"edges": edges.tolist(), "before": counts_before.tolist(), "after": counts_after.tolist()},
        float(np.count_nonzero(after == 0) / after.size),
    )


@dataclass
class PoolWindow:
    row: int
    col: int
    values: list[list[float]]
    max: float
    mean: float


@dataclass
class PoolExplanation:
    input: list[list[float]]
    size: int
    stride: int
    windows: list[PoolWindow]
    max_result: list[list[float]]
    mean_result: list[list[float]]


def explain_pool(matrix: np.ndarray, size: int = 2, stride: int | None = None) -> PoolExplanation:
    """Max and average pooling window by window, checked against the ops."""
    matrix = np.asarray(matrix, np.float64)
    stride = stride or size
    if size < 1 or stride < 1 or size > min(matrix.shape):
        raise CnnxError(
            f"a {size}x{size} window with stride {stride} does not fit the {matrix.shape[0]}x{matrix.shape[1]} input"
        )
    rows, cols = (matrix.shape[0] - size) // stride + 1, (matrix.shape[1] - size) // stride + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            values = matrix[r * stride : r * stride + size, c * stride : c * stride + size]
            windows.append(PoolWindow(r, c, values.tolist(), float(values.max()), float(values.mean())))
    max_result = np.array([w.max for w in windows]).reshape(rows, cols)
    mean_result = np.array([w.mean for w in windows]).reshape(rows, cols)
    return PoolExplanation(matrix.tolist(), size, stride, windows, max_result.tolist(), mean_result.tolist())


@dataclass
class ShiftRow:
    index: int
    stage: str
    jump: int
    similarity: list[float]  # one per shift


@dataclass
class ShiftExplanation:
    image: str
    shifts: list[int]
    rows: list[ShiftRow] = field(default_factory=list)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return (
        1.0 if denominator == 0 and np.array_equal(a, b) else float((a * b).sum() / denominator) if denominator else 0.0
    )


def shift_tolerance(image: np.ndarray, path: str, source: StageSource, shifts: list[int]) -> ShiftExplanation:
    """How alike each stage's output stays when the input moves right by a few pixels.

    The original and the moved input are two crops of the same image, ``s``
    pixels apart; each stage's two outputs are compared at the same places of
    the stage's grid (its own rows and columns), away from the borders, as
    Pearson correlation. Pooling coarsens the grid, so a shift smaller than a
    pooled pixel moves little of the output: the tolerance the lesson claims.
    """
    largest = max(shifts)
    if image.shape[2] < largest + 16:
        raise CnnxError(f"the image must be at least {largest + 16} pixels wide to shift it by {largest}")
    width = image.shape[2] - largest
    base = every_stage(source, image[:, :, largest : largest + width])
    explanation = ShiftExplanation(path, shifts)
    moved = {s: every_stage(source, image[:, :, largest - s : largest - s + width]) for s in shifts}
    for result in base[1:]:
        margin = -(-result.receptive_field[1] // result.jump[1])  # outputs that see past the crop's border
        similarity = []
        for s in shifts:
            a = result.array[..., margin : result.shape[2] - margin]
            b = moved[s][result.index].array[..., margin : result.shape[2] - margin]
            similarity.append(_correlation(a, b) if a.size else float("nan"))
        explanation.rows.append(ShiftRow(result.index, result.description, result.jump[1], similarity))
    return explanation


@dataclass
class FieldRow:
    index: int
    stage: str
    shape: list[int]
    receptive_field: list[int]
    jump: list[int]


def explain_field(source: StageSource, shape: tuple[int, int, int]) -> list[FieldRow]:
    """How many input pixels one output pixel of each stage sees, and how far apart neighbouring outputs are."""
    return [
        FieldRow(stage.index, stage.description, list(stage.shape), list(stage.receptive_field), list(stage.jump))
        for stage in source.plan(source.input_shape(shape))
        if stage.receptive_field is not None
    ]


def as_json(data) -> object:
    """Dataclasses (and lists of them) as plain JSON-ready values."""
    if isinstance(data, list):
        return [as_json(item) for item in data]
    return asdict(data) if is_dataclass(data) else data


def _sides(shape) -> str:
    return f"{shape[1]}x{shape[2]}"


def _window(result, before) -> int | None:
    """The window a stage slid, from how its receptive field grew: (window - 1) * jump before it."""
    if before is None or result.receptive_field is None or before.receptive_field is None or not before.jump:
        return None
    grown = result.receptive_field[0] - before.receptive_field[0]
    return grown // before.jump[0] + 1 if grown % before.jump[0] == 0 else None


def stage_story(result, before=None) -> str:
    """What a stage did to this image, in plain words, from its record and the record before it.

    ``result`` and ``before`` are ``source.StageResult``s (the input has no ``before``).
    """
    stats, shape = result.stats, result.shape
    name = result.name
    if result.index == 0:
        prepared = result.description.partition(": ")[2]
        if prepared:  # a model's input: the image as it was made ready for the model
            return (f"What the model saw: the image made ready as the model was trained ({prepared}), "
                    f"{_sides(shape)} values in {shape[0]} channel{'s' if shape[0] > 1 else ''}. Every stage below "
                    "computes new numbers from the ones above it.")
        colours = "grey (luma)" if shape[0] == 1 else "red, green and blue"
        return (f"The image as the network sees it: {_sides(shape)} pixels, {colours}, each a number from 0 "
                "(black) to 1 (white). Every stage below computes new numbers from the ones above it.")
    window = _window(result, before)
    size = f"{window}x{window} " if window else ""
    if name == "conv":
        text = (f"{shape[0]} filter{'s' if shape[0] > 1 else ''} slid over the {before.shape[0]} map"
                f"{'s' if before.shape[0] > 1 else ''} above. At every position a filter multiplies the {size}window "
                "under it by its weights and adds the products up: red where the picture matches the filter's "
                "pattern, blue where it matches the opposite, white where neither.")
    elif name == "relu":
        text = (f"ReLU set {stats.zeros:.0%} of the values to zero (every negative one) and kept the rest as they "
                "were: only the places where a filter found its pattern remain.")
    elif name in ("maxpool", "avgpool"):
        kind = "largest" if name == "maxpool" else "mean"
        factor = before.shape[1] / shape[1] if shape[1] else 1
        change = "halved the size" if round(factor) == 2 else f"shrank the maps by {factor:.3g} times"
        text = (f"{'Max' if name == 'maxpool' else 'Average'} pooling {change}, {_sides(before.shape)} to "
                f"{_sides(shape)}: each value is the {kind} of a {size}window, so a pattern that moves by a pixel "
                "or so still gives much the same value.")
    elif name == "flatten":
        text = (f"The {before.shape[0]} maps of {_sides(before.shape)} laid end to end as one row of "
                f"{shape[2]} numbers: the input of the fully connected layer.")
    elif name == "dense":
        text = (f"A fully connected layer: each of its {shape[2]} outputs is a weighted sum of all "
                f"{int(np.prod(before.shape))} numbers above, plus a bias.")
        if result.value_names:
            text += " One score per class: the larger, the more the network leans to that class."
    elif name == "softmax":
        text = "Softmax turned the scores into probabilities that add up to 1."
    elif name == "global_avgpool":
        text = f"The mean of each of the {shape[0]} maps: one number per channel."
    elif name in ("sigmoid", "tanh", "abs", "leaky_relu"):
        what = {"sigmoid": "squeezed every value into 0..1", "tanh": "squeezed every value into -1..1",
                "abs": "made every value its size, whatever its sign",
                "leaky_relu": "kept positive values and shrank negative ones"}[name]
        text = f"{name} {what}."
    else:
        text = f"{result.description}: {shape[0]} maps of {_sides(shape)}."
    rf, jump = result.receptive_field, result.jump
    if rf and shape[1] * shape[2] > 1:
        text += (f" Each value here sees {rf[0]}x{rf[1]} pixels of the input (the square on the picture); "
                 f"neighbouring values are {jump[0]} pixel{'s' if jump[0] > 1 else ''} apart in it.")
    return text


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


@_as_float32_does
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
    _agree(np.array([value]), np.array([total]), "channel sums and bias", "the layer")
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


@_as_float32_does
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
    from cnnx.compute import ops
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
_ACTIVATION_RULES = {
    "Relu": lambda x, a, extra: ("max(0, x)", max(0.0, x)),
    "LeakyRelu": lambda x, a, extra: (f"x if x > 0 else {a.get('alpha', 0.01):g} x",
                                      x if x > 0 else a.get("alpha", 0.01) * x),
    "PRelu": lambda x, a, extra: (f"x if x > 0 else {extra[0]:g} x (this channel's slope)",
                                  x if x > 0 else extra[0] * x),
    "Clip": lambda x, a, extra: (f"min(max(x, {extra[0]:g}), {extra[1]:g})", min(max(x, extra[0]), extra[1])),
    "Sigmoid": lambda x, a, extra: ("1 / (1 + exp(-x))", 1 / (1 + np.exp(-x))),
    "HardSigmoid": lambda x, a, extra: (
        f"min(max({a.get('alpha', 0.2):g} x + {a.get('beta', 0.5):g}, 0), 1)",
        min(max(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0), 1.0),
    ),
    "HardSwish": lambda x, a, extra: ("x * min(max(x / 6 + 1/2, 0), 1)", x * min(max(x / 6 + 0.5, 0.0), 1.0)),
    "Tanh": lambda x, a, extra: ("tanh(x)", float(np.tanh(x))),
}
_JOINS = {"Add": (" + ", np.add), "Sub": (" - ", np.subtract), "Mul": (" * ", np.multiply),
          "Div": (" / ", np.divide), "Sum": (" + ", np.add)}


@_as_float32_does
def explain_node(graph, image: np.ndarray, layer: str, index: int, channel: int, row: int, col: int):
    """One value of any written node of an ONNX graph, worked out from the node's inputs and checked against it.

    (channel, row, col) is the place in the stage as written (a row of values is (0, 0, k)).  A Conv's sum
    over its input channels is ``explain_layer``'s; activations, sums and products, pools, global pools,
    concatenations, fully connected layers, softmax and flattening are shown here; any other op says so.
    """
    from cnnx.sources.graph import stage_shape
    from cnnx.sources.onnx_ops import attributes

    node, inputs, output = graph.run_to(image, layer)
    place = np.unravel_index(np.ravel_multi_index((channel, row, col), stage_shape(output.shape)), output.shape)
    value = float(output[place])
    explained = ValueExplanation(index, node.op, channel, row, col, "", value=value)
    attrs, op = attributes(node.proto), node.op

    def at(array) -> float:
        """An input's value at the value's place, broadcast as the op broadcasts it."""
        return float(np.broadcast_to(array, output.shape)[place])

    if op in _ACTIVATION_RULES:
        extra = [at(inputs[1])] if op == "PRelu" else []
        if op == "Clip":
            given = [v if v is None else float(np.asarray(v)) for v in (inputs + [None, None])[1:3]]
            bounds = given if graph.opset >= 11 else [attrs.get("min"), attrs.get("max")]
            extra = [-np.inf if bounds[0] is None else bounds[0], np.inf if bounds[1] is None else bounds[1]]
        x = at(inputs[0])
        explained.rule, explained.total = _ACTIVATION_RULES[op](x, attrs, extra)
        explained.inputs, explained.names = [x], ["x ="]
    elif op in _JOINS:
        symbol, combine = _JOINS[op]
        values = [at(i) for i in inputs]
        explained.rule = symbol.join(f"[{name}]" for name in node.inputs)
        explained.inputs, explained.names = values, [f"{name} =" for name in node.inputs]
        explained.total = float(combine.reduce(np.array(values, np.float64)))
    elif op in ("MaxPool", "AveragePool") and output.ndim == 4:
        _pool_window(explained, inputs[0], place, attrs, op == "MaxPool")
    elif op in ("GlobalAveragePool", "GlobalMaxPool") or (
        op in ("ReduceMean", "ReduceMax") and _over_space(attrs, inputs)
    ):
        plane = np.asarray(inputs[0][0, place[1]], np.float64)
        largest = "Max" in op
        explained.rule = f"the {'largest' if largest else 'mean'} of the {plane.shape[0]}x{plane.shape[1]} values " \
                         f"of input channel {place[1]}"
        explained.total = float(plane.max() if largest else plane.mean())
        explained.parts = [ChannelSum(int(place[1]), explained.total, plane.tolist() if plane.size <= 256 else None)]
    elif op == "Concat":
        axis = attrs["axis"] % output.ndim
        offset = int(place[axis])
        which = 0
        while offset >= inputs[which].shape[axis]:
            offset, which = offset - inputs[which].shape[axis], which + 1
        source = list(place)
        source[axis] = offset
        explained.rule = f"copied from [{node.inputs[which]}], its {'channel' if axis == 1 else 'place'} {offset}"
        explained.total = float(inputs[which][tuple(source)])
    elif op in ("Gemm", "MatMul") and output.ndim == 2:
        a, b = np.asarray(inputs[0], np.float64), np.asarray(inputs[1], np.float64)
        a = a.T if attrs.get("transA", 0) else a
        b = b.T if attrs.get("transB", 0) else b
        products = attrs.get("alpha", 1.0) * a[place[0]] * b[:, place[1]]
        top = np.argsort(-np.abs(products))[:8]
        explained.rule = f"the sum of all {products.size} inputs times their weights, plus the bias (the largest " \
                         f"{len(top)} shown)"
        explained.inputs, explained.names = products[top].tolist(), [f"input {k}:" for k in top]
        has_bias = op == "Gemm" and len(inputs) > 2 and inputs[2] is not None
        explained.bias = attrs.get("beta", 1.0) * at(inputs[2]) if has_bias else 0.0
        explained.total = float(products.sum()) + explained.bias
    elif op == "Softmax" and output.ndim == 2 and attrs.get("axis", -1) in (-1, 1):
        scores = np.asarray(inputs[0][place[0]], np.float64)
        explained.rule = "exp(score) / the sum of exp(every score)"
        explained.inputs, explained.names = [float(scores[place[1]])], ["score ="]
        explained.total = float(np.exp(scores[place[1]] - scores.max()) / np.exp(scores - scores.max()).sum())
    elif op == "Flatten":
        source = np.unravel_index(int(np.ravel_multi_index(place, output.shape)), inputs[0].shape)
        explained.rule = f"the input's value at {tuple(int(s) for s in source[1:])}, laid out in one row"
        explained.total = float(inputs[0][source])
    else:
        explained.rule = f"{op}: the value as computed (its arithmetic is not shown for this op)"
        explained.total = value
    _agree(np.array([value]), np.array([explained.total]), "arithmetic", f"node {layer}")
    return explained


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


@_as_float32_does
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
