"""Make docs/train-photos-kernels.png and docs/train-photos.png from a real run of `cnnx train` on photos.

Run from the repository root after `pip install -e ".[test]"` (scikit-image ships the photos):

    python tools/train_figure.py

It writes the folder of tests/photos.py (crops of eight public-domain photos,
natural things against things people built), trains the network that
tests/test_train.py trains on it, and keeps the report's kernel sheet (the first
layer's 5x5 kernels after each epoch) and a few of the training crops.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from photos import photo_folder  # noqa: E402
from test_train import PHOTO_SPEC  # noqa: E402


def crops_strip(folder: Path, per_kind: int = 8) -> Image.Image:
    """A row of training crops of each kind, the kind's name on its left."""
    kinds = sorted(p for p in (folder / "train").iterdir())
    side, gap, label = 48, 4, 70
    strip = Image.new("RGB", (label + per_kind * (side + gap) - gap, len(kinds) * (side + gap) - gap), "white")
    draw = ImageDraw.Draw(strip)
    for row, kind in enumerate(kinds):
        draw.text((0, row * (side + gap) + side // 2 - 7), kind.name, fill="black", font_size=14)
        paths = sorted(kind.glob("*.png"))
        for col, path in enumerate(paths[:: max(1, len(paths) // per_kind)][:per_kind]):
            with Image.open(path) as crop:
                strip.paste(crop.convert("RGB"), (label + col * (side + gap), row * (side + gap)))
    return strip


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = photo_folder(Path(scratch) / "photos")
        model = Path(scratch) / "photos.onnx"
        subprocess.run([sys.executable, "-m", "cnnx", "train", str(folder), "--color", "--spec", PHOTO_SPEC,
                        "--rate", "0.01", "--epochs", "30", "--patience", "30", "-o", str(model), "-q"], check=True)
        shutil.copy(Path(scratch) / "photos-report" / "kernels.png", ROOT / "docs" / "train-photos-kernels.png")
        crops_strip(folder).save(ROOT / "docs" / "train-photos.png")


if __name__ == "__main__":
    main()
