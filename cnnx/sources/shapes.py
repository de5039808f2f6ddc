"""Simple shapes, drawn by the project itself: the data the shipped model learns from, and how a drawing is prepared.

Each class is drawn with Pillow at a random place, size, rotation and stroke
width, filled or outlined, with hand-drawn wobble and noise, light on dark.
``prepare`` turns any picture of one shape into the model's input the same
way for training and for users' drawings: dark-on-light drawings are
inverted, the shape is cropped to its ink, centred, and scaled to fit.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "star")
INPUT_SIZE = 32  # the model's input is INPUT_SIZE x INPUT_SIZE
CONTENT_SIZE = 24  # the shape's longer side after preparing, centred in the input
CANVAS = 64  # shapes are drawn this large, then prepared


def _outline(name: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The shape's polygon around (0, 0) with radius about 1, before rotation and wobble."""
    if name == "circle":
        stretch = rng.uniform(0.85, 1.15)
        return [(math.cos(t) * stretch, math.sin(t) / stretch) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    if name == "square":
        stretch = rng.uniform(0.85, 1.15)
        return [(x * stretch * 0.75, y / stretch * 0.75) for x, y in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    if name == "triangle":
        return [
            (math.cos(t), math.sin(t))
            for t in (-math.pi / 2 + k * 2 * math.pi / 3 + rng.uniform(-0.15, 0.15) for k in range(3))
        ]
    if name == "cross":
        w = rng.uniform(0.18, 0.34)
        return [
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
            (-w, -1),
        ]
    if name == "star":
        inner = rng.uniform(0.36, 0.5)
        return [
            (math.cos(t) * r, math.sin(t) * r)
            for k in range(10)
            for t, r in [(-math.pi / 2 + k * math.pi / 5, 1 if k % 2 == 0 else inner)]
        ]
    raise ValueError(name)


def draw_shape(name: str, rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """One shape, light on dark, as a (size, size) float32 array in [0, 1]."""
    radius = rng.uniform(0.2, 0.45) * size
    centre = rng.uniform(radius * 0.9, size - radius * 0.9, 2)
    angle = rng.uniform(0, 2 * math.pi)
    wobble = rng.uniform(0, 0.08)
    points = []
    for x, y in _outline(name, rng):
        x, y = x + rng.normal(0, wobble), y + rng.normal(0, wobble)
        points.append(
            (
                centre[0] + radius * (x * math.cos(angle) - y * math.sin(angle)),
                centre[1] + radius * (x * math.sin(angle) + y * math.cos(angle)),
            )
        )
    ink = int(rng.uniform(160, 256))
    picture = Image.new("L", (size, size), int(rng.uniform(0, 40)))
    draw = ImageDraw.Draw(picture)
    # Pens from a hair line to a fifth of the radius, as people draw with them.
    pen = int(rng.integers(1, max(2, round(radius * 0.2)) + 1))
    style = rng.random()
    if name == "cross" and style < 0.5:
        # Two strokes, as a cross is drawn by hand (an X or a + by the angle): from the middle of each arm's tip
        # across to the opposite one; the outline's corners 2-3, 5-6, 8-9 and 11-0 are the tips.
        tips = [tuple(np.mean([points[k], points[(k + 1) % 12]], axis=0)) for k in (2, 5, 8, 11)]
        for a, b in ((tips[0], tips[2]), (tips[1], tips[3])):
            draw.line([a, b], fill=ink, width=pen)
    elif style < 0.75:
        draw.polygon(points, fill=ink)
    else:
        draw.line(points + points[:1], fill=ink, width=pen, joint="curve")
    pixels = np.asarray(picture, np.float32) / 255
    pixels = pixels + rng.normal(0, rng.uniform(0, 0.08), pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 1)


def prepare(gray: np.ndarray) -> np.ndarray:
    """A picture of one shape (H, W) in [0, 1] as the model's (1, INPUT_SIZE, INPUT_SIZE) input.

    - a light background (the border brighter than mid grey) is inverted, so ink is light on dark;
    - the picture is cropped to its ink (pixels above a third of the brightest), made square;
    - scaled so the longer side is CONTENT_SIZE pixels, and centred.
    """
    gray = np.asarray(gray, np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 0.5:
        gray = 1 - gray
    gray = gray - np.median(border if border.mean() <= 0.5 else 1 - border)
    gray = np.clip(gray, 0, None)
    peak = float(gray.max())
    if peak > 0:
        gray = gray / peak
    rows, cols = np.nonzero(gray > 1 / 3)
    if rows.size:
        gray = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    side = max(gray.shape)
    square = np.zeros((side, side), np.float32)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    scaled = np.asarray(Image.fromarray(square).resize((CONTENT_SIZE, CONTENT_SIZE), Image.Resampling.BOX), np.float32)
    out = np.zeros((1, INPUT_SIZE, INPUT_SIZE), np.float32)
    offset = (INPUT_SIZE - CONTENT_SIZE) // 2
    out[0, offset : offset + CONTENT_SIZE, offset : offset + CONTENT_SIZE] = np.clip(scaled, 0, 1)
    return out


def dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` prepared shapes (N, 1, 32, 32) and their class numbers, balanced, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([prepare(draw_shape(CLASSES[k], rng)) for k in labels])
    return images, labels
