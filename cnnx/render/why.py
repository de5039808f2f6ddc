"""The pictures of ``cnnx why``: the map alone, and the map over the image as the model saw it with a colour bar and
the method, the target and the answer in words.

A signed map (input times gradient, integrated gradients, occlusion) is drawn
on the diverging table, blue against and red for the target, white at zero; a
map never below zero (saliency, SmoothGrad, Grad-CAM) from black through red
to yellow.  Both are ranged at the 99.5th percentile of their magnitudes, so a
few extreme pixels do not hide the rest; the colour bar counts those beyond
its ends.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnx.render.colorbar import colorbar
from cnnx.render.colours import colorize, colormap, upscale
from cnnx.render.labels import BACKGROUND, INK, text_width, write
from cnnx.render.ranges import indexed, value_range

PERCENTILE = 99.5
SIDE = 384  # pixels the image and its map are drawn at, at least, on the shorter side
SEQUENTIAL = "inferno"


def map_picture(values: np.ndarray, signed: bool) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The map's pixels (H, W, 3), the values its ends stand for, and the shares drawn in the end colours.

    A map that is zero over most of the image (one value's field in a chain) is ranged over where it is not.
    """
    shown = values[values != 0] if np.count_nonzero(values) < values.size / 2 else values
    low, high = value_range(shown if shown.size else values, "percentile", percentile=PERCENTILE)
    if not signed:
        low = 0.0
    colours = indexed(values, low, high, count=True)
    return colorize(colours.index, colormap("diverging" if signed else SEQUENTIAL)), (low, high), colours.clipped


def overlay_picture(photo: np.ndarray, values: np.ndarray, signed: bool, lines: list[str]) -> np.ndarray:
    """The map over the image (H, W, 3 uint8, as the model saw it, in grey so the colours read), each pixel's colour
    as opaque as its value is far from zero, enlarged to at least ``SIDE`` pixels; where the map covers a small part
    of the image, that part again, enlarged, beside it; a colour bar under them and ``lines`` of words under that.
    (H', W', 3) uint8."""
    pixels, (low, high), clipped = map_picture(values, signed)
    grey = np.repeat(photo.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    strength = np.abs(values) / max(abs(low), abs(high))
    opacity = np.clip(strength, 0, 1)[..., None] ** 0.5 * 0.85
    blended = ((1 - opacity) * grey + opacity * pixels).round().astype(np.uint8)
    panels = [upscale(blended, min_side=SIDE)]
    box = _support(values)
    if box is not None:
        top, left, bottom, right = box
        factor = panels[0].shape[0] // blended.shape[0]
        _outline(panels[0], [v * factor for v in box])
        panels.append(upscale(blended[top:bottom, left:right], min_side=SIDE, max_side=SIDE * 2))
    gap = 12
    height = max(p.shape[0] for p in panels)
    width = max(sum(p.shape[1] for p in panels) + gap * (len(panels) - 1), 420)
    bar = colorbar(colormap("diverging" if signed else SEQUENTIAL), low, high, width, clipped=clipped)
    rows = [row for line in lines for row in _wrapped(line, width - 20)]
    text = Image.new("RGB", (width, 10 + 18 * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(text)
    for k, row in enumerate(rows):
        write(draw, (10, 6 + 18 * k), row, 13)
    canvas = Image.new("RGB", (width, height + bar.height + text.height), BACKGROUND)
    x = 0
    for panel in panels:
        canvas.paste(Image.fromarray(panel), (x, 0))
        x += panel.shape[1] + gap
    canvas.paste(bar, (0, height))
    canvas.paste(text, (0, height + bar.height))
    return np.asarray(canvas)


def _support(values: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (top, left, bottom, right) holding the map's non-zero values with a margin of a quarter of its size,
    where it covers less than a sixteenth of the image; None otherwise."""
    rows, cols = np.nonzero(values)
    if rows.size == 0:
        return None
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if (bottom - top) * (right - left) * 16 > values.size:
        return None
    margin = max(2, (bottom - top) // 4, (right - left) // 4)
    H, W = values.shape
    return max(0, top - margin), max(0, left - margin), min(H, bottom + margin), min(W, right + margin)


def _outline(pixels: np.ndarray, box) -> None:
    """A two-pixel frame of the ink colour around ``box`` in an enlarged picture (in place)."""
    top, left, bottom, right = box
    pixels[max(top - 2, 0) : top, left:right] = INK
    pixels[bottom : bottom + 2, left:right] = INK
    pixels[top:bottom, max(left - 2, 0) : left] = INK
    pixels[top:bottom, right : right + 2] = INK


def display_image(prepared: np.ndarray) -> np.ndarray:
    """The prepared input (C, H, W) as the model saw it, stretched to 0..255 for the eye, (H, W, 3) uint8."""
    shown = prepared[:3] if prepared.shape[0] >= 3 else np.repeat(prepared[:1], 3, axis=0)
    low, high = float(shown.min()), float(shown.max())
    scaled = (shown - low) / (high - low if high > low else 1.0) * 255
    return np.ascontiguousarray(scaled.transpose(1, 2, 0).round().astype(np.uint8))


def _wrapped(line: str, width: int) -> list[str]:
    """The line broken between words into rows of at most ``width`` pixels (a word longer than that stands alone)."""
    rows, current = [], ""
    for word in line.split(" "):
        joined = f"{current} {word}" if current else word
        if current and text_width(joined, 13) > width:
            rows.append(current)
            joined = word
        current = joined
    return [*rows, current]
