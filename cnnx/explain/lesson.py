"""The lesson's steps, window by window: a convolution of a small matrix (the lesson's worked example and where it
went wrong), a patch of an image, ReLU's cut, pooling's windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.explain.checks import agree, as_float32_does, every_stage, written
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


@as_float32_does
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
                Window(r, c, top, left, values.tolist(), products.tolist(), total, written(values, weights, total))
            )
    computed = ops.conv2d(matrix[None], weights[None, None], stride=stride, padding=padding)[0]
    agree(computed, result, "window sums", "conv2d")
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


@as_float32_does
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
        row, col, row - top, col - left, values.tolist(), products.tolist(), total, written(values, weights, total)
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



def lesson_tour(source: StageSource, image: np.ndarray) -> list[dict]:
    """The lesson's six steps on a loaded image, through ``source``'s stages: each step's title, its paragraphs,
    the stage it points at (None where the stages have no such step), and the numbers it shows (the lesson's worked
    example and its correction, the strongest value of the first conv's first map to work out, ReLU's zeroed
    share, pooling's measured tolerance of a one-pixel shift, the receptive field reached, the answer)."""
    prepared = source.prepare(image)
    records = list(source.stream(prepared))
    first = {}
    for record in records[1:]:
        first.setdefault(record.name, record)
    conv, relu = first.get("conv"), first.get("relu")
    pool = first.get("maxpool") or first.get("avgpool")
    last = records[-1]
    answer = source.answer(last.array)
    C, H, W = records[0].shape
    steps = [{"title": "1. The input", "stage": 0, "text": [
        f"The image as the network sees it: {H}x{W} numbers in {C} channel{'s' if C > 1 else ''}, each from 0 "
        "(dark) to 1 (light). Every stage computes new numbers from the ones before it."]}]
    example = explain_conv(lesson_input(), parse_kernel(LESSON_KERNEL))
    step = {"title": "2. Convolution", "stage": conv and conv.index, "example": {
        "input": example.input, "kernel": example.weights, "result": example.result,
        "stated": LESSON_STATED_RESULT, "correction": example.lesson["correction"]}, "text": [
        "A filter, a small grid of weights, slides over the image; at each place the window under it is multiplied "
        "by the weights and the products are added up: one number of the new map. The lesson works one example "
        "by hand (below), with a slip cnnx corrects."]}
    if conv is not None:
        fmap = conv.array[0]
        row, col = np.unravel_index(int(np.argmax(fmap)), fmap.shape)
        step["window"] = {"stage": conv.index, "channel": 0, "row": int(row), "col": int(col)}
        step["text"].append(f"On your image, stage {conv.index} made {conv.shape[0]} maps; its map 0 is strongest "
                            f"at row {row}, column {col} ({fmap[row, col]:.4g}): its window is worked out below.")
    else:
        step["text"].append("These stages have no convolution of their own (conv) to point at.")
    steps.append(step)
    step = {"title": "3. ReLU", "stage": relu and relu.index, "text": [
        "ReLU keeps each positive number and sets each negative one to zero: max(0, x). What is left says where a "
        "filter found its pattern, and the network stops being a sum of sums (it can learn more than straight "
        "lines)."]}
    if relu is not None:
        zeroed = float(np.count_nonzero(relu.array == 0) / relu.array.size)
        step["text"].append(f"On your image, stage {relu.index} is zero in {zeroed:.0%} of its values.")
    steps.append(step)
    step = {"title": "4. Pooling", "stage": pool and pool.index, "text": [
        "Pooling keeps one number of each small window (the largest, for max pooling): the maps shrink, the next "
        "stages cost less, and a pattern moved by a pixel or two still gives much the same numbers."]}
    if pool is not None:
        before, pooled = _shift_likeness(source, prepared, pool.index)
        step["text"].append(
            f"Measured on your image: shifted one pixel to the right, stage {pool.index}'s pooled maps keep a "
            f"correlation of {pooled:.2f} with themselves unshifted, the maps of the stage before it "
            f"({records[pool.index - 1].name}) {before:.2f}.")
    steps.append(step)
    maps = [r for r in records if r.receptive_field and r.shape[1] > 1 and r.shape[2] > 1]
    deepest = max(maps, key=lambda r: r.receptive_field[0], default=last)
    repeated = [r for r in records if r.name == "conv"][1:]
    steps.append({"title": "5. Again and again", "stage": deepest.index, "text": [
        "Conv, ReLU and pooling repeat, each time on the maps before: each value then sees a larger square of the "
        "input and can stand for a larger, more abstract pattern (edges first, then textures, then parts)."] + (
        [f"Here the stages repeat {len(repeated)} more time{'s' if len(repeated) > 1 else ''}; a value of stage "
         f"{deepest.index} sees {deepest.receptive_field[0]}x{deepest.receptive_field[1]} input pixels."]
        if repeated and deepest.receptive_field else [])})
    dense = first.get("dense")
    step = {"title": "6. Fully connected, and the answer", "stage": dense.index if dense else None, "text": [
        "A fully connected layer weighs every value of the last maps into one score per class, and softmax turns "
        "the scores into probabilities that add up to 1: the network's answer."]}
    if answer:
        step["stage"] = step["stage"] or last.index
        step["answer"] = [[name, float(p)] for name, p in answer[:5]]
        step["text"].append(f"Here: {answer[0][0]}, {answer[0][1]:.1%}.")
    else:
        step["text"].append("These stages stop before a fully connected layer; `cnnx serve --model shapes` shows a "
                            "network that ends in one, trained on drawings.")
    steps.append(step)
    return steps


def _shift_likeness(source: StageSource, prepared: np.ndarray, stage: int) -> tuple[float, float]:
    """How alike the maps of the stage before ``stage`` and of ``stage`` stay when the prepared image moves one
    pixel to the right (its left column repeated): each one's correlation with itself unshifted."""
    shifted = np.concatenate([prepared[..., :1], prepared[..., :-1]], axis=-1)
    before, after = list(source.stream(prepared)), list(source.stream(shifted))

    def likeness(k: int) -> float:
        a, b = (np.asarray(r[k].array, np.float64).ravel() for r in (before, after))
        if a.std() == 0 or b.std() == 0:
            return 1.0 if np.array_equal(a, b) else 0.0
        return float(np.corrcoef(a, b)[0, 1])

    return likeness(stage - 1), likeness(stage)
