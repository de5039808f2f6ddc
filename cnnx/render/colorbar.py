"""A colour bar: the table as a strip, labelled with the values its ends (and zero) stand for, arrows where values
lie beyond them, and a note where the square-root scale is used."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnx.render.colours import as_rgb, colorize
from cnnx.render.labels import BACKGROUND, INK, format_number, text_width, write
from cnnx.render.ranges import to_index


def colorbar(
    table: np.ndarray | None,
    low: float,
    high: float,
    width: int,
    *,
    ends: tuple[str, str] | None = None,
    clipped: tuple[float, float] = (0.0, 0.0),
    stretch: str = "linear",
) -> Image.Image:
    """A horizontal bar of the colour table, labelled with the values its ends (and zero, inside) stand for.

    ``ends`` replaces the numbers at the ends by words (when each map has its
    own range).  Where values lie beyond an end (``clipped``, the shares below
    and above), that end is an arrow and says so: ``<= -1.2`` and how much.
    With the sqrt stretch, ticks mark a quarter of each end's value, drawn half
    way to it, and a line under the bar says so.
    """
    arrow = 9
    left_x = 10 + arrow
    ramp = np.linspace(0, 255, max(width - 20 - 2 * arrow, 16)).round().astype(np.uint8)
    notes = []
    if stretch == "sqrt":
        notes.append(("square-root scale: a quarter of an end's value is drawn half way to it", "square-root scale",
                      "sqrt scale"))
    if any(clipped):
        share = sum(clipped)
        notes.append((f"{share:.2%} of the values lie beyond the ends and are drawn in the end colours",
                      f"{share:.2%} beyond the ends", f"{share:.2%} beyond"))
    strip = colorize(np.tile(ramp, (14, 1)), table)
    bar = Image.new("RGB", (width, 34 + 15 * len(notes)), BACKGROUND)
    bar.paste(as_rgb(strip), (left_x, 2))
    draw = ImageDraw.Draw(bar)
    colours = as_rgb(colorize(np.array([[0, 255]], np.uint8), table)).getpixel
    if clipped[0]:
        draw.polygon([(left_x - 1, 2), (left_x - 1, 15), (left_x - arrow, 9)], fill=colours((0, 0)), outline=INK)
    if clipped[1]:
        end = left_x + len(ramp)
        draw.polygon([(end, 2), (end, 15), (end + arrow - 1, 9)], fill=colours((1, 0)), outline=INK)
    left, right = ends or (format_number(low), format_number(high))
    left, right = ("<= " if clipped[0] else "") + left, (">= " if clipped[1] else "") + right
    write(draw, (left_x, 18), left, 12)
    write(draw, (left_x + len(ramp) - text_width(right, 12), 18), right, 12)
    taken = [(left_x, left_x + text_width(left, 12)), (left_x + len(ramp) - text_width(right, 12), left_x + len(ramp))]
    if ends is None:
        _ticks(draw, low, high, stretch, left_x, len(ramp), taken)
    for line, forms in enumerate(notes):  # the longest form that fits
        shown = next((form for form in forms if text_width(form, 11) < width - 20), forms[-1])
        write(draw, (left_x, 33 + 15 * line), shown, 11)
    return bar


def _ticks(draw: ImageDraw.ImageDraw, low: float, high: float, stretch: str, left_x: int, length: int,
           taken: list[tuple[float, float]]) -> None:
    """Zero, inside the range, and with the sqrt stretch a quarter of each end's value: a tick each, labelled where
    the label does not run into another (``taken``: the spans already written)."""
    ticks = [0.0] if low < 0 < high else []
    if stretch == "sqrt":
        origin = min(max(0.0, low), high)
        ticks += [origin + (end - origin) / 4 for end in (low, high) if end != origin]
    for value in ticks:
        place = float(to_index(np.array([value], np.float32), low, high, stretch)[0]) / 255
        x = left_x + round(place * (length - 1))
        draw.line([(x, 2), (x, 16)], fill=INK)
        text = format_number(value) if value else "0"
        span = (x - text_width(text, 12) / 2 - 6, x + text_width(text, 12) / 2 + 6)
        if all(span[1] < a or span[0] > b for a, b in taken):
            write(draw, (span[0] + 6, 18), text, 12)
            taken.append(span)
