"""Turning feature maps into pictures: value ranges, colour maps, enlargement, colour bars and montages.

A map is drawn by choosing the values ``low`` and ``high`` that the ends of a
256-colour table stand for, mapping every value linearly onto the table
(clipping outside), and looking the colours up.  The chosen ``low`` and
``high`` are recorded with every picture, so a pixel maps back to its value:
``value = low + index / 255 * (high - low)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnx.choices import DEFAULT_PERCENTILE, NORMALIZE, SCOPES
from cnnx.errors import CnnxError
from cnnx.runtime import buffer, run_tasks

__all__ = [
    "CMAP_ALIASES",
    "NORMALIZE",
    "SCOPES",
    "Style",
    "colorbar",
    "colorize",
    "font",
    "indexed",
    "colormap",
    "format_number",
    "pair_text",
    "shape_text",
    "thumbnail",
    "to_index",
    "upscale",
    "value_range",
]

PERCENTILE_SAMPLE = 1 << 20  # values a percentile is taken over, at most: every n-th of a larger map
PERCENTILE_LEAST = 1000  # values a percentile needs: below it, a few scores or weights are drawn as they are
MIN_THICKNESS = 24  # pixels: the least height a drawn map gets
# Short names for the maps cnnx suggests; any other name of the cmap package works too.
CMAP_ALIASES = {
    "gray": "matlab:gray",
    "viridis": "bids:viridis",  # perceptually uniform, lightness rising (van der Walt & Smith, CC0)
    "diverging": "colorbrewer:RdBu_r",  # blue below zero, white at zero, red above (ColorBrewer, Apache-2.0)
    "positive": "colorbrewer:RdBu_r",  # its upper half: white at zero to red, for values never below zero
}
BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)


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
    """

    normalize: str = "percentile"
    scope: str = "block"
    cmap: str = "diverging"
    percentile: float = DEFAULT_PERCENTILE
    fixed: tuple[float, float] | None = None
    min_side: int = 128
    montage_limit: int = 64

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
        colormap(self.cmap)  # an unknown colour map is an error before any work

    def range_of(self, values: np.ndarray, extremes: tuple[float, float] | None = None) -> tuple[float, float]:
        return value_range(values, self.normalize, percentile=self.percentile, fixed=self.fixed, extremes=extremes)


def to_index(fmap: np.ndarray, low: float, high: float) -> np.ndarray:
    """Colour-table indices 0..255: ``low`` is 0, ``high`` 255, linear and rounded between, clipped outside (NaN is 0).

    Done a band of rows at a time on the ops' threads, so the float temporary stays small and in cache.
    """
    return indexed(fmap, low, high).index


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


