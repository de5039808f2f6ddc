"""What a stack of stages sees: receptive fields stage by stage, tolerance to small shifts, and each stage's story in
plain words."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.explain.checks import every_stage
from cnnx.sources.source import StageSource


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
    if result.index == 0:
        return _input_story(result)
    window = _window(result, before)
    story = _STORIES.get(result.name, _any_story)
    text = story(result, before, f"{window}x{window} " if window else "")
    rf, jump, shape = result.receptive_field, result.jump, result.shape
    if rf and shape[1] * shape[2] > 1:
        text += (f" Each value here sees {rf[0]}x{rf[1]} pixels of the input (the square on the picture); "
                 f"neighbouring values are {jump[0]} pixel{'s' if jump[0] > 1 else ''} apart in it.")
    return text


def _input_story(result) -> str:
    shape = result.shape
    if result.preparation:  # a model's input: the image as it was made ready for the model
        return (f"What the model saw: the image made ready as the model was trained ({result.preparation}), "
                f"{_sides(shape)} values in {shape[0]} channel{'s' if shape[0] > 1 else ''}. Every stage below "
                "computes new numbers from the ones above it.")
    colours = "grey (luma)" if shape[0] == 1 else "red, green and blue"
    return (f"The image as the network sees it: {_sides(shape)} pixels, {colours}, each a number from 0 "
            "(black) to 1 (white). Every stage below computes new numbers from the ones above it.")


def _conv_story(result, before, size: str) -> str:
    shape = result.shape
    return (f"{shape[0]} filter{'s' if shape[0] > 1 else ''} slid over the {before.shape[0]} map"
            f"{'s' if before.shape[0] > 1 else ''} above. At every position a filter multiplies the {size}window "
            "under it by its weights and adds the products up: red where the picture matches the filter's "
            "pattern, blue where it matches the opposite, white where neither.")


def _relu_story(result, before, size: str) -> str:
    return (f"ReLU set {result.stats.zeros:.0%} of the values to zero (every negative one) and kept the rest as they "
            "were: only the places where a filter found its pattern remain.")


def _pool_story(result, before, size: str) -> str:
    name, shape = result.name, result.shape
    kind = "largest" if name == "maxpool" else "mean"
    factor = before.shape[1] / shape[1] if shape[1] else 1
    change = "halved the size" if round(factor) == 2 else f"shrank the maps by {factor:.3g} times"
    return (f"{'Max' if name == 'maxpool' else 'Average'} pooling {change}, {_sides(before.shape)} to "
            f"{_sides(shape)}: each value is the {kind} of a {size}window, so a pattern that moves by a pixel "
            "or so still gives much the same value.")


def _flatten_story(result, before, size: str) -> str:
    return (f"The {before.shape[0]} maps of {_sides(before.shape)} laid end to end as one row of "
            f"{result.shape[2]} numbers: the input of the fully connected layer.")


def _dense_story(result, before, size: str) -> str:
    text = (f"A fully connected layer: each of its {result.shape[2]} outputs is a weighted sum of all "
            f"{int(np.prod(before.shape))} numbers above, plus a bias.")
    if result.value_names:
        text += " One score per class: the larger, the more the network leans to that class."
    return text


def _any_story(result, before, size: str) -> str:
    return f"{result.description}: {result.shape[0]} maps of {_sides(result.shape)}."


_SQUEEZES = {"sigmoid": "squeezed every value into 0..1", "tanh": "squeezed every value into -1..1",
             "abs": "made every value its size, whatever its sign",
             "leaky_relu": "kept positive values and shrank negative ones"}
# Each kind of stage's story, by the stage's name.
_STORIES = {
    "conv": _conv_story, "relu": _relu_story, "maxpool": _pool_story, "avgpool": _pool_story,
    "flatten": _flatten_story, "dense": _dense_story,
    "softmax": lambda result, before, size: "Softmax turned the scores into probabilities that add up to 1.",
    "global_avgpool": lambda result, before, size: f"The mean of each of the {result.shape[0]} maps: one number "
                                                   "per channel.",
    **{name: (lambda result, before, size: f"{result.name} {_SQUEEZES[result.name]}.") for name in _SQUEEZES},
}
