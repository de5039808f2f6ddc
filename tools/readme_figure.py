"""Make the README's pictures from a real run of `cnnx pipeline` on the shipped photo.

Run from the repository root after `pip install .`:

    python tools/readme_figure.py

It copies the run's overview.png and its first conv stage's montage into docs/.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        subprocess.run(
            ["cnnx", "pipeline", str(ROOT / "samples" / "chelsea.png"), "-o", str(out), "-q", "--png-level", "9"],
            check=True,
            capture_output=True,
        )
        shutil.copy(out / "overview.png", ROOT / "docs" / "chelsea-overview.png")
        shutil.copy(out / "01_conv" / "montage.png", ROOT / "docs" / "chelsea-conv-montage.png")
    print("wrote docs/chelsea-overview.png and docs/chelsea-conv-montage.png")


if __name__ == "__main__":
    main()
