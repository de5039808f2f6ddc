"""Make docs/chelsea-pipeline.png for the README from a real run of `cnnx pipeline`.

Run from the repository root after `pip install .`:

    python tools/readme_figure.py
"""

import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
# (stage folder, file, caption): the vertical-edge channel followed through both rounds.
PANELS = [
    ("00_input", "ch00_gray.png", "input"),
    ("01_conv", "ch00_vertical_edge.png", "1 conv vertical_edge"),
    ("02_relu", "ch00_vertical_edge.png", "2 relu"),
    ("03_maxpool", "ch00_vertical_edge.png", "3 maxpool 2x2"),
    ("04_conv", "ch00_vertical_edge-dog-sigma-1.png", "4 conv dog (depthwise)"),
    ("05_relu", "ch00_vertical_edge-dog-sigma-1.png", "5 relu"),
    ("06_maxpool", "ch00_vertical_edge-dog-sigma-1.png", "6 maxpool 2x2"),
]
TILE = (300, 200)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        subprocess.run(["cnnx", "pipeline", str(ROOT / "samples" / "chelsea.png"), "-o", str(out)], check=True,
                       capture_output=True)
        sheet = Image.new("L", (TILE[0] * 4, (TILE[1] + 18) * 2), 255)
        draw = ImageDraw.Draw(sheet)
        for k, (stage, name, caption) in enumerate(PANELS):
            tile = Image.open(out / stage / name).convert("L").resize(TILE, Image.Resampling.NEAREST)
            x, y = (k % 4) * TILE[0], (k // 4) * (TILE[1] + 18)
            sheet.paste(tile, (x, y + 18))
            draw.text((x + 4, y + 3), caption, fill=0)
    target = ROOT / "docs" / "chelsea-pipeline.png"
    sheet.save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
