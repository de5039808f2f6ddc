"""What every explanation shares: its arithmetic checked against the op it explains, float32's overflow as the
op's own, and JSON of its data."""

from __future__ import annotations

import functools
from dataclasses import asdict, is_dataclass

import numpy as np

from cnnx.sources.source import StageSource

__all__ = ["agree", "as_float32_does", "as_json", "every_stage", "written"]

def written(values: np.ndarray, weights: np.ndarray, total: float) -> str:
    terms = " + ".join(f"({v:g}*{w:g})" for v, w in zip(values.ravel(), weights.ravel(), strict=True))
    return f"{terms} = {total:g}"


def as_float32_does(explain):
    """An explanation's arithmetic overflows and meets NaN as the op's own float32 does: to inf and NaN, shown as
    such, with no warning beside them."""

    @functools.wraps(explain)
    def quietly(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return explain(*args, **kwargs)

    return quietly


def agree(computed: np.ndarray, shown: np.ndarray, what: str, op: str) -> None:
    """The arithmetic shown must be what the op computes; a difference is a bug in cnnx, never the user's."""
    finite = np.abs(shown[np.isfinite(shown)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    # NaN and infinities (from weights or input that hold them) agree when both sides have them in the same place.
    if not np.allclose(computed, shown, atol=1e-5 * scale, equal_nan=True):
        raise RuntimeError(f"the {what} shown disagree with {op}")


def as_json(data) -> object:
    """Dataclasses (and lists of them) as plain JSON-ready values."""
    if isinstance(data, list):
        return [as_json(item) for item in data]
    return asdict(data) if is_dataclass(data) else data


def every_stage(source: StageSource, image: np.ndarray) -> list:
    """Every stage's record of a source on a loaded image."""
    return list(source.stream(source.prepare(image)))
