"""Colour tables and pictures: a table by name (cmap's, with cnnx's short names), indices coloured, maps enlarged
so that each value is a visible square, and thumbnails."""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
from PIL import Image

from cnnx.base.errors import CnnxError

# cmap logs, for programmers, that a short name such as RdBu is in several catalogues (it takes ColorBrewer's);
# with no handler of its own that line would reach the terminal.
logging.getLogger("cmap").addHandler(logging.NullHandler())

MIN_THICKNESS = 24  # pixels: the least height a drawn map gets
# Short names for the maps cnnx suggests; any other name of the cmap package works too.
CMAP_ALIASES = {
    "gray": "matlab:gray",
    "viridis": "bids:viridis",  # perceptually uniform, lightness rising (van der Walt & Smith, CC0)
    "diverging": "colorbrewer:RdBu_r",  # blue below zero, white at zero, red above (ColorBrewer, Apache-2.0)
    "positive": "colorbrewer:RdBu_r",  # its upper half: white at zero to red, for values never below zero
}


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


def as_rgb(pixels: np.ndarray) -> Image.Image:
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
