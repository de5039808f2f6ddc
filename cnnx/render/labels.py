"""Words on pictures: the font, text drawn once and stamped, and numbers, shapes and pairs written as cnnx writes
them."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own scalable font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)
def text_width(text: str, size: int = 13) -> float:
    """Pixels ``text`` takes at ``size``; asked again and again while labels are laid out."""
    return font(size).getlength(text)


@lru_cache(maxsize=4096)
def _matte(text: str, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """``text`` at ``size`` pixels rendered once as a matte, and its offset from the point it is written at."""
    left, top, right, bottom = font(size).getbbox(text)
    matte = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(matte).text((-left, -top), text, fill=255, font=font(size))
    return matte, (left, top)


def write(drawer: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int = 13) -> None:
    """``text`` in ink at ``xy``: each text is rendered once and stamped after, as a run repeats its labels."""
    matte, (left, top) = _matte(text, size)
    drawer.bitmap((round(xy[0]) + left, round(xy[1]) + top), matte, fill=INK)


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
