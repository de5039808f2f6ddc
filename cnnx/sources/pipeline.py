"""The chain pipeline as a source of stages: checks, receptive fields, and ``stream()``/``run()``.

A chain runs its stages one after another on the image as loaded.
``Chain`` implements the ``source.StageSource`` interface; ``stream`` and
``run`` are the same for scripts and notebooks, on stages or a ``Pipeline``.
``stream`` yields one record per stage (the input first) so that a caller
can write and release each stage's maps before the next is computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.sources.reverse import Reversed, Target, reverse_chain
from cnnx.sources.source import PlannedStage, StageResult, Stats, input_labels
from cnnx.sources.spec import pipeline_text, stage_table, stage_text
from cnnx.sources.stages import LESSON, Pipeline, Stage

__all__ = ["Chain", "check", "receptive_fields", "run", "stream"]

Shape = tuple[int, int, int]
Pair = tuple[int, int]


def check(stages: tuple[Stage, ...], shape: Shape) -> list[Shape]:
    """Every stage's output shape for an input of ``shape``; an error names the first stage that cannot run."""
    shapes = []
    for index, stage in enumerate(stages, 1):
        try:
            shape = stage.output_shape(shape)
        except CnnxError as error:
            raise CnnxError(f"stage {index}, {stage_text(stage)}: {error}") from None
        shapes.append(shape)
    return shapes


def receptive_fields(stages: tuple[Stage, ...], shape: Shape) -> list[tuple[Pair, Pair]]:
    """(receptive field, jump) after each stage, in input pixels (Araujo et al., Distill 2019, eq. 1-2)."""
    rf, jump, out = (1, 1), (1, 1), []
    for stage, before in zip(stages, [shape, *check(stages, shape)], strict=False):  # one more shape than stages
        rf, jump = stage.receptive(rf, jump, before)
        if stage.sees_everything:
            rf = (max(rf[0], shape[1]), max(rf[1], shape[2]))
        out.append((rf, jump))
    return out


def _as_pipeline(stages: tuple[Stage, ...] | Pipeline) -> Pipeline:
    return stages if isinstance(stages, Pipeline) else Pipeline(tuple(stages))


def stream(image: np.ndarray, stages: tuple[Stage, ...] | Pipeline, *, reuse: bool = False) -> Iterator[StageResult]:
    """Run a pipeline on a (C, H, W) image, yielding the input and then each stage's result.

    With ``reuse`` the caller is done with each result's array before it asks
    for the next, so an activation overwrites the stage before it instead of
    taking new memory (the image itself is never overwritten).
    """
    pipeline = _as_pipeline(stages)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise CnnxError(f"the image must be a (C, H, W) array; got shape {image.shape}")
    fields_ = receptive_fields(pipeline.stages, image.shape)
    labels = input_labels(image.shape[0])
    current = StageResult(0, "input", "input", image, labels, 0.0, (1, 1), (1, 1), Stats.of(image), image.shape)
    del image  # held by the input's result alone, so it goes once the first stage has read it and the caller moved on
    yield current
    flip = pipeline.convention == "convolution"
    for index, (stage, (rf, jump)) in enumerate(zip(pipeline.stages, fields_, strict=True), 1):
        start = time.perf_counter()
        if reuse and index > 1 and stage.in_place:
            array = stage.apply(current.array, inplace=True)
        else:
            array = stage.apply(current.array, flip=flip)
        stats = Stats.of(array)
        labels = stage.labels(labels)
        seconds = time.perf_counter() - start
        current = StageResult(
            index, stage.name, stage_text(stage), array, labels, seconds, rf, jump, stats, array.shape
        )
        yield current


def _check_stage(stage: int, count: int) -> None:
    if not 1 <= stage <= count:
        raise CnnxError(f"--stage takes 1 to {count}, the stages written; got {stage}")


def run(image: np.ndarray, stages: tuple[Stage, ...] | Pipeline = LESSON) -> list[StageResult]:
    """Run a pipeline on a (C, H, W) image; one ``StageResult`` per stage, the input first."""
    return list(stream(image, stages))


@dataclass(frozen=True)
class Chain:
    """A chain pipeline as a source of stages: the image as loaded goes through the stages in order."""

    pipeline: Pipeline

    @property
    def color(self) -> bool:
        return self.pipeline.color

    name = "pipeline"
    chained = True
    notes: tuple[str, ...] = ()
    accuracy = None  # a chain classifies nothing
    ready_seconds = 0.0  # nothing to make ready: the kernels are built with the spec

    @property
    def title(self) -> str:
        return pipeline_text(self.pipeline)

    @property
    def caption(self) -> str:
        return f"convolution = {self.pipeline.convention_text}"

    def input_shape(self, shape: Shape) -> Shape:
        return shape

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def plan(self, shape: Shape) -> list[PlannedStage]:
        """Each stage's shape, receptive field and the memory its op needs, for a (C, H, W) input of ``shape``."""
        stages = self.pipeline.stages
        shapes = check(stages, shape)
        inputs = [shape, *shapes[:-1]]
        return [
            PlannedStage(
                index,
                stage.name,
                stage_text(stage),
                out,
                rf,
                jump,
                stage.workspace(before),
                stage.in_place and index > 1,
            )
            for index, (stage, before, out, (rf, jump)) in enumerate(
                zip(stages, inputs, shapes, receptive_fields(stages, shape), strict=True), 1
            )
        ]

    def stream(self, image: np.ndarray, *, reuse: bool = False) -> Iterator[StageResult]:
        return stream(image, self.pipeline, reuse=reuse)

    def answer(self, output: np.ndarray) -> list[tuple[str, float]] | None:
        return None

    def reverse(self, image: np.ndarray, target: Target, keep=(), gradient: bool = True) -> Reversed:
        """The reverse pass from ``target`` (a stage's channel or value; a chain has no classes) to ``image``."""
        if target.label is not None or target.stage is None:
            raise CnnxError("a chain pipeline classifies nothing: give a --stage (and --channel) to start from")
        _check_stage(target.stage, len(self.pipeline.stages))
        return reverse_chain(self.pipeline.stages, image, target, end=target.stage, keep=keep,
                             flip=self.pipeline.convention == "convolution", gradient=gradient)

    def about(self) -> dict:
        """The manifest's record of the pipeline: its spec, settings and TOML tables."""
        pipeline = self.pipeline
        return {
            "convention": pipeline.convention_text,
            "pipeline": {
                "spec": pipeline_text(pipeline),
                "color": "rgb" if pipeline.color else "gray",
                "convention": pipeline.convention,
                "stages": [stage_table(stage) for stage in pipeline.stages],
            },
        }
