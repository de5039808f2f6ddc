"""The pictures of ``cnnx train``'s report: the learning curves, the first layer's kernels epoch by epoch (how
a learner sees filters being learned), and every convolution's kernels after each epoch."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cnnx.render.colours import colormap
from cnnx.render.labels import BACKGROUND, INK, write

WIDTH, HEIGHT, MARGIN = 640, 220, 48


def curves_picture(history) -> np.ndarray:
    """Loss (left) and accuracy (right) against the epoch, training solid and validation dashed; (H, W, 3)."""
    sheet = Image.new("RGB", (2 * WIDTH + 24, HEIGHT + 2 * MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    epochs = [e.number for e in history]
    for k, (title, pairs, top) in enumerate((
        ("loss", [(e.loss, e.val_loss) for e in history], None),
        ("accuracy", [(e.accuracy, e.val_accuracy) for e in history], 1.0),
    )):
        left = k * (WIDTH + 24) + MARGIN
        values = [v for pair in pairs for v in pair if np.isfinite(v)]
        high = top if top is not None else max(values, default=1.0) * 1.05 or 1.0
        low = 0.0
        draw.rectangle([left, MARGIN, left + WIDTH - 2 * MARGIN, MARGIN + HEIGHT], outline=INK)
        write(draw, (left, 12), f"{title}: training (red), validation (blue)", 13)
        write(draw, (left - 40, MARGIN - 6), f"{high:.3g}", 11)
        write(draw, (left - 40, MARGIN + HEIGHT - 8), f"{low:.3g}", 11)
        write(draw, (left, MARGIN + HEIGHT + 6), f"epoch 1 to {epochs[-1] if epochs else 0}", 11)
        for series, colour in ((0, (178, 24, 43)), (1, (33, 102, 172))):
            points = [(left + (WIDTH - 2 * MARGIN) * (n - 1) / max(1, len(epochs) - 1),
                       MARGIN + HEIGHT * (1 - (pair[series] - low) / (high - low)))
                      for n, pair in zip(epochs, pairs, strict=True) if np.isfinite(pair[series])]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    return np.asarray(sheet)


def kernels_picture(epochs: list[np.ndarray], rows_at_most: int = 12) -> np.ndarray:
    """A row per epoch (at most ``rows_at_most``, spread evenly, the last always), each kernel of the first
    convolution a square (its first input channel, or its colours where it reads three), on one range."""
    picked = sorted({round(k) for k in np.linspace(0, len(epochs) - 1, min(rows_at_most, len(epochs)))})
    chosen = [epochs[k] for k in picked]
    O, C, kh, kw = chosen[0].shape
    cell = max(6, 48 // max(kh, kw))
    bound = max(float(np.abs(w).max()) for w in chosen) or 1.0
    table = colormap("diverging")
    label = 70
    sheet = Image.new("RGB", (label + O * (kw * cell + 4) + 8, len(chosen) * (kh * cell + 6) + 8), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, (epoch, weights) in enumerate(zip(picked, chosen, strict=True)):
        y = 6 + r * (kh * cell + 6)
        write(draw, (6, y + kh * cell // 2 - 7), f"epoch {epoch + 1}", 11)
        for o in range(O):
            sheet.paste(_square(weights[o] if C == 3 else weights[o, :1], bound, cell, table),
                        (label + o * (kw * cell + 4), y))
    return np.asarray(sheet)


def _square(kernel: np.ndarray, bound: float, cell: int, table: np.ndarray) -> Image.Image:
    """One kernel enlarged: its colours where it reads three channels (mid grey is zero, as the AlexNet figure),
    else its one plane in the diverging colours (white is zero), ``bound`` at the ends."""
    if kernel.shape[0] == 3:
        pixels = (np.clip(kernel.transpose(1, 2, 0) / (2 * bound) + 0.5, 0, 1) * 255).astype(np.uint8)
    else:
        pixels = table[np.clip((kernel[0] / bound + 1) / 2 * 255, 0, 255).astype(np.uint8)]
    kh, kw = kernel.shape[1:]
    return Image.fromarray(np.ascontiguousarray(pixels)).resize((kw * cell, kh * cell), Image.Resampling.NEAREST)


SHOWN_KERNELS, SHOWN_INPUTS = 32, 16  # a layer's kernels and input channels an epoch's sheet draws at most


def epoch_sheet(layers: dict[str, np.ndarray], bounds: dict[str, float], number: int, epochs: int) -> np.ndarray:
    """Every convolution's kernels after one epoch, a block per layer: a column per kernel, a row per input channel
    it reads (one row of colour squares where it reads three colours), each layer on its own range over every
    epoch (``bounds``), so the sheets of two epochs compare."""
    table = colormap("diverging")
    blocks = []
    for name, weights in layers.items():
        O, C, kh, kw = weights.shape
        cell = max(4, 36 // max(kh, kw))
        colour = C == 3
        rows, columns = (1 if colour else min(C, SHOWN_INPUTS)), min(O, SHOWN_KERNELS)
        shown = "" if (columns, rows) == (O, 1 if colour else C) else f", the first {columns} x {rows} drawn"
        reads = "colour" if colour else "1 channel" if C == 1 else f"{C} channels (a row each)"
        title = f"{name}: {O} kernels of {kh}x{kw} reading {reads}{shown}, range ±{bounds[name]:.3g}"
        block = Image.new("RGB", (max(columns * (kw * cell + 3) + 3, 7 * len(title)), rows * (kh * cell + 3) + 24),
                          BACKGROUND)
        write(ImageDraw.Draw(block), (0, 2), title, 11)
        for o in range(columns):
            for c in range(rows):
                part = weights[o] if colour else weights[o, c : c + 1]
                block.paste(_square(part, bounds[name], cell, table), (o * (kw * cell + 3), 22 + c * (kh * cell + 3)))
        blocks.append(block)
    width = max([b.width for b in blocks] + [240]) + 12
    sheet = Image.new("RGB", (width, sum(b.height + 10 for b in blocks) + 30), BACKGROUND)
    write(ImageDraw.Draw(sheet), (6, 6), f"after epoch {number} of {epochs}", 12)
    y = 28
    for block in blocks:
        sheet.paste(block, (6, y))
        y += block.height + 10
    return np.asarray(sheet)


def kernels_frames(epochs: list[np.ndarray]) -> list[Image.Image]:
    """One frame per epoch, the first convolution's kernels large and labelled: the animation of them learning."""
    bound = max(float(np.abs(w).max()) for w in epochs) or 1.0
    frames = []
    for number, weights in enumerate(epochs, 1):
        row = kernels_picture([weights], rows_at_most=1)[:, 70:]  # the squares, without the row's label
        enlarged = Image.fromarray(np.ascontiguousarray(row)).resize((row.shape[1] * 3 // 2, row.shape[0] * 3 // 2),
                                                                      Image.Resampling.NEAREST)
        frame = Image.new("RGB", (max(enlarged.width, 200), enlarged.height + 28), BACKGROUND)
        frame.paste(enlarged, (0, 24))
        write(ImageDraw.Draw(frame), (6, 4), f"epoch {number} of {len(epochs)} (range ±{bound:.3g})", 12)
        frames.append(frame)
    return frames
