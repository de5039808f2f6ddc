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

from cnnx.choices import NORMALIZE, SCOPES
from cnnx.errors import CnnxError
from cnnx.runtime import buffer, run_tasks

__all__ = [
    "CMAP_ALIASES",
    "NORMALIZE",
    "SCOPES",
    "Style",
    "colorbar",
    "colorize",
    "colormap",
    "format_number",
    "kernel_sheet",
    "pair_text",
    "shape_text",
    "column",
    "montage",
    "thumbnail",
    "to_index",
    "upscale",
    "value_range",
]

PERCENTILE_SAMPLE = 1 << 22  # values a percentile is taken over, at most
MIN_THICKNESS = 24  # pixels: the least height a drawn map gets
# Short names for the maps cnnx suggests; any other name of the cmap package works too.
CMAP_ALIASES = {
    "gray": "matlab:gray",
    "viridis": "bids:viridis",  # perceptually uniform, lightness rising (van der Walt & Smith, CC0)
    "diverging": "colorbrewer:RdBu_r",  # blue below zero, white at zero, red above (ColorBrewer, Apache-2.0)
}
BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)


def value_range(
    values: np.ndarray,
    method: str,
    *,
    percentile: float = 99.5,
    fixed=None,
    extremes: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The values the darkest-first and last colours stand for, by ``method``.

    - symmetric: ``(-m, m)`` with ``m`` the largest magnitude, so zero is the centre colour;
    - minmax: the smallest and largest value;
    - percentile: ``(-m, m)`` with ``m`` the ``percentile`` of the magnitudes: a few outliers do not wash out the rest;
    - fixed: the given ``(low, high)``.

    A range of no width (a constant map) is widened by 1 on each side, so the
    constant is drawn with the middle colour and nothing is divided by zero.
    Non-finite values are ignored.  ``extremes``, the values' known minimum
    and maximum, saves two passes over them.

    Examples
    --------
    >>> value_range(np.array([-2.0, 1.0]), "symmetric")
    (-2.0, 2.0)
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
        bound = max(-float(finite.min()), float(finite.max()))
        low, high = -bound, bound
    elif method == "minmax":
        low, high = float(finite.min()), float(finite.max())
    elif method == "percentile":
        # Every n-th value of a large map: a fixed sample keeps the result deterministic and the memory small.
        sample = finite.ravel()[:: max(1, finite.size // PERCENTILE_SAMPLE)]
        bound = float(np.percentile(np.abs(sample), percentile))
        low, high = -bound, bound
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

    normalize: str = "symmetric"
    scope: str = "block"
    cmap: str = "diverging"
    percentile: float = 99.5
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
    fmap = np.asarray(fmap, np.float32)
    scale = np.float32(255.0 / (high - low))
    offset = np.float32(0.5) - np.float32(low) * scale
    out = np.empty(fmap.shape, np.uint8)
    width = fmap.shape[-1] if fmap.ndim else 1
    rows, index = fmap.reshape(-1, width), out.reshape(-1, width)
    step = max(1, (1 << 18) // width)

    def work(first: int, scratch: dict) -> None:
        band = rows[first : first + step]
        chunk = np.multiply(band, scale, out=buffer(scratch, "index", band.shape))
        chunk += offset
        np.clip(chunk, 0, 255, out=chunk)
        if np.isnan(chunk.max()):  # NaN survives clip; only then the slower pass that makes it 0
            np.nan_to_num(chunk, copy=False, nan=0.0)
        index[first : first + step] = chunk

    run_tasks(list(range(0, rows.shape[0], step)), work)
    return out


@lru_cache(maxsize=16)
def colormap(name: str) -> np.ndarray | None:
    """The 256 x 3 uint8 colour table of a map name; None for gray (drawn as 8-bit grey, 0 black)."""
    full = CMAP_ALIASES.get(name, name)
    if full == "matlab:gray":
        return None
    try:
        from cmap import Colormap

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


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
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


def thumbnail(index: np.ndarray, table: np.ndarray | None, size: int) -> Image.Image:
    """A tile of a map's colour indices whose longer side is ``size``.

    Small maps are enlarged by whole factors (crisp squares); large ones are
    first thinned to every n-th pixel, down to twice the size, then averaged
    (as indices, so the average is that of the values, then coloured).
    """
    step = max(1, max(index.shape) // (2 * size))
    # Indices are resized before they are coloured: averaging indices averages the values they stand for.
    image = Image.fromarray(np.ascontiguousarray(index[::step, ::step]))
    longest = max(image.size)
    if longest < size:
        factor = max(1, size // longest)
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
    table: np.ndarray | None, low: float, high: float, width: int, *, ends: tuple[str, str] | None = None
) -> Image.Image:
    """A horizontal bar of the colour table, labelled with the values its ends (and zero, inside) stand for.

    ``ends`` replaces the numbers at the ends by words (when each map has its own range).
    """
    font = _font(11)
    ramp = np.linspace(0, 255, max(width - 20, 16)).round().astype(np.uint8)
    strip = colorize(np.tile(ramp, (12, 1)), table)
    bar = Image.new("RGB", (width, 32), BACKGROUND)
    bar.paste(_as_rgb(strip), (10, 2))
    draw = ImageDraw.Draw(bar)
    left, right = ends or (format_number(low), format_number(high))
    draw.text((10, 16), left, fill=INK, font=font)
    draw.text((10 + len(ramp) - font.getlength(right), 16), right, fill=INK, font=font)
    if ends is None and low < 0 < high:
        x = 10 + round((0 - low) / (high - low) * (len(ramp) - 1))
        draw.line([(x, 2), (x, 14)], fill=INK)
        if abs(x - 10) > 30 and abs(x - 10 - len(ramp)) > 30:
            draw.text((x - font.getlength("0") / 2, 16), "0", fill=INK, font=font)
    return bar


def montage(
    thumbs: list[Image.Image], labels: list[str], title: str, bars: list[Image.Image], *, columns: int = 8
) -> Image.Image:
    """A contact sheet: a title, the thumbnails in a grid each with its label, then colour bars."""
    font = _font(12)
    cell_w = max(t.width for t in thumbs) + 8
    cell_h = max(t.height for t in thumbs) + 20
    ncols = min(columns, len(thumbs))
    nrows = math.ceil(len(thumbs) / ncols)
    width = max(ncols * cell_w + 8, max((b.width for b in bars), default=0) + 8, 320)
    height = 26 + nrows * cell_h + sum(b.height for b in bars) + 6
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 6), _fit(title, width - 12, _font(14)), fill=INK, font=_font(14))
    for k, (thumb, label) in enumerate(zip(thumbs, labels, strict=True)):
        x, y = 4 + (k % ncols) * cell_w, 26 + (k // ncols) * cell_h
        sheet.paste(thumb, (x + 4, y))
        draw.text((x + 4, y + thumb.height + 3), _fit(label, cell_w - 8, font), fill=INK, font=font)
    y = 26 + nrows * cell_h
    for bar in bars:
        sheet.paste(bar, (0, y))
        y += bar.height
    return sheet


def column(title: str, tiles: list[Image.Image], more: int, *, size: int = 128) -> Image.Image:
    """One stage of the overview: a title over its first maps, stacked, and how many more there are."""
    font = _font(12)
    thumbs = [
        tile if max(tile.size) <= size else tile.resize(_fitted(tile.size, size), Image.Resampling.BOX)
        for tile in tiles
    ]
    width = max(max(t.width for t in thumbs) + 12, int(font.getlength(title)) + 12)
    height = 22 + sum(t.height + 6 for t in thumbs) + (18 if more else 0)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=INK, font=font)
    y = 22
    for thumb in thumbs:
        image.paste(thumb, (6, y))
        y += thumb.height + 6
    if more:
        draw.text((6, y), f"+ {more} more", fill=INK, font=font)
    return image


def kernel_sheet(layers: list[np.ndarray], names: list[str], cell: int = 8) -> Image.Image:
    """Every kernel of each conv layer as a small heat map (blue below zero, red above), a row per output filter."""
    table = colormap("diverging")
    font = _font(12)
    blocks = []
    for weights, name in zip(layers, names, strict=True):
        low, high = value_range(weights, "symmetric")
        O, C, kh, kw = weights.shape
        block = Image.new("RGB", (C * (kw * cell + 4) + 8, O * (kh * cell + 4) + 24), BACKGROUND)
        ImageDraw.Draw(block).text(
            (4, 4), f"{name}: {O} filters x {C} channels, {low:.2g}..{high:.2g}", fill=INK, font=font
        )
        for o in range(O):
            for c in range(C):
                tile = picture(upscale(to_index(weights[o, c], low, high), min_side=kh * cell), table)
                block.paste(tile.convert("RGB"), (4 + c * (kw * cell + 4), 22 + o * (kh * cell + 4)))
        blocks.append(block)
    sheet = Image.new(
        "RGB", (sum(b.width for b in blocks) + 8 * len(blocks), max(b.height for b in blocks)), BACKGROUND
    )
    x = 0
    for block in blocks:
        sheet.paste(block, (x, 0))
        x += block.width + 8
    return sheet
