"""Make the README's pictures from a real run of `cnnx pipeline` on the shipped photo.

Run from the repository root after `pip install .`, with Debian's chromium for the page:

    python tools/readme_figure.py

It copies the run's overview.png and its first conv stage's montage into docs/,
and photographs the top of its index.html at 700 px wide with headless Chromium.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def screenshot(page: Path, target: Path, width: int, height: int) -> None:
    """The top ``height`` pixels of ``page`` in a window ``width`` wide, as headless Chromium draws it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: the page's picture is left as it was")
        return
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        subprocess.run([chromium, *flags, f"--screenshot={target}", page.as_uri()], check=True, capture_output=True)
    with Image.open(target) as shot:
        shot.convert("RGB").save(target, optimize=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        subprocess.run(
            ["cnnx", "pipeline", str(ROOT / "samples" / "chelsea.png"), "-o", str(out), "-q", "--png-level", "9"],
            check=True,
            capture_output=True,
        )
        shutil.copy(out / "overview.png", DOCS / "chelsea-overview.png")
        shutil.copy(out / "01_conv" / "montage.png", DOCS / "chelsea-conv-montage.png")
        screenshot(out / "index.html", DOCS / "chelsea-page-700.png", 700, 1500)
    print("wrote docs/chelsea-overview.png, docs/chelsea-conv-montage.png and docs/chelsea-page-700.png")


if __name__ == "__main__":
    main()
