"""The stage record every source of stages yields, and the interface a source implements.

A source of stages turns an image into a stream of stage records, the
input first: a chain pipeline (``pipeline.Chain``), a shipped model
(``model.Model``), an imported network.  Everything above (the output
folder, the tables, the manifest, the page, ``explain``) reads only these
records and the source's interface, never which source made them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from cnnx.base import runtime

__all__ = ["PlannedStage", "StageResult", "StageSource", "Stats", "input_labels"]

Shape = tuple[int, int, int]
Pair = tuple[int, int]


@dataclass(frozen=True)
class Stats:
    """Summary statistics of a feature map, for the table and the manifest."""

    min: float | None  # of the finite values; None when there are none
    mean: float | None
    max: float | None
    zeros: float  # fraction of exact zeros
    nonfinite: float = 0.0  # fraction of NaN and infinite values: arithmetic that overflowed, or such input

    @classmethod
    def of(cls, array: np.ndarray) -> Stats:
        """Bands of rows the size of the ops' strips, on their threads; each summed pairwise, in a fixed order.

        Non-finite values are counted and left out of min, mean and max; only a band holding one pays the
        extra pass that finds them.
        """
        rows = array.reshape(-1, array.shape[-1])
        bands = runtime.strips(rows.shape[0], rows.shape[1] * rows.itemsize)
        parts: list = [None] * len(bands)

        def work(k: int, scratch: dict) -> None:
            band = rows[bands[k][0] : bands[k][1]]
            # Summed in float64: float32 values near their limit add up past it.
            low, high, total = band.min(), band.max(), float(band.sum(dtype=np.float64))
            bad = 0
            if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(total)):
                finite = band[np.isfinite(band)]
                bad = band.size - finite.size
                low, high = (finite.min(), finite.max()) if finite.size else (np.inf, -np.inf)
                total = float(finite.sum(dtype=np.float64))
            parts[k] = (low, high, total, np.count_nonzero(band == 0), bad)

        runtime.run_tasks(list(range(len(bands))), work)
        low, high, total, zeros, bad = zip(*parts, strict=True)
        counted = array.size - sum(bad)
        if not counted:
            return cls(None, None, None, sum(zeros) / array.size, 1.0)
        mean = float(np.sum(total)) / counted
        return cls(float(np.min(low)), mean, float(np.max(high)), sum(zeros) / array.size, sum(bad) / array.size)


@dataclass(frozen=True)
class StageResult:
    """One stage's output and what is known about it."""

    index: int
    name: str
    description: str
    array: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    seconds: float  # computing the stage and its statistics
    receptive_field: Pair
    jump: Pair
    stats: Stats
    shape: Shape
    value_names: tuple[str, ...] = ()  # for a row of a few values that name things (a model's classes): their names
    preparation: str = ""  # of a model's input stage: how the image was made ready for the model, in words

    def released(self) -> StageResult:
        """The same record without its array, once the maps are written, so memory stays bounded."""
        return replace(self, array=None)


def input_labels(channels: int) -> tuple[str, ...]:
    """Names of the input channels: gray, or red, green, blue."""
    return ("gray",) if channels == 1 else ("red", "green", "blue", "alpha")[:channels]


@dataclass(frozen=True)
class PlannedStage:
    """What a stage will be, known from the input's shape alone: for checks, plans, tables and the memory estimate."""

    index: int
    name: str
    description: str
    shape: Shape
    receptive_field: Pair | None  # input pixels one output value sees; None where undefined
    jump: Pair | None  # input pixels between neighbouring output values
    workspace: int = 0  # bytes the op allocates beyond its input and output
    in_place: bool = False  # the op may overwrite its input instead of taking new memory


class StageSource(Protocol):
    """What turns an image into stage records.

    ``color``: the image is read as red, green and blue rather than luma.
    ``prepare`` makes the first stage's input of a loaded (C, H, W) image
    (a model crops and scales it as it was trained), and ``input_shape``
    says what shape that gives, from the image's shape alone.  ``plan``
    checks every stage against the prepared shape before any work and
    raises a CnnxError naming the first stage that cannot run.  ``stream``
    yields the prepared input (index 0), then each stage; with ``reuse`` the
    caller is done with each record's array before asking for the next.
    ``answer`` reads the last stage as (class, probability) pairs, most
    likely first, where the source classifies.  ``name`` is a word for it,
    ``title`` names it in a line, ``caption`` says how to read its numbers,
    and ``about`` is what the manifest records of it.  ``chained``: each stage
    reads the one before it, so a conv's range is carried through the ReLU and
    pooling after it (a graph's written layers are each their own).  ``notes``
    are what a user should know of the source before its maps (weights that
    are not finite, say), one line each.  ``pipeline`` is the chain of stages
    it runs (printed by --print-config, edited in serve, explained stage by
    stage), None for a network.  ``accuracy`` is a trained model's measured
    accuracy, None where there is none.  ``reverse`` runs the reverse pass
    from a target (``sources.reverse.Target``: a stage's value or channel, a
    class's logit) back to the prepared image.  ``ready_seconds`` is what making it
    ready took before any image (reading a model file and computing what needs
    no image), apart from each image's compute.
    """

    color: bool
    chained: bool
    notes: tuple[str, ...]
    pipeline: object | None
    accuracy: float | None
    ready_seconds: float
    name: str
    title: str
    caption: str

    def input_shape(self, shape: Shape) -> Shape: ...

    def prepare(self, image: np.ndarray) -> np.ndarray: ...

    def plan(self, shape: Shape) -> list[PlannedStage]: ...

    def stream(self, image: np.ndarray, *, reuse: bool = False) -> Iterator[StageResult]: ...

    def answer(self, output: np.ndarray) -> list[tuple[str, float]] | None: ...

    def reverse(self, image: np.ndarray, target, keep=(), gradient: bool = True): ...

    def about(self) -> dict: ...
