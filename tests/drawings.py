"""Shapes drawn as a person draws them in a paint program: pen strokes on white, any size, place and width.

Written apart from ``cnnx.sources.shapes`` (which makes the training data), so the
model is measured on drawings it was not made from: crosses are two strokes,
an X or a +; outlines and fills; thin and thick pens; big and small canvases.
"""

import math

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "star")


def _corners(name: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    if name == "square":
        return [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)]  # inside the circle of the radius
    if name == "triangle":
        return [(math.cos(t), math.sin(t)) for t in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    inner = rng.uniform(0.35, 0.5)
    return [(math.cos(-math.pi / 2 + k * math.pi / 5) * (1 if k % 2 == 0 else inner),
             math.sin(-math.pi / 2 + k * math.pi / 5) * (1 if k % 2 == 0 else inner)) for k in range(10)]


def drawing(name: str, rng: np.random.Generator) -> np.ndarray:
    """One shape drawn in dark ink on a white canvas, as a (H, W) float array in [0, 1]."""
    height, width = (int(v) for v in rng.integers(120, 400, 2))
    radius = rng.uniform(0.25, 0.45) * min(height, width)
    cx, cy = rng.uniform(radius * 1.05, width - radius * 1.05), rng.uniform(radius * 1.05, height - radius * 1.05)
    pen = max(1, int(radius * rng.uniform(0.03, 0.2)))
    turn = rng.uniform(0, 2 * math.pi) if name != "cross" else rng.choice([0, math.pi / 4]) + rng.normal(0, 0.1)
    jitter = radius * 0.04

    def place(x: float, y: float) -> tuple[float, float]:
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
        return cx + radius * x + rng.normal(0, jitter), cy + radius * y + rng.normal(0, jitter)

    picture = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(picture)
    filled = rng.random() < 0.4
    if name == "circle":
        squash = rng.uniform(0.85, 1.15)
        box = (cx - radius * squash, cy - radius / squash, cx + radius * squash, cy + radius / squash)
        if filled:
            draw.ellipse(box, fill=0)
        else:
            draw.ellipse(box, outline=0, width=pen)
    elif name == "cross":
        for stroke in ([(-1, 0), (1, 0)], [(0, -1), (0, 1)]):
            draw.line([place(*p) for p in stroke], fill=0, width=max(pen, 2))
    else:
        points = [place(*p) for p in _corners(name, rng)]
        if filled:
            draw.polygon(points, fill=0)
        else:
            draw.line(points + points[:1], fill=0, width=pen, joint="curve")
    return np.asarray(picture, np.float32) / 255


def drawings(per_class: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``per_class`` drawings of every class, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(name, drawing(name, rng)) for name in CLASSES for _ in range(per_class)]
