"""Make the pictures of docs/why.md and docs/features.md from real runs of `cnnx why` and `cnnx features`.

Run from the repository root after `pip install .`:

    python tools/why_figure.py

docs/why-methods.png: every method's overlay for the shapes model's answer on
samples/star.png, side by side.  docs/why-field.png: a value of the default
pipeline's last stage on samples/chelsea.png and the input pixels that drove
it (input x gradient): its effective receptive field.  docs/features-classes.png
and docs/features-channels.png: what each class of the shapes model, and
eight channels of its second convolution, look for.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
METHODS = ["gradcam", "gradcam++", "saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "occlusion"]


def cnnx(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cnnx", *args], check=True, capture_output=True)


def flow(pictures: list[Image.Image], width: int) -> Image.Image:
    """The pictures at their own size (so every line of words stays readable), left to right in rows of at most
    ``width`` pixels, on white."""
    rows: list[list[Image.Image]] = [[]]
    for picture in pictures:
        if rows[-1] and sum(p.width + 8 for p in rows[-1]) + picture.width > width:
            rows.append([])
        rows[-1].append(picture)
    heights = [max(p.height for p in row) for row in rows]
    sheet = Image.new("RGB", (width, sum(heights) + 8 * (len(rows) - 1)), "white")
    y = 0
    for row, height in zip(rows, heights, strict=True):
        x = 0
        for picture in row:
            sheet.paste(picture, (x, y))
            x += picture.width + 8
        y += height + 8
    return sheet


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        cnnx("why", str(ROOT / "samples" / "star.png"), "--model", "shapes", "--method", "all", "-o", str(out / "s"))
        pictures = [Image.open(out / "s" / "why" / f"{m}-overlay.png").convert("RGB") for m in METHODS]
        flow(pictures, 4 * 420 + 3 * 8).save(DOCS / "why-methods.png", optimize=True)
        cnnx("why", str(ROOT / "samples" / "chelsea.png"), "--stage", "6", "--channel", "1", "--at", "40,61",
             "--method", "input-x-gradient", "-o", str(out / "c"))
        field = Image.open(out / "c" / "why" / "input-x-gradient-overlay.png").convert("RGB")
        field.resize((900, round(field.height * 900 / field.width)), Image.Resampling.LANCZOS).save(
            DOCS / "why-field.png", optimize=True)
        cnnx("features", "--model", "shapes", "-o", str(out / "f"))
        Image.open(out / "f" / "sheet.png").save(DOCS / "features-classes.png", optimize=True)
        cnnx("features", "--model", "shapes", "--stage", "4", "--channels", "0-7", "-o", str(out / "g"))
        Image.open(out / "g" / "sheet.png").save(DOCS / "features-channels.png", optimize=True)
    print(f"wrote {DOCS / 'why-methods.png'}, {DOCS / 'why-field.png'} and the features sheets")


if __name__ == "__main__":
    main()
