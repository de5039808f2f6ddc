"""Which values a picture's colours stand for: a map's range (symmetric, min-max, percentile, fixed), the style
that chooses it, and the placing of a value on the 256-colour table, linearly or on the square-root scale, and
back.

A map is drawn by choosing the values ``low`` and ``high`` that the ends of a
256-colour table stand for, placing every value on the table (clipping
outside), and looking the colours up.  A value is placed linearly, or with
the ``sqrt`` stretch at a distance from the zero colour in proportion to the
square root of its distance from zero, so faint structure is seen next to
strong edges.  The ``low``, ``high`` and stretch are recorded with every
picture, so a pixel maps back to its value (``to_value``); linearly,
``value = low + index / 255 * (high - low)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnx.base.choices import DEFAULT_PERCENTILE, NORMALIZE, SCOPES, STRETCHES
from cnnx.base.errors import CnnxError
from cnnx.base.runtime import buffer, run_tasks
from cnnx.render.colours import colormap

PERCENTILE_SAMPLE = 1 << 20  # values a percentile is taken over, at most: every n-th of a larger map
PERCENTILE_LEAST = 1000  # values a percentile needs: below it, a few scores or weights are drawn as they are


def value_range(
    values: np.ndarray,
    method: str,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    fixed=None,
    extremes: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The values the darkest-first and last colours stand for, by ``method``.

    - symmetric: ``(-m, m)`` with ``m`` the largest magnitude, so zero is the centre colour;
    - minmax: the smallest and largest value;
    - percentile: ``(-m, m)`` with ``m`` the ``percentile`` of the magnitudes: a few outliers do not wash out the
      rest (they are drawn in the end colours, and counted as clipped);
    - fixed: the given ``(low, high)``.

    With symmetric and percentile, values that are never negative (a blur, a
    ReLU, probabilities) get ``(0, m)``: all the colours go to what is there.

    A range of no width (a constant map) is widened by 1 on each side, so the
    constant is drawn with the middle colour and nothing is divided by zero.
    Non-finite values are ignored.  ``extremes``, the values' known minimum
    and maximum, saves two passes over them.

    Examples
    --------
    >>> value_range(np.array([-2.0, 1.0]), "symmetric")
    (-2.0, 2.0)
    >>> value_range(np.array([0.0, 0.5, 2.0]), "symmetric")
    (0.0, 2.0)
    >>> value_range(np.zeros(3), "minmax")
    (-1.0, 1.0)
    """
    if values.size == 0:
        return -1.0, 1.0
    low, high = extremes if extremes is not None else (float(np.min(values)), float(np.max(values)))
    # min and max are NaN or infinite exactly when some value is: only then pick the finite ones.
    finite = values if np.isfinite(low) and np.isfinite(high) else values[np.isfinite(values)]
    if method == "fixed":
        if fixed is None:
            raise CnnxError("normalize=fixed needs a range, e.g. --range -1,1")
        low, high = float(fixed[0]), float(fixed[1])
    elif finite.size == 0:
        low, high = 0.0, 0.0
    elif method == "symmetric":
        smallest = low if finite is values else float(finite.min())
        largest = high if finite is values else float(finite.max())
        bound = max(-smallest, largest)
        low, high = (0.0 if smallest >= 0 else -bound), bound
    elif method == "minmax":
        low, high = float(finite.min()), float(finite.max())
    elif method == "percentile" and finite.size < PERCENTILE_LEAST:  # too few values to speak of outliers
        return value_range(finite, "symmetric")
    elif method == "percentile":
        # Every n-th value of a large map: a fixed sample keeps the result deterministic and the memory small.
        sample = finite.ravel()[:: max(1, finite.size // PERCENTILE_SAMPLE)]
        magnitudes = np.abs(sample)  # a copy of its own, so it is partitioned in place
        rank = min(magnitudes.size - 1, round(percentile / 100 * (magnitudes.size - 1)))
        magnitudes.partition(rank)
        bound = float(magnitudes[rank])
        smallest = low if finite is values else float(finite.min())
        low, high = (0.0 if smallest >= 0 else -bound), bound
    else:
        raise CnnxError(f"normalize must be one of {', '.join(NORMALIZE)}; got {method!r}")
    if high <= low:
        middle = (low + high) / 2
        low, high = middle - 1.0, middle + 1.0
    return low, high


@dataclass(frozen=True)
class Style:
    """How values become pixels; see ``draw.value_range`` for the methods.

    ``scope`` is what shares one range: each map, each stage, each conv block
    (a conv stage and the stages after it up to the next conv: the conv's range
    is carried through its ReLU and pooling, so a colour means one value across
    them; a dense layer and a softmax start blocks too), or the whole pipeline.
    ``stretch`` auto draws the percentile range with sqrt and the exact ranges linearly.
    """

    normalize: str = "percentile"
    scope: str = "block"
    cmap: str = "diverging"
    percentile: float = DEFAULT_PERCENTILE
    fixed: tuple[float, float] | None = None
    min_side: int = 128
    montage_limit: int = 64
    stretch: str = "auto"

    def __post_init__(self):
        if self.normalize not in NORMALIZE:
            raise CnnxError(f"normalize must be one of {', '.join(NORMALIZE)}; got {self.normalize!r}")
        if self.scope not in SCOPES:
            raise CnnxError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        if self.normalize == "fixed" and (self.fixed is None or not self.fixed[0] < self.fixed[1]):
            raise CnnxError("normalize=fixed needs --range LOW,HIGH with LOW < HIGH")
        if self.fixed is not None and not all(math.isfinite(v) for v in self.fixed):
            raise CnnxError(f"--range takes finite numbers; got {self.fixed[0]},{self.fixed[1]}")
        if not 0 < self.percentile <= 100:
            raise CnnxError(f"percentile must be in (0, 100]; got {self.percentile}")
        if self.stretch not in STRETCHES:
            raise CnnxError(f"stretch must be one of {', '.join(STRETCHES)}; got {self.stretch!r}")
        colormap(self.cmap)  # an unknown colour map is an error before any work

    @property
    def clips(self) -> bool:
        """Whether a range may leave values out: only when it is not the values' own extremes."""
        return self.normalize in ("percentile", "fixed")

    @property
    def curve(self) -> str:
        """The stretch maps are drawn with: ``sqrt`` or ``linear``."""
        if self.stretch == "auto":
            return "sqrt" if self.normalize == "percentile" else "linear"
        return self.stretch

    def range_of(self, values: np.ndarray, extremes: tuple[float, float] | None = None) -> tuple[float, float]:
        return value_range(values, self.normalize, percentile=self.percentile, fixed=self.fixed, extremes=extremes)


def to_index(fmap: np.ndarray, low: float, high: float, stretch: str = "linear") -> np.ndarray:
    """Colour-table indices 0..255: ``low`` is 0, ``high`` 255, placed by ``stretch`` and rounded between, clipped
    outside (NaN is 0).

    Done a band of rows at a time on the ops' threads, so the float temporary stays small and in cache.
    """
    return indexed(fmap, low, high, stretch=stretch).index


def to_value(index: np.ndarray, low: float, high: float, stretch: str = "linear") -> np.ndarray:
    """The value each index stands for: the inverse of ``to_index`` (to within half a colour)."""
    place = np.asarray(index, np.float64) / 255
    if stretch == "sqrt":
        zero = _zero_place(low, high)
        side = np.where(place >= zero, 1 - zero, zero)
        place = zero + np.sign(place - zero) * (place - zero) ** 2 / np.where(side > 0, side, 1)
    return low + place * (high - low)


def _zero_place(low: float, high: float) -> float:
    """Where the sqrt stretch is steepest, as a share of the range: zero, or the end nearer to it."""
    return float(np.clip(-low / (high - low), 0.0, 1.0))


@dataclass(frozen=True)
class Indexed:
    """A map's colour-table indices, and how many of its values lay below ``low`` and above ``high``."""

    index: np.ndarray
    below: int = 0
    above: int = 0

    @property
    def clipped(self) -> tuple[float, float]:
        """The shares of the values drawn in the end colours only because they lie beyond them."""
        size = max(self.index.size, 1)
        return self.below / size, self.above / size


def indexed(fmap: np.ndarray, low: float, high: float, *, count: bool = False, stretch: str = "linear") -> Indexed:
    """``to_index``, and with ``count`` the values beyond each end, counted while each band is still in cache."""
    fmap = np.asarray(fmap, np.float32)
    place = _linear_band(low, high) if stretch == "linear" else _sqrt_band(low, high)
    out = np.empty(fmap.shape, np.uint8)
    width = fmap.shape[-1] if fmap.ndim else 1
    rows, index = fmap.reshape(-1, width), out.reshape(-1, width)
    step = max(1, (1 << 18) // width)
    starts = list(range(0, rows.shape[0], step))
    beyond = [(0, 0)] * len(starts)

    def work(k: int, scratch: dict) -> None:
        first = starts[k]
        band = rows[first : first + step]
        chunk, beyond[k] = place(band, buffer(scratch, "index", band.shape), scratch, count)
        if np.isnan(chunk.max()):  # NaN survives clip; only then the slower pass that makes it 0
            np.nan_to_num(chunk, copy=False, nan=0.0)
        index[first : first + step] = chunk

    run_tasks(list(range(len(starts))), work)
    return Indexed(out, sum(b for b, _ in beyond), sum(a for _, a in beyond))


def _linear_band(low: float, high: float):
    """Places a band of values at index + 0.5 in [0.5, 255.5] (truncated to its index), and counts what is beyond."""
    scale = np.float32(255.0 / (high - low))
    offset = np.float32(0.5) - np.float32(low) * scale

    def place(band: np.ndarray, chunk: np.ndarray, scratch: dict, count: bool) -> tuple[np.ndarray, tuple[int, int]]:
        np.multiply(band, scale, out=chunk)
        chunk += offset
        beyond = (int(np.count_nonzero(chunk < 0.5)), int(np.count_nonzero(chunk > 255.5))) if count else (0, 0)
        return np.clip(chunk, 0, 255, out=chunk), beyond

    return place


def _sqrt_band(low: float, high: float):
    """``_linear_band`` for the sqrt stretch: a value ``c`` from the zero place is drawn ``sqrt(|c| * K)`` indices
    from it, with ``K`` such that each end stays where it is.  Worked out in place, sign bit and all: a table
    look-up of a finer linear place costs twice as much."""
    zero = _zero_place(low, high)
    origin = min(max(0.0, low), high)  # the value at the zero place
    span = high - low
    below, above = np.float32(low - origin), np.float32(high - origin)
    k_below, k_above = 255.0**2 * zero / span, 255.0**2 * (1 - zero) / span
    centre = np.float32(255 * zero + 0.5)

    def place(band: np.ndarray, chunk: np.ndarray, scratch: dict, count: bool) -> tuple[np.ndarray, tuple[int, int]]:
        shifted = np.subtract(band, np.float32(origin), out=chunk) if origin else band
        beyond = (int(np.count_nonzero(shifted < below)), int(np.count_nonzero(shifted > above))) if count else (0, 0)
        np.clip(shifted, below, above, out=chunk)
        bits = chunk.view(np.uint32)
        sign = np.bitwise_and(bits, np.uint32(0x80000000), out=buffer(scratch, "sign", band.shape, np.uint32))
        size = np.bitwise_and(bits, np.uint32(0x7FFFFFFF), out=bits).view(np.float32)  # |c|, in place
        if k_below and k_above and k_below != k_above:  # zero inside, the sides unequal: each its own K
            size *= np.where(sign, np.float32(k_below), np.float32(k_above))
        else:
            size *= np.float32(k_below or k_above)
        np.sqrt(size, out=size)
        np.bitwise_or(bits, sign, out=bits)  # the sign back
        size += centre
        return size, beyond

    return place
