"""Photo-like scenes made from seeds, for measuring how pictures read: no photo files needed.

Natural images have a power spectrum falling as 1/f; these scenes are 1/f
noise with what photos add on top: smooth light, hard edges of objects,
fine texture and small bright spots.
"""

import numpy as np
from PIL import Image, ImageDraw


def pink(shape: tuple[int, int], rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Noise whose spectrum falls as 1/f**exponent, scaled to [0, 1]."""
    rows, cols = np.fft.fftfreq(shape[0])[:, None], np.fft.rfftfreq(shape[1])[None, :]
    half = (shape[0], shape[1] // 2 + 1)
    spectrum = rng.standard_normal(half) + 1j * rng.standard_normal(half)
    spectrum /= np.maximum(np.hypot(rows, cols), 1.0 / max(shape)) ** exponent
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.min()) / (field.max() - field.min())


def scene(kind: str, seed: int, shape: tuple[int, int] = (360, 480)) -> np.ndarray:
    """A (H, W) grey scene in [0, 1]: portrait, street, texture or microscopy."""
    rng = np.random.default_rng(seed)
    H, W = shape
    base = pink(shape, rng, 1.6 if kind in ("portrait", "street") else 1.0)
    picture = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    if kind == "portrait":  # a large lit face-like oval on a softer background, with a few features
        draw.ellipse((W * 0.3, H * 0.15, W * 0.7, H * 0.9), fill=int(rng.uniform(150, 220)))
        for x in (0.42, 0.58):
            draw.ellipse((W * x - 12, H * 0.4 - 7, W * x + 12, H * 0.4 + 7), fill=40)
        draw.line([(W * 0.44, H * 0.7), (W * 0.56, H * 0.7)], fill=60, width=5)
    elif kind == "street":  # buildings, windows and a road
        for _ in range(8):
            x, w, h = rng.uniform(0, W), rng.uniform(40, 120), rng.uniform(80, H * 0.8)
            draw.rectangle((x, H - h, x + w, H), fill=int(rng.uniform(40, 200)))
            for _ in range(6):
                wx, wy = rng.uniform(x, x + w - 10), rng.uniform(H - h, H - 15)
                draw.rectangle((wx, wy, wx + 8, wy + 10), fill=int(rng.uniform(0, 255)))
    elif kind == "microscopy":  # bright cells on a dark field
        picture = Image.fromarray((base * 60).astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        for _ in range(40):
            x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(4, 18)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.uniform(120, 255)))
    pixels = np.asarray(picture, np.float32) / 255
    blur = pink(shape, rng, 2.0)
    return np.clip(pixels * 0.85 + blur * 0.15 + rng.normal(0, 0.01, shape), 0, 1).astype(np.float32)
