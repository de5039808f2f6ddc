"""Whole runs of the installed cnnx command, each against the unavoidable work or a peer, in one run.

    python benchmarks/bench_end_to_end.py                 # everything, 3 rounds
    python benchmarks/bench_end_to_end.py --only startup filter

Parts (each prints medians and the ratio its target is stated in):
  pipeline  cnnx pipeline on a 4096x4096 photo (default pipeline), against encoding
            the same PNGs (same pixels, same level) on all cores with Pillow's zlib: target
            <= 1.3x; and against the stricter floor of decoding the photo plus cnnx's own
            writer (ISA-L) encoding the PNGs
  stretch   the same run drawn with the default sqrt stretch against --stretch linear,
            measured in turns: target <= 1.1x
  filter    cnnx filter on a 4096x4096 PNG with sobel_x, whole process, against
            ImageMagick doing the same signed-output work, where installed: target <= 0.3x
  startup   cnnx --version against python -c "import numpy, PIL.Image": target <= 1.5x
  memory    peak memory of a 100-megapixel run of the default pipeline, against
            cnnx's own estimate and a 4 GiB cap
  batch     200 images of 1024x1024, -j 2 against -j 1: target >= 1.7x
"""

from __future__ import annotations

# isort: off
import cnnx  # noqa: F401  (first, as in the command: it sets OpenBLAS's idle-thread timeout before numpy loads it)
# isort: on

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CNNX = [sys.executable, "-m", "cnnx"]


def timed(command: list[str], **options) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
    return time.perf_counter() - start


def median_of(rounds: int, call) -> float:
    return statistics.median(call() for _ in range(rounds))


def photo(path: Path, side: int) -> Path:
    """The shipped cat photo enlarged to side x side, with fine grain so it does not compress like a flat picture."""
    with Image.open(ROOT / "samples" / "chelsea.png") as cat:
        big = np.asarray(cat.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(0).integers(-6, 7, big.shape, dtype=np.int16)
    Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(path, compress_level=1)
    return path


def encode_all(files: list[Path], level: int, writer: str) -> float:
    """Seconds to encode these PNGs' pixels again at ``level`` on every core: the part no run can avoid.

    ``writer`` is "pillow" (Pillow's zlib) or "cnnx" (cnnx's own writer, ISA-L at levels 1-3).
    """
    from cnnx.io.png import write_png

    pictures = []
    for file in files:
        with Image.open(file) as image:
            palette = image.getpalette() if image.mode == "P" else None
            pictures.append((image.copy(), np.asarray(image), palette and np.asarray(palette, np.uint8).reshape(-1, 3)))
    out = Path(tempfile.mkdtemp())

    def encode(k: int) -> None:
        image, pixels, palette = pictures[k]
        if writer == "pillow":
            image.save(out / f"{k}.png", compress_level=level)
        else:
            write_png(out / f"{k}.png", pixels, palette=palette, level=level)

    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(encode, range(len(pictures))))
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def decode(path: Path) -> float:
    start = time.perf_counter()
    with Image.open(path) as image:
        image.load()
    return time.perf_counter() - start


def bench_pipeline(work: Path, rounds: int) -> list[str]:
    image = photo(work / "photo4096.png", 4096)
    out = work / "run"
    ours = median_of(rounds, lambda: timed([*CNNX, "pipeline", str(image), "-o", str(out), "-q"]))
    files = sorted(out.rglob("*.png"))
    pillow = median_of(rounds, lambda: encode_all(files, 1, "pillow"))
    own = median_of(rounds, lambda: encode_all(files, 1, "cnnx"))
    load = median_of(rounds, lambda: decode(image))
    print(
        f"pipeline: cnnx {ours:.2f} s; the same {len(files)} PNGs encoded on all cores: "
        f"by Pillow (zlib) {pillow:.2f} s, "
        f"by cnnx's writer (ISA-L) {own:.2f} s; decoding the photo {load:.2f} s"
    )
    return [
        f"pipeline 4096x4096: {ours / pillow:.2f}x Pillow encoding the same PNGs (target <= 1.3x)",
        f"pipeline 4096x4096: {ours / (load + own):.2f}x decoding the photo and cnnx's writer encoding the PNGs",
    ]


def bench_stretch(work: Path, rounds: int) -> str:
    from interleaved import interleaved_medians

    image = photo(work / "photo4096.png", 4096)

    def run(stretch: str):
        return lambda: timed([*CNNX, "pipeline", str(image), "-o", str(work / stretch), "-q", "--stretch", stretch])

    times = interleaved_medians({stretch: run(stretch) for stretch in ("sqrt", "linear")}, rounds)
    print(f"stretch: pipeline 4096x4096 drawn with sqrt {times['sqrt']:.2f} s, linear {times['linear']:.2f} s")
    return f"pipeline 4096x4096: the sqrt stretch is {times['sqrt'] / times['linear']:.2f}x linear (target <= 1.1x)"


