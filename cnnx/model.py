"""The trained models cnnx ships: their pipelines, how an image is prepared for them, and their answers.

A model is a weights file in ``cnnx/models/`` whose metadata (JSON inside the
.npz) names its classes, the pipeline spec that runs it, and how inputs are
prepared.  ``cnnx pipeline IMAGE --model shapes`` runs that pipeline on the
prepared image and reads the last stage as class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnx.errors import CnnxError
from cnnx.images import LUMA
from cnnx.weights import read_model
from cnnx.pipeline import Pipeline
from cnnx.shapes import prepare as prepare_shape
from cnnx.spec import parse_spec

# How each model's inputs are prepared, by the name in its metadata.
PREPARERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"shapes": prepare_shape}


@dataclass(frozen=True)
class Model:
    name: str
    classes: tuple[str, ...]
    spec: str
    meta: dict

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(parse_spec(self.spec))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A loaded (C, H, W) image as the model's input: luma, then the model's own preparation."""
        gray = image[0] if image.shape[0] == 1 else np.tensordot(LUMA, image[:3], axes=1)
        return PREPARERS[self.meta.get("preparation", self.name)](gray)

    def answer(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        """Each class with its probability, most likely first."""
        values = np.asarray(probabilities, np.float64).ravel()
        if values.size != len(self.classes):
            raise CnnxError(f"model {self.name}: {values.size} outputs for {len(self.classes)} classes")
        return sorted(zip(self.classes, values.tolist()), key=lambda pair: -pair[1])


def load_model(name: str) -> Model:
    """A shipped model by name."""
    _, meta = read_model(name, layers=False)
    return Model(name, tuple(meta["classes"]), meta["spec"], meta)
