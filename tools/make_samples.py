"""Write samples/stripes.png: square-wave stripes in four directions around a disc.

Each quadrant holds stripes of one direction, so every edge filter of the
bank lights up in its own quadrant. Run from the repository root:

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


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "samples" / "stripes.png"
    Image.fromarray(make_stripes()).save(path, optimize=True)
    print(f"wrote {path}")