def bench_filter(work: Path, rounds: int) -> str:
    image = photo(work / "photo4096.png", 4096)
    gray = work / "gray4096.png"
    Image.open(image).convert("L").save(gray, compress_level=6)
    ours = median_of(rounds, lambda: timed([*CNNX, "filter", str(gray), "sobel_x", "-o", str(work / "f.png")]))
    convert = shutil.which("convert")
    if (
        convert is None
        or "ImageMagick" not in subprocess.run([convert, "-version"], capture_output=True, text=True).stdout
    ):
        print(f"filter: cnnx {ours:.2f} s; ImageMagick not installed (apt-get install imagemagick)")
        return "filter: ImageMagick not installed"
    magick = [
        convert,
        str(gray),
        "-define",
        "convolve:scale=50%!",
        "-bias",
        "50%",
        "-morphology",
        "Convolve",
        "Sobel",
        str(work / "m.png"),
    ]
    theirs = median_of(rounds, lambda: timed(magick))
    print(f"filter: cnnx {ours:.2f} s; ImageMagick {theirs:.2f} s")
    return f"filter 4096x4096 sobel: {ours / theirs:.2f}x ImageMagick (target <= 0.3x)"


def bench_startup(rounds: int) -> str:
    ours = median_of(rounds * 5, lambda: timed([*CNNX, "--version"]))
    base = median_of(rounds * 5, lambda: timed([sys.executable, "-c", "import numpy, PIL.Image"]))
    print(f"startup: cnnx --version {ours * 1000:.0f} ms; import numpy, PIL.Image {base * 1000:.0f} ms")
    return f"startup: {ours / base:.2f}x importing numpy and Pillow (target <= 1.5x)"


def bench_memory(work: Path) -> str:
    side = 10000  # 100 megapixels
    image = work / "photo100mp.png"
    # Made in a process of its own: a child's peak memory counts what it shared with its parent at the fork,
    # so this process must stay small while it measures.
    subprocess.run([sys.executable, __file__, "--make-photo", str(image), str(side)], check=True)
    base = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, cnnx.app.cli, numpy, PIL.Image, typer, rich, cmap;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    run = subprocess.run(
        [*CNNX, "pipeline", str(image), "-o", str(work / "big"), "--max-pixels", "200000000", "-q"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        print(f"memory: the 100 MP run failed: {run.stderr.strip()}")
        return "memory 100 MP: the run failed"
    # The largest child so far: the run (the baseline ran in a child of its own, and smaller).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 - int(base.stdout.split()[-1])
    from cnnx.app.memory import estimate_memory
    from cnnx.sources.pipeline import Chain
    from cnnx.sources.stages import LESSON, Pipeline

    estimate = estimate_memory(Chain(Pipeline(LESSON)), (1, side, side)).peak
    total = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        f"memory: 100 MP run peaked at {total / 2**30:.2f} GiB in all, {peak / 2**30:.2f} GiB above the program "
        f"itself; estimate {estimate / 2**30:.2f} GiB"
    )
    return (
        f"memory 100 MP: peak {total / 2**30:.2f} GiB in all (cap 4 GiB), "
        f"{peak / estimate:.2f}x the estimate (target within 25%)"
    )


def bench_batch(work: Path, rounds: int, count: int = 200) -> str:
    folder = work / "batch"
    folder.mkdir(exist_ok=True)
    base = np.asarray(Image.open(photo(work / "b.png", 1024)).convert("L"))
    for k in range(count):
        Image.fromarray(np.roll(base, 7 * k, axis=1)).save(folder / f"{k:03d}.png", compress_level=1)
    one = median_of(rounds, lambda: timed([*CNNX, "pipeline", str(folder), "-o", str(work / "j1"), "-j", "1", "-q"]))
    two = median_of(rounds, lambda: timed([*CNNX, "pipeline", str(folder), "-o", str(work / "j2"), "-j", "2", "-q"]))
    print(f"batch: {count} images, -j 1 {one:.1f} s, -j 2 {two:.1f} s")
    return f"batch {count} x 1024x1024: -j 2 is {one / two:.2f}x -j 1 (target >= 1.7x)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=["pipeline", "stretch", "filter", "startup", "memory", "batch"])
    parser.add_argument("--make-photo", nargs=2, metavar=("PATH", "SIDE"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.make_photo:
        photo(Path(arguments.make_photo[0]), int(arguments.make_photo[1]))
        return 0
    chosen = arguments.only or ["pipeline", "stretch", "filter", "startup", "memory", "batch"]
    verdicts = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if "memory" in chosen:  # first, while this process is small
            verdicts.append(bench_memory(work))
        if "startup" in chosen:
            verdicts.append(bench_startup(arguments.rounds))
        if "pipeline" in chosen:
            verdicts.extend(bench_pipeline(work, arguments.rounds))
        if "stretch" in chosen:
            verdicts.append(bench_stretch(work, arguments.rounds))
        if "filter" in chosen:
            verdicts.append(bench_filter(work, arguments.rounds))
        if "batch" in chosen:
            verdicts.append(bench_batch(work, 1))
    print("\nratios:")
    for line in verdicts:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
