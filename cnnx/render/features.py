"""The sheets of ``cnnx features``: each unit's image with its name and the value it reached, or each unit's top
patches from a set of images, in a grid."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnx.render.colours import upscale
from cnnx.render.labels import BACKGROUND, text_width, write

TILE = 144  # pixels an image is drawn at, at least, on its shorter side


def as_pixels(image: np.ndarray) -> np.ndarray:
    """An image (C, H, W) in 0..1 as (H, W, 3) uint8, grey repeated into three channels."""
    shown = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.ascontiguousarray((np.clip(shown, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))


def tile(image: np.ndarray) -> np.ndarray:
    """One image, enlarged by whole pixels to at least ``TILE`` a side."""
    return upscale(as_pixels(image), min_side=TILE, max_side=4 * TILE)


def feature_sheet(images: list[np.ndarray], captions: list[list[str]], columns: int = 4) -> np.ndarray:
    """The images in a grid, each with its lines of caption under it; (H, W, 3) uint8."""
    tiles = [tile(image) for image in images]
    width = max(max(t.shape[1] for t in tiles), 150)
    lines = max(len(c) for c in captions)
    height = max(t.shape[0] for t in tiles) + 8 + 16 * lines
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (width + 12) + 12, rows * (height + 12) + 12), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k, (picture, caption) in enumerate(zip(tiles, captions, strict=True)):
        x, y = 12 + (k % columns) * (width + 12), 12 + (k // columns) * (height + 12)
        sheet.paste(Image.fromarray(picture), (x, y))
        for n, line in enumerate(caption):
            while text_width(line, 12) > width and len(line) > 4:
                line = line[:-2] + "…"
            write(draw, (x, y + picture.shape[0] + 4 + 16 * n), line, 12)
    return np.asarray(sheet)


def patch_sheet(patches: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """A row for each unit: its name, then its top patches (each (C, h, w) in 0..1) side by side."""
    side = 72
    label = max(int(max(text_width(n, 12) for n in names)) + 16, 120)
    count = max((len(row) for row in patches), default=1)
    sheet = Image.new("RGB", (label + count * (side + 6) + 6, len(patches) * (side + 8) + 8), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, (row, name) in enumerate(zip(patches, names, strict=True)):
        y = 8 + r * (side + 8)
        write(draw, (8, y + side // 2 - 8), name, 12)
        for k, patch in enumerate(row):
            pixels = Image.fromarray(as_pixels(patch)).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(pixels, (label + k * (side + 6), y))
    return np.asarray(sheet)
