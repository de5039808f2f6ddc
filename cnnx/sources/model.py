"""The trained models cnnx ships, as sources of stages: a chain of stages, how an image is prepared, the answer.

A model is a weights file in ``cnnx/models/`` whose metadata (JSON inside the
.npz) names its classes, the pipeline spec that runs it, and how inputs are
prepared.  ``cnnx pipeline IMAGE --model shapes`` runs that pipeline on the
prepared image and reads the last stage as class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.io.images import LUMA
from cnnx.io.weights import read_model
from cnnx.sources.kernels import WeightBank
from cnnx.sources.pipeline import Chain
from cnnx.sources.reverse import Reversed, Target, reverse_chain
from cnnx.sources.shapes import INPUT_SIZE
from cnnx.sources.shapes import prepare as prepare_shape
from cnnx.sources.source import PlannedStage, StageResult
from cnnx.sources.spec import parse_spec
from cnnx.sources.stages import Conv, Pipeline

# What each model's answers are worth, said under them: what it was trained on.
CAUTIONS = {
    "shapes": "The shapes model was trained on drawings of one shape, dark ink on light paper: on a photo its "
              "answer says little.",
}
# How each model's inputs are prepared, by the name in its metadata, and the (C, H, W) they make.
PREPARERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], tuple[int, int, int]]] = {
    "shapes": (prepare_shape, (1, INPUT_SIZE, INPUT_SIZE)),
}


@dataclass(frozen=True)
class Model:
    """A shipped model: its name, classes, metadata, and the chain of stages that runs it."""

    name: str
    classes: tuple[str, ...]
    meta: dict = field(repr=False)
    pipeline: Pipeline = field(repr=False)

    color = False  # the models see luma
    chained = True
    notes: tuple[str, ...] = ()
    ready_seconds = 0.0  # its weights are read with the spec

    @property
    def accuracy(self) -> float | None:
        """The share of its test set the model classifies right, as measured when it was trained."""
        return self.meta.get("test", {}).get("accuracy")

    @property
    def caution(self) -> str | None:
        return CAUTIONS.get(self.meta.get("preparation", self.name))

    @property
    def chain(self) -> Chain:
        return Chain(self.pipeline)

    @property
    def title(self) -> str:
        return f"model {self.name}: {self.chain.title}"

    @property
    def caption(self) -> str:
        return self.chain.caption

    def _preparer(self):
        return PREPARERS[self.meta.get("preparation", self.name)]

    def input_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self._preparer()[1]

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A loaded (C, H, W) image as the model's input: luma, then the model's own preparation."""
        gray = image[0] if image.shape[0] == 1 else np.tensordot(LUMA, image[:3], axes=1)
        return self._preparer()[0](gray)

    def plan(self, shape: tuple[int, int, int]) -> list[PlannedStage]:
        return self.chain.plan(shape)

    def stream(self, image: np.ndarray, *, reuse: bool = False) -> Iterator[StageResult]:
        """The chain's records; the rows of class scores after the last fully connected layer carry the class names."""
        last_dense = max((k for k, s in enumerate(self.pipeline.stages, 1) if s.name == "dense"), default=None)
        for result in self.chain.stream(image, reuse=reuse):
            if result.index == 0 and self.meta.get("preprocessing"):
                prepared = self.meta["preprocessing"]
                result = replace(result, description=f"input: {prepared}", preparation=prepared)
            if last_dense is not None and result.index >= last_dense and result.shape == (1, 1, len(self.classes)):
                result = replace(result, value_names=self.classes)
            yield result

    def answer(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        """Each class with its probability, most likely first."""
        values = np.asarray(probabilities, np.float64).ravel()
        if values.size != len(self.classes):
            raise CnnxError(f"model {self.name}: {values.size} outputs for {len(self.classes)} classes")
        return sorted(zip(self.classes, values.tolist(), strict=True), key=lambda pair: -pair[1])

    def reverse(self, image: np.ndarray, target: Target, keep=(), gradient: bool = True) -> Reversed:
        """The reverse pass from ``target`` to the prepared ``image``: a class's score is the last fully connected
        layer's output for it (the logit, before the softmax)."""
        stages = self.pipeline.stages
        if target.label is not None:
            if not 0 <= target.label < len(self.classes):
                raise CnnxError(f"model {self.name} has classes 0 to {len(self.classes) - 1}: "
                                f"{', '.join(self.classes)}")
            end = max((k for k, s in enumerate(stages, 1) if s.name == "dense"), default=len(stages))
        else:
            if target.stage is None or not 1 <= target.stage <= len(stages):
                raise CnnxError(f"--stage takes 1 to {len(stages)}, the model's stages")
            end = target.stage
        return reverse_chain(stages, image, target, end=end, keep=keep, gradient=gradient)

    def learned_kernels(self) -> dict[str, np.ndarray]:
        """Each conv layer's learned filters, (out, in, kH, kW), by layer name, in the order they run."""
        return {
            source.spec.rpartition(":")[2]: source.weights
            for stage in self.pipeline.stages if isinstance(stage, Conv)
            for source in stage.sources if isinstance(source, WeightBank)
        }

    def about(self) -> dict:
        return {**self.chain.about(), "model": {"name": self.name, **self.meta}}


def load_model(name: str) -> Model:
    """A shipped model by name."""
    _, meta = read_model(name, layers=False)
    try:
        classes, spec = tuple(meta["classes"]), meta["spec"]
        if meta.get("preparation", name) not in PREPARERS or not isinstance(spec, str):
            raise TypeError
    except (KeyError, TypeError):
        raise CnnxError(f"model {name!r}: its metadata lacks classes, a spec or a known preparation") from None
    return Model(name, classes, meta, Pipeline(parse_spec(spec)))
