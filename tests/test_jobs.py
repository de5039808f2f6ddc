"""Big photos and many photos: memory estimates, dry runs, batches on processes and on a Dask cluster."""

import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnx.app.batches import run_batch
from cnnx.app.cli import app
from cnnx.app.inputs import batch_destinations, find_images
from cnnx.app.jobs import Job, run_job
from cnnx.app.memory import estimate_memory, parse_bytes
from cnnx.base.errors import CnnxError
from cnnx.compute.ops import set_num_threads
from cnnx.render.draw import Style
from cnnx.sources.pipeline import Chain
from cnnx.sources.spec import load_pipeline

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def photo(folder: Path, name: str, size=(96, 128), seed=0) -> Path:
    path = folder / name
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), np.uint8)).save(path)
    return path


def folder_bytes(root: Path) -> dict:
    """Every file's content: a PNG's as decoded (its size, mode, pixels, palette and text), the rest's bytes.

    Two encodings of the same pixels may differ in their deflate stream (seen now and then under load, with
    every pixel and chunk of text alike), which is no difference in what was drawn.
    """
    return {p.relative_to(root): _content(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _content(path: Path):
    if path.suffix != ".png":
        return path.read_bytes()
    with Image.open(path) as image:
        palette = image.getpalette() if image.mode == "P" else None
        return image.size, image.mode, image.tobytes(), palette, sorted(image.text.items())


@pytest.mark.parametrize(
    "spec, color",
    [
        (None, False),
        ("conv(random:8) -> relu -> maxpool(2) -> conv(random:16) -> relu -> maxpool(2)", True),
        ("conv(sobel_x@; combine=depthwise) -> relu", False),
        ("conv(sobel_x, sobel_y) -> abs -> avgpool(2)", False),
    ],
)
@pytest.mark.slow
def test_memory_estimate_matches_what_a_run_holds(tmp_path, spec, color):
    """The estimate from shapes alone is within 25% of the peak of numpy memory a real run holds (tracemalloc).

    On one thread the run is the same every time.  On two, a busy machine can keep the threads' strips from
    overlapping, so the peak may fall further below the estimate, but never rises more than 25% above it.
    """
    image = photo(tmp_path, "a.png", (768, 1024))
    pipeline = load_pipeline(spec=spec, color=color)
    job = Job(image, tmp_path / "out", Chain(pipeline))
    run_job(job)  # warm caches (fonts, colour tables) so they do not count
    for threads in (1, 2):
        set_num_threads(threads)
        try:
            tracemalloc.start()
            run_job(job)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            estimate = estimate_memory(Chain(pipeline), (3 if color else 1, 768, 1024), Style()).peak
        finally:
            set_num_threads(None)
        assert (0.75 if threads == 1 else 0.5) <= peak / estimate <= 1.25, (threads, peak, estimate)


def test_memory_budget_refuses_before_loading(tmp_path):
    """A run over --max-memory is refused up front with the estimate and the option that raises the budget."""
    image = photo(tmp_path, "a.png")
    result = invoke("pipeline", image, "-o", tmp_path / "out", "--max-memory", "100K")
    assert result.exit_code == 2
    assert "needs about" in result.stderr and "--max-memory" in result.stderr
    assert not (tmp_path / "out").exists()
    assert invoke("pipeline", image, "-o", tmp_path / "out", "--max-memory", "1G").exit_code == 0


@pytest.mark.parametrize(
    "text, value", [("4G", 4 << 30), ("512M", 512 << 20), ("300k", 300 << 10), ("1000", 1000), ("2GiB", 2 << 30)]
)
def test_parse_bytes(text, value):
    """Memory sizes read with K, M, G units (and an optional iB)."""
    assert parse_bytes(text) == value


def test_dry_run_shows_shapes_files_and_memory_and_writes_nothing(tmp_path):
    """--dry-run prints every stage's shape and the memory needed, and writes nothing."""
    image = photo(tmp_path, "a.png", (64, 80))
    result = invoke("pipeline", image, "-o", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4x16x20" in result.stdout and "25 maps" in result.stdout and "memory needed" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_batch_keeps_going_and_reports_every_failure(tmp_path):
    """Good and bad inputs: every good one gets its folder, every bad one is listed, and the exit code is 1."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos, "a.png", seed=1)
    photo(photos, "b.jpg", seed=2)
    (photos / "broken.png").write_text("not a picture")
    result = invoke("pipeline", photos, tmp_path / "missing.png", "-o", tmp_path / "out", "-j", "2")
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"], result.output
    assert "broken.png: not an image file" in result.stderr and "missing.png: no such file" in result.stderr
    assert "2 of 4 images failed" in result.stderr
    assert "2 of 4 images done" in result.stdout


@pytest.mark.slow
def test_batch_results_identical_with_one_or_two_workers(tmp_path):
    """-j 1 and -j 2 write identical folders: every number, every pixel, every word."""
    photos = [photo(tmp_path, f"p{k}.png", seed=k) for k in range(3)]
    assert invoke("pipeline", *photos, "-o", tmp_path / "one", "-j", "1").exit_code == 0
    assert invoke("pipeline", *photos, "-o", tmp_path / "two", "-j", "2").exit_code == 0
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["p0", "p1", "p2"]


def test_same_names_get_separate_folders(tmp_path):
    """Two images called a.png in different folders go to a and a-2."""
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    images = [tmp_path / "x" / "a.png", tmp_path / "y" / "a.png"]
    assert batch_destinations(images, tmp_path / "out") == [tmp_path / "out" / "a", tmp_path / "out" / "a-2"]


def test_find_images_in_folders_and_patterns(tmp_path, monkeypatch):
    """Folders are searched for image files; patterns expand; order is stable."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.png", "d/a.jpg", "d/e/c.webp", "d/notes.txt", "z.png"):
        (tmp_path / name).write_bytes(b"")
    assert find_images(["d"]).images == [Path("d/a.jpg"), Path("d/b.png"), Path("d/e/c.webp")]
    assert find_images(["*.png", "z.png"]).images == [Path("z.png")]
    with pytest.raises(CnnxError, match="no file matches"):
        find_images(["*.gif"])


def test_no_progress_bar_off_a_terminal(tmp_path):
    """When stderr is not a terminal (as here), no progress bar is drawn: stderr stays empty."""
    result = invoke("pipeline", photo(tmp_path, "a.png"), "-o", tmp_path / "out")
    assert result.exit_code == 0 and result.stderr == ""


def test_timings_split_the_run(tmp_path):
    """The closing line splits the time into load, compute, render and write, which add up to the total."""
    result = invoke("pipeline", photo(tmp_path, "a.png"), "-o", tmp_path / "out")
    closing = re.search(
        r"in ([\d.]+) s \(load ([\d.]+), compute ([\d.]+), render ([\d.]+), write (-?[\d.]+)\)", result.stdout
    )
    assert closing, result.stdout
    total, *parts = map(float, closing.groups())
    assert all(part >= 0 for part in parts) and sum(parts) == pytest.approx(total, abs=0.02)
    outcome = run_job(Job(photo(tmp_path, "b.png"), tmp_path / "b", Chain(load_pipeline())))
    assert set(outcome.timings) == {"load", "compute", "render", "write", "total"}
    assert outcome.timings["render"] > 0 and outcome.timings["compute"] > 0


@pytest.mark.slow
def test_dask_cluster_on_loopback_gives_the_same_files(tmp_path):
    """A batch through a local Dask cluster (loopback) writes the same files as a local run."""
    distributed = pytest.importorskip("distributed")
    photos = [photo(tmp_path, f"p{k}.png", seed=k) for k in range(3)]
    assert invoke("pipeline", *photos, "-o", tmp_path / "local", "-j", "1").exit_code == 0
    import dask

    scratch = {"temporary-directory": str(tmp_path)}  # the cluster's scratch goes with the test
    with dask.config.set(scratch), distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        result = invoke("pipeline", *photos, "-o", tmp_path / "dask", "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    local, dask = folder_bytes(tmp_path / "local"), folder_bytes(tmp_path / "dask")
    differ = sorted(str(k) for k in local if local[k] != dask.get(k))
    where = {}
    for name in differ:
        if name.endswith(".png"):
            a, b = (np.asarray(Image.open(tmp_path / side / name).convert("RGB")) for side in ("local", "dask"))
            rows, cols = np.nonzero((a != b).any(axis=2)) if a.shape == b.shape else ([], [])
            where[name] = (a.shape, b.shape, (min(rows, default=-1), max(rows, default=-1), min(cols, default=-1),
                                              max(cols, default=-1)))
    assert local.keys() == dask.keys() and not differ, where


def test_run_batch_in_process_matches(tmp_path):
    """run_batch on one process runs each job here, in order."""
    jobs = [Job(photo(tmp_path, f"p{k}.png", seed=k), tmp_path / f"o{k}", Chain(load_pipeline())) for k in range(2)]
    outcomes = run_batch(jobs, processes=1)
    assert [o.error for o in outcomes] == [None, None] and [o.maps for o in outcomes] == [25, 25]
    manifest = json.loads((tmp_path / "o1" / "manifest.json").read_text())
    assert manifest["input"]["path"].endswith("p1.png")


def test_progress_bar_on_a_terminal_counts_stages_and_maps(tmp_path, monkeypatch):
    """On a terminal the bar counts stages and the maps written, up to all of them; --quiet hides it."""
    import io

    from rich.console import Console

    from cnnx.app import shell

    for quiet in (False, True):
        screen = io.StringIO()
        monkeypatch.setattr(shell, "err", Console(file=screen, force_terminal=True, width=120))
        args = ["-q"] if quiet else []
        assert invoke("pipeline", photo(tmp_path, "a.png"), "-o", tmp_path / "out", *args).exit_code == 0
        shown = screen.getvalue()
        assert ("25/25 maps written" in shown and "6/6" in shown) != quiet, shown