def indexed(fmap: np.ndarray, low: float, high: float, *, count: bool = False) -> Indexed:
    """``to_index``, and with ``count`` the values beyond each end, counted while each band is still in cache."""
    fmap = np.asarray(fmap, np.float32)
    scale = np.float32(255.0 / (high - low))
    offset = np.float32(0.5) - np.float32(low) * scale
    out = np.empty(fmap.shape, np.uint8)
    width = fmap.shape[-1] if fmap.ndim else 1
    rows, index = fmap.reshape(-1, width), out.reshape(-1, width)
    step = max(1, (1 << 18) // width)
    starts = list(range(0, rows.shape[0], step))
    beyond = [(0, 0)] * len(starts)

    def work(k: int, scratch: dict) -> None:
        first = starts[k]
        band = rows[first : first + step]
        chunk = np.multiply(band, scale, out=buffer(scratch, "index", band.shape))
        chunk += offset
        if count:  # low stands at 0.5 and high at 255.5 here: beyond them, a value is drawn clipped
            beyond[k] = (int(np.count_nonzero(chunk < 0.5)), int(np.count_nonzero(chunk > 255.5)))
        np.clip(chunk, 0, 255, out=chunk)
        if np.isnan(chunk.max()):  # NaN survives clip; only then the slower pass that makes it 0
            np.nan_to_num(chunk, copy=False, nan=0.0)
        index[first : first + step] = chunk

    run_tasks(list(range(len(starts))), work)
    return Indexed(out, sum(b for b, _ in beyond), sum(a for _, a in beyond))


@lru_cache(maxsize=16)
def colormap(name: str) -> np.ndarray | None:
    """The 256 x 3 uint8 colour table of a map name; None for gray (drawn as 8-bit grey, 0 black).

    ``positive`` is the upper half of ``diverging`` spread over all 256 colours:
    white at zero to dark red, for values that are never negative.
    """
    full = CMAP_ALIASES.get(name, name)
    if full == "matlab:gray":
        return None
    try:
        from cmap import Colormap

        if name == "positive":
            table = Colormap(CMAP_ALIASES["diverging"]).lut(512)[256:, :3]
        else:
            table = Colormap(full).lut(256)[:, :3]
    except (ValueError, KeyError, TypeError):
        raise CnnxError(
            f"unknown colour map {name!r}; try {', '.join(CMAP_ALIASES)} or any name the cmap package knows"
        ) from None
    return np.round(table * 255).astype(np.uint8)


def colorize(index: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """Indices to pixels: grey levels as they are, or the table's colours (H, W, 3)."""
    return index if table is None else table[index]


def picture(index: np.ndarray, table: np.ndarray | None) -> Image.Image:
    """An 8-bit picture of colour-table indices: grey ("L"), or a palette image ("P") of the table's colours.

    A palette PNG stores one byte a pixel, a third of RGB to compress, and
    keeps each pixel's index (its value's place on the scale) as it is.
    """
    index = np.ascontiguousarray(index)
    if table is None:
        return Image.fromarray(index)
    image = Image.frombuffer("P", index.shape[::-1], index, "raw", "P", 0, 1)
    image.putpalette(table.ravel().tolist())
    return image


def upscale(pixels: np.ndarray, *, min_side: int = 128, max_side: int = 2048) -> np.ndarray:
    """Repeat each pixel as a square (nearest neighbour) until the shorter side is at least ``min_side``.

    The factor is a whole number, so every source pixel stays a crisp square,
    and it never makes the longer side exceed ``max_side``; only a map too long
    for that (a row of a thousand values) has its rows repeated further, to
    ``MIN_THICKNESS`` pixels.
    """
    H, W = pixels.shape[:2]
    factor = min(math.ceil(min_side / min(H, W)), max(1, max_side // max(H, W)))
    # A long thin map (a flattened vector) cannot grow enough in both directions: its rows grow further, to be seen.
    rows = max(factor, math.ceil(MIN_THICKNESS / H)) if H * factor < MIN_THICKNESS else factor
    if rows <= 1 and factor <= 1:
        return pixels
    return np.repeat(np.repeat(pixels, rows, axis=0), factor, axis=1)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own scalable font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def _fit(text: str, width: int, font) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _as_rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).convert("RGB")


def thumbnail(index: np.ndarray, table: np.ndarray | None, size: int, *, within: bool = False) -> Image.Image:
    """A tile of a map's colour indices whose longer side is ``size`` (or a little more, for a small map).

    ``within`` keeps a small map's tile within ``size`` instead (the largest whole factor that fits).

    Small maps are enlarged by whole factors (crisp squares); large ones are
    first thinned to every n-th pixel, down to twice the size, then averaged
    (as indices, so the average is that of the values, then coloured).
    """
    step = max(1, max(index.shape) // (2 * size))
    # Indices are resized before they are coloured: averaging indices averages the values they stand for.
    image = Image.fromarray(np.ascontiguousarray(index[::step, ::step]))
    longest = max(image.size)
    if longest < size:
        # Whole, so each value stays a crisp square: at least ``size``, or at most with ``within``.
        factor = max(1, size // longest) if within else -(-size // longest)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    elif longest > size:
        image = image.resize(_fitted(image.size, size), Image.Resampling.BOX)
    if image.height < MIN_THICKNESS // 2:  # a row of values: thick enough to see
        image = image.resize((image.width, MIN_THICKNESS // 2), Image.Resampling.NEAREST)
    return picture(np.asarray(image), table).convert("RGB")


def _fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def shape_text(shape: tuple[int, ...]) -> str:
    """``4x300x451``."""
    return "x".join(map(str, shape))


def pair_text(pair: tuple[int, int]) -> str:
    """A size of rows and columns: ``3`` when square, else ``3x5``."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def format_number(value: float | None) -> str:
    """Three significant digits in at most 6 characters (a magnitude under 0.01 as 1e-03), for bars and tables.

    None (no finite value to show) is a dash.
    """
    if value is None:
        return "-"
    if value and abs(value) < 1e-2:
        return f"{value:.0e}"
    return f"{value:.3g}"


def colorbar(
    table: np.ndarray | None,
    low: float,
    high: float,
    width: int,
    *,
    ends: tuple[str, str] | None = None,
    clipped: tuple[float, float] = (0.0, 0.0),
) -> Image.Image:
    """A horizontal bar of the colour table, labelled with the values its ends (and zero, inside) stand for.

    ``ends`` replaces the numbers at the ends by words (when each map has its
    own range).  Where values lie beyond an end (``clipped``, the shares below
    and above), that end is an arrow and says so: ``<= -1.2`` and how much.
    """
    face = font(12)
    arrow = 9
    left_x = 10 + arrow
    ramp = np.linspace(0, 255, max(width - 20 - 2 * arrow, 16)).round().astype(np.uint8)
    strip = colorize(np.tile(ramp, (14, 1)), table)
    bar = Image.new("RGB", (width, 50 if any(clipped) else 34), BACKGROUND)
    bar.paste(_as_rgb(strip), (left_x, 2))
    draw = ImageDraw.Draw(bar)
    colours = _as_rgb(colorize(np.array([[0, 255]], np.uint8), table)).getpixel
    if clipped[0]:
        draw.polygon([(left_x - 1, 2), (left_x - 1, 15), (left_x - arrow, 9)], fill=colours((0, 0)), outline=INK)
    if clipped[1]:
        end = left_x + len(ramp)
        draw.polygon([(end, 2), (end, 15), (end + arrow - 1, 9)], fill=colours((1, 0)), outline=INK)
    left, right = ends or (format_number(low), format_number(high))
    left, right = ("<= " if clipped[0] else "") + left, (">= " if clipped[1] else "") + right
    draw.text((left_x, 18), left, fill=INK, font=face)
    draw.text((left_x + len(ramp) - face.getlength(right), 18), right, fill=INK, font=face)
    if ends is None and low < 0 < high:
        x = left_x + round((0 - low) / (high - low) * (len(ramp) - 1))
        draw.line([(x, 2), (x, 16)], fill=INK)
        if abs(x - left_x) > 40 and abs(x - left_x - len(ramp)) > 40:
            draw.text((x - face.getlength("0") / 2, 18), "0", fill=INK, font=face)
    if any(clipped):
        share = sum(clipped)
        note = f"{share:.2%} of the values lie beyond the ends and are drawn in the end colours"
        draw.text((left_x, 33), note if face.getlength(note) < width - 20 else f"{share:.2%} beyond the ends",
                  fill=INK, font=font(11))
    return bar
