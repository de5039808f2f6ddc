"""Pictures made of many maps: montages, the overview, kernel sheets, and labelled rows of values.

Every label is wrapped to the width it has, never cut; every tile of a
stage is the same size; colour bars say what the colours stand for and how
much lies beyond their ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from cnnx.render.draw import (
    BACKGROUND,
    INK,
    colorbar,
    colormap,
    picture,
    text_width,
    to_index,
    upscale,
    value_range,
    write,
)

__all__ = ["Column", "kernel_sheet", "labelled_values", "montage", "overview", "wrap"]

GAP = 12  # pixels between tiles
LINE = 16  # pixels a line of label text takes
SHEET_WIDTH = 1100  # what a montage is laid out to fit, as a page shows it


def wrap(text: str, width: int, size: int = 13) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels: broken at spaces, and inside a word only where it must."""
    lines: list[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        if lines and text_width(line, size) <= width:
            lines[-1] = line
            continue
        while text_width(word, size) > width and len(word) > 1:
            cut = max(1, max(k for k in range(1, len(word) + 1) if text_width(word[:k], size) <= width or k == 1))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str], size: int = 13) -> None:
    for k, line in enumerate(lines):
        write(draw, (xy[0], xy[1] + k * LINE), line, size)


def montage(tiles: list[Image.Image], labels: list[str], bar: Image.Image | None) -> Image.Image:
    """A contact sheet: the tiles in a grid as wide as a page, each with its whole label under it, then the bar."""
    cell = max(t.width for t in tiles)
    columns = max(1, min(len(tiles), (SHEET_WIDTH + GAP) // (cell + GAP)))
    wrapped = [wrap(label, cell) for label in labels]
    rows = [range(k, min(k + columns, len(tiles))) for k in range(0, len(tiles), columns)]
    heights = [max(tiles[k].height for k in row) + LINE * max(len(wrapped[k]) for k in row) + GAP for row in rows]
    width = max(columns * (cell + GAP) + GAP, (bar.width + 2 * GAP) if bar else 0)
    sheet = Image.new("RGB", (width, GAP + sum(heights) + (bar.height + GAP if bar else 0)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = GAP
    for row, height in zip(rows, heights, strict=True):
        for place, k in enumerate(row):
            x = GAP + place * (cell + GAP)
            sheet.paste(tiles[k], (x, y))
            _text(draw, (x, y + tiles[k].height + 2), wrapped[k])
        y += height
    if bar:
        sheet.paste(bar, (GAP, y))
    return sheet


@dataclass
class Column:
    """One stage in the overview: its title lines, its first tiles with their labels, and how many more there are."""

    title: list[str]
    tiles: list[Image.Image]
    labels: list[str]
    more: int = 0
    block: int = 0  # stages of one block share a colour bar
    bar: Callable[[int], Image.Image] | None = field(default=None, repr=False)  # the block's bar, at a width


def overview(columns: list[Column], *, box: int = 128) -> Image.Image:
    """Every stage side by side, a column each, tiles in rows that line up across stages; a colour bar per block."""
    width = box + GAP
    titles = [[line for text in c.title for line in wrap(text, box)] for c in columns]
    labels = [[wrap(label, box, 12) for label in c.labels] for c in columns]
    top = GAP + LINE * max(len(t) for t in titles) + 4
    row_heights = _row_heights(columns, labels)
    more = LINE if any(c.more for c in columns) else 0
    blocks = _blocks(columns)
    bars = {first: columns[first].bar((last - first + 1) * width - GAP) for first, last in blocks if columns[first].bar}
    bar_height = max((bar.height for bar in bars.values()), default=0)
    height = top + sum(row_heights) + more + (bar_height + GAP if bar_height else 0) + GAP
    sheet = Image.new("RGB", (GAP + len(columns) * width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for j, column in enumerate(columns):
        x = GAP + j * width
        _text(draw, (x, GAP), titles[j])
        _column_tiles(sheet, draw, column, labels[j], (x, top), box, row_heights)
    for first, bar in bars.items():
        sheet.paste(bar, (GAP + first * width, height - GAP - bar_height))
    return sheet


def _row_heights(columns: list[Column], labels: list[list[list[str]]]) -> list[int]:
    """Each row's height: its tallest tile with its label, across every stage, so that rows line up."""
    rows = max(len(c.tiles) for c in columns)
    return [max(c.tiles[k].height + LINE * len(labels[j][k]) for j, c in enumerate(columns) if k < len(c.tiles)) + GAP
            for k in range(rows)]


def _column_tiles(sheet: Image.Image, draw: ImageDraw.ImageDraw, column: Column, labels: list[list[str]],
                  corner: tuple[int, int], box: int, row_heights: list[int]) -> None:
    """A stage's tiles down its column, each centred in its box and labelled, and how many more were left out."""
    x, y = corner
    for k, tile in enumerate(column.tiles):
        sheet.paste(tile, (x + (box - tile.width) // 2, y))
        _text(draw, (x, y + tile.height + 2), labels[k], 12)
        y += row_heights[k]
    if column.more:
        write(draw, (x, corner[1] + sum(row_heights)), f"+ {column.more} more", 12)


def _blocks(columns: list[Column]) -> list[tuple[int, int]]:
    """(first, last) column of each run of columns in one block."""
    spans: list[tuple[int, int]] = []
    for j, column in enumerate(columns):
        if spans and columns[spans[-1][0]].block == column.block:
            spans[-1] = (spans[-1][0], j)
        else:
            spans.append((j, j))
    return spans


def labelled_values(
    index: np.ndarray, table: np.ndarray | None, names: list[str], values: np.ndarray, width: int, *, most: int = 12
) -> Image.Image:
    """Values that name things (a model's classes), a line each: the value's colour, its name, the number.

    Of more than ``most``, the largest are shown, and a last line says how many more there are.
    """
    swatch = 14
    order = list(range(len(names))) if len(names) <= most else list(np.argsort(-values, kind="stable")[:most])
    index = np.asarray(index, np.uint8).reshape(-1)[order]
    lines = [wrap(f"{names[k]} {values[k]:.3g}", width - swatch - 6, 12) for k in order]
    if len(order) < len(names):
        lines.append(wrap(f"(the {most} largest of {len(names)})", width - swatch - 6, 12))
    sheet = Image.new("RGB", (width, sum(LINE * len(line) + 4 for line in lines)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    colours = picture(np.asarray(index, np.uint8).reshape(1, -1), table).convert("RGB")
    y = 0
    for k, line in enumerate(lines):
        if k < len(order):
            draw.rectangle((0, y + 1, swatch - 1, y + swatch), fill=colours.getpixel((k, 0)), outline=INK)
        _text(draw, (swatch + 6, y), line, 12)
        y += LINE * len(line) + 4
    return sheet


def _colour_filters(name: str, weights: np.ndarray, least: int) -> Image.Image:
    """Filters over red, green and blue drawn as colour pictures (as in the AlexNet paper's figure).

    Each pixel's colour is the weights it puts on red, green and blue: mid
    grey is zero, brighter in a colour a positive weight on it, darker a
    negative one, all on one scale for the layer.
    """
    O, _, kh, kw = weights.shape
    scale = float(np.abs(weights).max()) or 1.0
    rgb = np.clip(0.5 + weights.transpose(0, 2, 3, 1) / (2 * scale), 0, 1)
    side = math.ceil(max(least, 64) / max(kh, kw))
    tile_h, tile_w = kh * side, kw * side
    columns = min(O, 8)
    rows = math.ceil(O / columns)
    title = wrap(f"{name}: {O} filters over red, green and blue, {kh}x{kw}, each drawn in the colours it weighs "
                 f"(mid grey is 0; the layer's weights run from {weights.min():.3g} to {weights.max():.3g})",
                 columns * (tile_w + 6) + 40)
    top = GAP + LINE * len(title) + 4
    sheet = Image.new("RGB", (2 * GAP + columns * (tile_w + 6) + 40, top + rows * (tile_h + LINE + 6) + GAP),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _text(draw, (GAP, GAP), title)
    for o in range(O):
        x, y = GAP + (o % columns) * (tile_w + 6), top + (o // columns) * (tile_h + LINE + 6)
        pixels = np.repeat(np.repeat((rgb[o] * 255).round().astype(np.uint8), side, 0), side, 1)
        sheet.paste(Image.fromarray(pixels, "RGB"), (x, y))
        write(draw, (x, y + tile_h + 1), f"#{o}", 12)
    return sheet


def kernel_sheet(layers: dict[str, np.ndarray], *, least: int = 48) -> Image.Image:
    """Every kernel of each layer as a heat map at least ``least`` pixels a side, labelled, with its layer's range.

    A layer (out, in, kH, kW) is a grid, a row per output filter and a column
    per input channel; a layer over one channel is a row of its filters.
    """
    blocks = []
    for name, weights in layers.items():
        weights = np.asarray(weights, np.float32)
        weights = weights[None, None] if weights.ndim == 2 else weights  # one 2-D kernel: one filter, one channel
        if weights.shape[1] == 3 and weights.shape[0] > 1:
            blocks.append(_colour_filters(name, weights, least))
        else:
            blocks.append(_layer_block(name, weights, least))
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks)), BACKGROUND)
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height
    return sheet


def _layer_block(name: str, weights: np.ndarray, least: int) -> Image.Image:
    """One layer's kernels as a grid of heat maps on the layer's symmetric range, titled, with its colour bar."""
    table = colormap("diverging")
    O, C, kh, kw = weights.shape
    low, high = value_range(weights, "symmetric")
    if low == 0:  # a kernel of no negative weight is still drawn on the scale of both signs: zero stays white
        low = -high
    rows, columns = (O, C) if C > 1 else (1, O)
    scale = math.ceil(max(least, 192 // max(rows, columns)) / min(kh, kw))  # a lone kernel is drawn large
    side_h, side_w = kh * scale, kw * scale
    row_label = 44 if C > 1 and O > 1 else 0
    head = LINE if columns > 1 else 0
    grid_width = GAP + row_label + columns * (side_w + 6)
    bar = colorbar(table, low, high, max(240, min(480, columns * (side_w + 6))))
    filters = f"{O} filter{'s' if O > 1 else ''} over {C} input channel{'s' if C > 1 else ''}"
    title = wrap(f"{name}: {filters}, {kh}x{kw}, values {weights.min():.3g} to {weights.max():.3g}",
                 max(grid_width, 360) - GAP)
    top = GAP + LINE * len(title) + head + 4
    width = max(grid_width, bar.width + GAP, 360) + GAP
    block = Image.new("RGB", (width, top + rows * (side_h + 6) + bar.height + GAP), BACKGROUND)
    draw = ImageDraw.Draw(block)
    _text(draw, (GAP, GAP), title)
    for k in range(columns if columns > 1 else 0):
        write(draw, (GAP + row_label + k * (side_w + 6), top - LINE), f"in {k}" if C > 1 else f"#{k}", 12)
    for o in range(O):
        for c in range(C):
            row, column = (o, c) if C > 1 else (0, o)
            x, y = GAP + row_label + column * (side_w + 6), top + row * (side_h + 6)
            if row_label and c == 0:
                write(draw, (GAP, y + side_h // 2 - 7), f"#{o}", 12)
            tile = picture(upscale(to_index(weights[o, c], low, high), min_side=min(side_h, side_w)), table)
            block.paste(tile.convert("RGB"), (x, y))
    block.paste(bar, (GAP, top + rows * (side_h + 6)))
    return block
