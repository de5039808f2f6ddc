"""Write samples/stripes.png and samples/star.png.

stripes.png: square-wave stripes in four directions around a disc; each
quadrant holds stripes of one direction, so every edge filter of the bank
lights up in its own quadrant.  star.png: a five-pointed star drawn with a
pen on off-white paper, a little askew and uneven, for the shapes model and
``cnnx why``.  Run from the repository root:

    python tools/make_samples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 384  # pixels a side
PERIOD = 16  # pixels from one stripe to the next


def stripes(rows: np.ndarray, cols: np.ndarray, angle_degrees: float) -> np.ndarray:
    """1 where the distance along ``angle_degrees`` falls in the first half of a period, else 0."""
    angle = np.deg2rad(angle_degrees)
    along = cols * np.cos(angle) + rows * np.sin(angle)
    return (np.floor(along / (PERIOD / 2)) % 2 == 0).astype(np.float64)


def make_stripes() -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    half = SIZE // 2
    image = np.where(
        rows < half,
        np.where(cols < half, stripes(rows, cols, 0), stripes(rows, cols, 90)),
        np.where(cols < half, stripes(rows, cols, 45), stripes(rows, cols, 135)),
    )
    disc = (rows - half) ** 2 + (cols - half) ** 2 < (SIZE / 6) ** 2
    image[disc] = 0.5
    return np.round(image * 255).astype(np.uint8)


def make_star() -> Image.Image:
    """An outlined star, 3 px pen, turned 8 degrees, its points of slightly different lengths, on paper with grain."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(5)
    paper = (242 + rng.normal(0, 3, (200, 240))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(paper).convert("RGB")
    turn = np.deg2rad(8)
    radii = [78, 31, 74, 29, 80, 33, 72, 30, 76, 32]
    points = [(122 + r * np.sin(turn + k * np.pi / 5), 104 - r * np.cos(turn + k * np.pi / 5))
              for k, r in enumerate(radii)]
    ImageDraw.Draw(image).line([*points, points[0]], fill=(38, 44, 70), width=4, joint="curve")
    return image.filter(ImageFilter.GaussianBlur(0.6))


if __name__ == "__main__":
    folder = Path(__file__).resolve().parent.parent / "samples"
    Image.fromarray(make_stripes()).save(folder / "stripes.png", optimize=True)
    make_star().save(folder / "star.png", optimize=True)
    print(f"wrote {folder / 'stripes.png'} and {folder / 'star.png'}")
