"""Real photos of two kinds, as a folder ``cnnx train`` reads: natural things and things people built.

The photos are the shipped sample and public-domain (CC0 or released) photos that
scikit-image ships. Each photo's left part gives the training crops and its right
part the validation crops, so the network is measured on pixels it never saw.
Crops are squares of random size and place, flipped and brightened at random.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
KINDS = {
    "natural": ("chelsea", "grass", "gravel", "hubble_deep_field"),
    "built": ("brick", "coffee", "astronaut", "text"),
}
TRAIN_SHARE = 0.7  # of each photo's width


def photo(name: str) -> Image.Image:
    """A photo by name: the sample when cnnx ships it, otherwise scikit-image's."""
    if (SAMPLES / f"{name}.png").exists():
        return Image.open(SAMPLES / f"{name}.png").convert("RGB")
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def _crops(picture: Image.Image, count: int, rng: np.random.Generator) -> list[Image.Image]:
    width, height = picture.size
    made = []
    for _ in range(count):
        side = int(rng.integers(min(width, height) // 8, min(width, height) // 3))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = picture.crop((left, top, left + side, top + side)).resize((48, 48), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(crop, np.float32) * rng.uniform(0.8, 1.2)
        made.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return made


def photo_folder(root: Path, train_per_photo: int = 150, val_per_photo: int = 40, seed: int = 0) -> Path:
    """Write ``root/train/<kind>/*.png`` and ``root/val/<kind>/*.png``; return ``root``."""
    rng = np.random.default_rng(seed)
    for kind, names in KINDS.items():
        for name in names:
            picture = photo(name)
            cut = int(picture.width * TRAIN_SHARE)
            parts = {"train": (picture.crop((0, 0, cut, picture.height)), train_per_photo),
                     "val": (picture.crop((cut, 0, picture.width, picture.height)), val_per_photo)}
            for split, (part, count) in parts.items():
                folder = root / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                for index, crop in enumerate(_crops(part, count, rng)):
                    crop.save(folder / f"{name}-{index:03d}.png")
    return root
