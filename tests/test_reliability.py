"""Nothing lost, nothing hangs, nothing unbounded: each class of failure, through the real command."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnx.app.batches import run_batch
from cnnx.app.cli import app
from cnnx.app.jobs import Job, run_job_reporting
from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.io import weights
from cnnx.io.images import load_image, probe_image
from cnnx.sources.model import load_model
from cnnx.sources.pipeline import Chain
from cnnx.sources.spec import load_pipeline

runner = CliRunner()
CNNX = [sys.executable, "-m", "cnnx"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def noise(path: Path, side: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), np.uint8)).save(path, format="PNG")
    return path


def debris(folder: Path) -> list[str]:
    """Hidden leftovers of cnnx's staging anywhere below ``folder``."""
    return sorted(str(p) for p in folder.rglob(".*") if any(m in p.name for m in (".tmp-", ".old-", ".lock")))


def run_cnnx(*args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNX, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- data loss through names


@pytest.mark.parametrize("name", ["..png", "...png", ".png.png"])
@pytest.mark.slow
def test_dot_names_never_replace_the_output_root(tmp_path, monkeypatch, name):
    """An image called ..png or ...png writes a folder of its own; a user's file beside it stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnnx-out").mkdir()
    (tmp_path / "cnnx-out" / "mine.txt").write_text("keep")
    noise(tmp_path / name)
    for _ in range(2):
        assert invoke("pipeline", name).exit_code == 0
        assert invoke("pipeline", name, tmp_path / "cnnx-out" / "mine.txt", "-o", "cnnx-out").exit_code == 1
    assert (tmp_path / "cnnx-out" / "mine.txt").read_text() == "keep"
    assert not debris(tmp_path)


def test_batch_names_never_collide(tmp_path, monkeypatch):
    """a.png, a-2.png and sub/a.png get three folders, each holding its own image's run."""
    monkeypatch.chdir(tmp_path)
    images = [noise(tmp_path / "a.png", seed=1), noise(tmp_path / "sub" / "a.png", seed=2), noise(tmp_path / "a-2.png")]
    result = invoke("pipeline", *images, "-o", "out", "-j", "1")
    assert result.exit_code == 0, result.output
    inputs = {json.loads(m.read_text())["input"]["path"] for m in (tmp_path / "out").glob("*/manifest.json")}
    assert inputs == {str(p) for p in images}


@pytest.mark.parametrize("out", [".", "..", "sub/..", "./"])
def test_output_at_or_above_the_working_folder_is_refused_before_any_work(tmp_path, monkeypatch, out):
    """-o . or -o .. is refused at once, naming the option's value; nothing is written anywhere."""
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    noise(tmp_path / "work" / "a.png")
    before = sorted(tmp_path.rglob("*"))
    result = invoke("pipeline", "a.png", "-o", out)
    assert result.exit_code == 2 and "working folder" in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_output_through_a_symlink_keeps_the_link(tmp_path):
    """-o LINK writes the run into the link's target and leaves the link a link."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    image = noise(tmp_path / "a.png")
    for _ in range(2):
        assert invoke("pipeline", image, "-o", tmp_path / "link").exit_code == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "manifest.json").is_file()


def test_foreign_files_in_an_earlier_run_are_not_deleted(tmp_path):
    """A cnnx folder the user added a file to is refused without --force: the file is not cnnx's to delete."""
    image = noise(tmp_path / "a.png")
    assert invoke("pipeline", image, "-o", tmp_path / "out").exit_code == 0
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = invoke("pipeline", image, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "notes.txt" in result.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


USER_FILES = {"keep.txt": "top", "cnnx-out/keep.txt": "in the default root", "mine/keep.txt": "a folder of mine"}
NAMES = ["a.png", "..png", "...png", "a-2.png", "sub/a.png", ".hidden.png"]
OUTS = [None, ".", "..", "out", "out/.", "cnnx-out", "mine", "link", "link/..", "out/../out", "cnnx-out/a"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3), st.sampled_from(OUTS)), max_size=4))
@pytest.mark.slow
def test_no_sequence_of_runs_deletes_a_file_cnnx_did_not_write(tmp_path_factory, runs):
    """Whatever images, names and -o values follow each other, every file the user made is still there."""
    root = tmp_path_factory.mktemp("prop")
    for name, text in USER_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "link").symlink_to(root / "mine")
    for name in NAMES:
        noise(root / name, side=16)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for images, out in runs:
            invoke("pipeline", *images, *(["-o", out] if out else []), "-j", "1")
    finally:
        os.chdir(cwd)
    for name, text in USER_FILES.items():
        assert (root / name).read_text() == text, name
    assert all((root / name).is_file() for name in NAMES)


# ---------------------------------------------------------------- signals


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A photo-sized image that takes the command a second or more."""
    return noise(tmp_path_factory.mktemp("big") / "big.png", side=5000)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_signals_leave_nothing_and_the_earlier_run_whole(big, tmp_path, signum, code):
    """SIGTERM, SIGHUP or Ctrl-C mid-run: the exit code says which, the earlier run is intact, no debris."""
    small = noise(tmp_path / "small.png")
    assert run_cnnx("pipeline", small, "-o", "out", cwd=tmp_path).returncode == 0
    earlier = (tmp_path / "out" / "manifest.json").read_text()
    process = subprocess.Popen([*CNNX, "pipeline", big, "-o", "out", "-q"], cwd=tmp_path, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    time.sleep(1.0)
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    if process.returncode == 0:
        pytest.skip("the run finished before the signal came")
    assert process.returncode == code and stderr.count("\n") == 1 and "nothing was written" in stderr, stderr
    assert (tmp_path / "out" / "manifest.json").read_text() == earlier
    assert not debris(tmp_path)


@pytest.mark.slow
def test_sigterm_on_filter_leaves_no_temporary_png(big, tmp_path):
    """cnnx filter stopped by SIGTERM leaves neither the PNG nor its temporary file."""
    process = subprocess.Popen(
        [*CNNX, "filter", big, "gaussian:sigma=8", "-o", "f.png", "--png-level", "9"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.8)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode in (0, 143)
    assert [p.name for p in tmp_path.iterdir()] == (["f.png"] if process.returncode == 0 else [])


@pytest.mark.slow
def test_ctrl_c_on_a_batch_stops_its_workers_and_tells_the_truth(big, tmp_path):
    """Ctrl-C (to the whole process group, as a terminal sends it) on -j 2: quick, quiet, honest, no debris."""
    for k in range(6):
        os.link(big, tmp_path / f"p{k}.png")
    process = subprocess.Popen(
        [*CNNX, "pipeline", *[f"p{k}.png" for k in range(6)], "-o", "out", "-j", "2", "-q"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(3.0)
    os.killpg(process.pid, signal.SIGINT)
    started = time.monotonic()
    stderr = process.communicate(timeout=60)[1]
    assert time.monotonic() - started < 15
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert f"{len(written)} of 6 images were written whole" in stderr, stderr
    assert all((tmp_path / "out" / name / "manifest.json").is_file() for name in written)
    time.sleep(0.5)  # nothing may go on writing after the parent said it stopped
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written if written else True
    assert not debris(tmp_path)


@pytest.mark.parametrize("worker", [False, True])
def test_a_second_signal_does_not_cut_a_stops_cleanup_short(tmp_path, worker):
    """A stop's cleanup runs whole even when more signals come while it runs (a second Ctrl-C, or the SIGTERM a
    process pool sends each worker when one ends): the process then ends with the first signal's code."""
    script = f"""
import os, signal, sys, time
from pathlib import Path
from cnnx.base import signals
signals.install(worker={worker})
folder = Path({str(tmp_path)!r})
try:
    with signals.job():
        try:
            (folder / "started").touch()
            time.sleep(30)
        finally:
            (folder / "cleaning").touch()
            time.sleep(1.5)  # the cleanup, during which the second signal comes
            (folder / "cleaned").touch()
except signals.Stopped as stop:
    sys.exit(stop.exit_code)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    while not (tmp_path / "cleaning").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGHUP)
    stderr = process.communicate(timeout=30)[1]
    assert (tmp_path / "cleaned").exists(), stderr
    assert process.returncode == 143, stderr


# ---------------------------------------------------------------- special files


@pytest.mark.parametrize(
    "args",
    [
        ["pipeline", "fifo.png"],
        ["pipeline", "a.png", "--config", "fifo.png"],
        ["filter", "a.png", "sobel_x", "-o", "fifo.png"],
        ["pipeline", "a.png", "--config", "/dev/urandom"],
        ["filter", "/dev/zero", "sobel_x"],
        ["pipeline", "a.png", "--spec", "conv(fifo.npy)"],
        ["pipeline", "a.png", "--spec", "conv(zero.npy)"],
    ],
)
@pytest.mark.slow
def test_special_files_are_refused_at_once(tmp_path, args):
    """A FIFO or a device as image, pipeline file, weights or output is refused in one line, never waited on."""
    noise(tmp_path / "a.png")
    os.mkfifo(tmp_path / "fifo.png")
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "zero.npy").symlink_to("/dev/zero")
    result = run_cnnx(*args, cwd=tmp_path, timeout=30)
    first, *rest = result.stderr.splitlines()
    assert result.returncode == 2 and first.startswith("cnnx: error:") and ("pipe" in first or "device" in first)
    assert not rest or rest[-1].strip() == "^"  # a spec's error points at the place


@pytest.mark.slow
def test_folders_say_what_they_skipped(tmp_path):
    """Link loops, dangling links and FIFOs inside a folder are passed over with a note each."""
    noise(tmp_path / "d" / "a.png")
    os.mkfifo(tmp_path / "d" / "pipe.png")
    (tmp_path / "d" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    result = run_cnnx("pipeline", "d", "-o", "out", "-j", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = result.stderr
    assert "pipe.png" in notes and "gone.png" in notes and "loop" in notes and "skipped" in notes


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize(
    "spec", ["conv(sobel_x; dilation=12000)", "avgpool(30000, padding=15000)", "conv(box:size=51; dilation=300)"]
)
def test_the_guard_sees_what_stages_allocate(tmp_path, spec):
    """Huge dilation or padding on a small image: refused under a 1G budget, with the estimate, before any work."""
    image = noise(tmp_path / "a.png", side=64)
    result = invoke("pipeline", image, "--spec", spec, "--max-memory", "256M", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "needs about" in result.stderr and "a.png" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "spec",
    [
        "conv(sobel_x; dilation=300)",
        "avgpool(201, padding=100)",
        "maxpool(31, stride=1, padding=15)",
        "conv(random:4; dilation=90)",
        "conv(gaussian:sigma=6; padding_mode=reflect)",
        "conv(sobel_x, laplacian; combine=depthwise, padding=40)",
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_a_stage_allocates_no_more_than_its_workspace(spec, threads):
    """What a stage's op really allocates (tracemalloc) beyond its output stays within the workspace it declares."""
    import tracemalloc

    (stage,) = load_pipeline(spec=spec).stages
    image = np.random.default_rng(0).random((3, 300, 260), dtype=np.float32)
    ops.set_num_threads(threads)
    try:
        stage.apply(image)  # warm caches
        declared = stage.workspace(image.shape)
        tracemalloc.start()
        try:
            out = stage.apply(image)
            peak = tracemalloc.get_traced_memory()[1] - out.nbytes
        finally:
            tracemalloc.stop()
    finally:
        ops.set_num_threads(None)
    assert peak <= 1.1 * declared + 65536, (peak, declared)


def test_too_many_stages_are_refused(tmp_path):
    """A pipeline file of 10,000 stages is refused at once, not run out of memory."""
    config = tmp_path / "p.toml"
    config.write_text('[[stage]]\nop = "relu"\n' * 10_000)
    result = invoke("pipeline", noise(tmp_path / "a.png"), "--config", config)
    assert result.exit_code == 2 and "at most 256 stages" in result.stderr


def test_a_huge_array_is_refused_from_its_header(tmp_path):
    """A .npy whose header declares 50000x50000 is refused before its data is read (here there is none)."""
    path = tmp_path / "k.npy"
    with path.open("wb") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (50000, 50000)})
    with pytest.raises(CnnxError, match="more than"):
        weights.read_array(path)
    assert invoke("filter", noise(tmp_path / "a.png"), path).exit_code == 2


def test_unused_members_of_an_archive_are_never_read(tmp_path):
    """A .npz whose other member would decompress to 4 GiB gives its weights without touching that member."""
    import zipfile

    path = tmp_path / "w.npz"
    np.savez(path, weight=np.ones((3, 8), np.float32))
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("junk.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30,)})
        zeros = bytes(1 << 20)
        for _ in range(8):  # 8 MiB written: the header claims 4 GiB; a reader of it would fail or blow up
            member.write(zeros)
    key, array, bias = weights.layer_arrays(path)
    assert key == "weight" and array.shape == (3, 8) and bias is None


def test_explain_has_a_memory_guard(tmp_path):
    """explain relu, pool and conv on an image check the budget from its header first."""
    image = noise(tmp_path / "a.png", side=512)
    for args in (["relu", image], ["pool", image], ["conv", image, "--at", "3,3"]):
        result = invoke("explain", *args, "--max-memory", "64K")
        assert result.exit_code == 2 and "needs about" in result.stderr, args


# ---------------------------------------------------------------- limits that could be stepped around


def test_later_frames_obey_the_pixel_limit(tmp_path):
    """--frame 1 of a TIFF whose second page is large is refused under --max-pixels, before it is decoded."""
    path = tmp_path / "pages.tif"
    small, large = Image.new("L", (10, 10)), Image.new("L", (400, 400))
    small.save(path, save_all=True, append_images=[large])
    assert load_image(path, max_pixels=1000).array.shape == (1, 10, 10)
    with pytest.raises(CnnxError, match="frame 1"):
        load_image(path, max_pixels=1000, frame=1)


@pytest.mark.parametrize("name", ["../../..", "/etc/passwd", "shapes/../shapes", "SHAPES", ""])
def test_model_names_are_names_not_paths(name):
    """--model takes only the name of a model cnnx ships."""
    with pytest.raises(CnnxError, match="unknown model"):
        load_model(name)


@pytest.mark.parametrize("size", ["0.5", "0", "-1G", "inf", "nan", "1e400", "lots"])
def test_memory_sizes_are_checked(tmp_path, size):
    """--max-memory takes a finite size of at least a byte; anything else is an error, never the default."""
    result = invoke("pipeline", noise(tmp_path / "a.png"), "--max-memory", size, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "memory size" in result.stderr


# ---------------------------------------------------------------- one line, exit 2, never a traceback


DEEP = "[" * 600 + "1" + "]" * 600


@pytest.mark.parametrize(
    "args",
    [
        ["filter", "a.png", DEEP],
        ["pipeline", "a.png", "--spec", f"conv({DEEP})"],
        ["explain", "conv", "--input", DEEP],
        ["filters", DEEP],
        ["pipeline", "a.png", "--range", "-inf,inf", "--normalize", "fixed"],
        ["pipeline", "a.png", "--range", "nan,1", "--normalize", "fixed"],
        ["pipeline", "a.png", "--spec", "conv(sobel_x; bias=nan)"],
        ["pipeline", "a.png", "--spec", "leaky_relu(inf)"],
    ],
)
def test_bad_values_are_one_line(tmp_path, monkeypatch, args):
    """Deeply nested matrices and non-finite numbers are refused in one line with exit 2."""
    monkeypatch.chdir(tmp_path)
    noise(tmp_path / "a.png")
    result = invoke(*args)
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 2 and result.stderr.startswith("cnnx: error:"), result.stderr


@pytest.mark.parametrize(
    "toml",
    [
        b"\xff\xfe[[stage]]\n",
        b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n",
        b"stage = [1, 2]\n",
        b'stage = ["conv"]\n',
        b"[[stage]]\nop = [1]\n",
        b'[[stage]]\nop = "conv"\nfilters = ["sobel_x"]\nbias = nan\n',
        b'[[stage]]\nop = "leaky_relu"\nslope = inf\n',
    ],
)
def test_bad_pipeline_files_are_one_line(tmp_path, toml):
    """A pipeline file that is not UTF-8, nests too deep, or holds stages that are not tables: exit 2, one line."""
    (tmp_path / "p.toml").write_bytes(toml)
    result = invoke("pipeline", noise(tmp_path / "a.png"), "--config", tmp_path / "p.toml")
    assert result.exit_code == 2 and result.stderr.startswith("cnnx: error:") and "Traceback" not in result.output


def test_shipped_models_need_valid_metadata(tmp_path, monkeypatch):
    """A model file without metadata, or with metadata that is not an object, is refused in one line."""
    monkeypatch.setattr(weights, "MODELS", tmp_path)
    np.savez(tmp_path / "nometa.npz", **{"fc.weight": np.ones((2, 2), np.float32)})
    np.savez(tmp_path / "listmeta.npz", meta=np.array(json.dumps([1, 2])))
    np.savez(tmp_path / "partial.npz", meta=np.array(json.dumps({"classes": ["a"]})))
    for name in ("nometa", "listmeta", "partial"):
        with pytest.raises(CnnxError, match="metadata"):
            load_model(name)


# ---------------------------------------------------------------- batches survive every kind of failure


def _killer(job):
    """A job whose worker process dies, as one the system kills for memory does."""
    if job.image.name == "die.png":
        os.kill(os.getpid(), signal.SIGKILL)
    return run_job_reporting(job)


@pytest.mark.slow
def test_a_dead_worker_fails_its_image_and_the_rest_go_on(tmp_path):
    """A worker killed by the system fails the image it ran, named, and every other image is processed."""
    names = ["a.png", "die.png", "b.png", "c.png"]
    jobs = [
        Job(noise(tmp_path / n, seed=k), tmp_path / "out" / n[:-4], Chain(load_pipeline())) for k, n in enumerate(names)
    ]
    outcomes = run_batch(jobs, processes=2, work=_killer)
    errors = {o.job.image.name: o.error for o in outcomes}
    assert errors["die.png"] and "worker process died" in errors["die.png"]
    assert [errors[n] for n in ("a.png", "b.png", "c.png")] == [None] * 3


def test_memory_error_in_one_image_is_listed_and_the_rest_run(tmp_path, monkeypatch):
    """-j 1: a MemoryError in one image is listed with it at the end; the images after it are processed."""
    import cnnx.app.jobs

    real = cnnx.app.jobs.load_image

    def failing(path, **options):
        if Path(path).name == "b.png":
            raise MemoryError
        return real(path, **options)

    monkeypatch.setattr(cnnx.app.jobs, "load_image", failing)
    images = [noise(tmp_path / f"{n}.png") for n in "abc"]
    result = invoke("pipeline", *images, "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 1 and "b.png: out of memory" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]


# ---------------------------------------------------------------- non-finite numbers


def test_non_finite_results_are_told_and_the_manifest_stays_json(tmp_path):
    """A float image holding +-3e38 overflows to infinity in a conv: the table says so, the manifest is strict JSON."""
    values = np.full((32, 32), 3e38, np.float32)
    values[::2] = -3e38
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    result = invoke("pipeline", path, "-o", tmp_path / "out", "--spec", "conv(sobel_x, box) -> relu")
    assert result.exit_code == 0, result.output
    assert "NaN or infinite" in result.stdout

    def refuse(constant):
        raise AssertionError(f"{constant} in manifest.json")

    record = json.loads((tmp_path / "out" / "manifest.json").read_text(), parse_constant=refuse)
    assert record["stages"][1]["stats"]["nonfinite"] > 0


def test_four_dimensional_weights_keep_the_kernel_size_limit(tmp_path):
    """Filters from a file are held to the 99x99 limit of every kernel."""
    np.save(tmp_path / "w.npy", np.ones((1, 1, 1, 500), np.float32))
    result = invoke("pipeline", "--spec", f"conv({tmp_path / 'w.npy'})", "--print-config")
    assert result.exit_code == 2 and "at most 99x99" in result.stderr


def test_nan_weights_are_refused(tmp_path):
    """NaN in a weight file is refused when the pipeline is read."""
    np.save(tmp_path / "k.npy", np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32))
    np.savez(tmp_path / "d.npz", weight=np.full((2, 4), np.nan, np.float32))
    for spec in (f"conv({tmp_path / 'k.npy'})", f"flatten -> dense({tmp_path / 'd.npz'})"):
        result = invoke("pipeline", "--spec", spec, "--print-config")
        assert result.exit_code == 2 and "finite" in result.stderr


# ---------------------------------------------------------------- process-wide state


def test_concurrent_loads_keep_pillows_limit_and_blas_threads(tmp_path):
    """Eight threads probing and loading images while others run ops leave Pillow's and BLAS's settings as found."""
    from threadpoolctl import threadpool_info

    limit = Image.MAX_IMAGE_PIXELS
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    images = [noise(tmp_path / f"{k}.png", side=64, seed=k) for k in range(8)]
    seen_none = []

    def work(path: Path) -> None:
        for _ in range(20):
            probe_image(path)
            load_image(path, max_pixels=10**9)
            ops.conv2d(np.ones((3, 40, 40), np.float32), np.ones((4, 3, 3, 3), np.float32))

    threads = [threading.Thread(target=work, args=(p,)) for p in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen_none.append(Image.MAX_IMAGE_PIXELS is None)
    assert limit == Image.MAX_IMAGE_PIXELS and not any(seen_none)
    assert [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"] == blas


def test_umask_is_read_without_changing_it():
    """Reading the file-creation mask leaves it as it was, for every thread."""
    from cnnx.base.files import umask

    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


# ---------------------------------------------------------------- the smaller ones


@pytest.mark.slow
def test_a_closed_pipe_is_no_error(tmp_path):
    """cnnx pipeline IMAGE | head -2: quiet, exit 0, every file written."""
    noise(tmp_path / "a.png")
    script = f"{' '.join(CNNX)} pipeline a.png -o out | head -2 >/dev/null; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "0" and result.stderr == "", result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_stage_errors_name_the_image(tmp_path):
    """'the 1x1 input is smaller than the window' says which file, alone and in a batch."""
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    alone = invoke("pipeline", tiny, "-o", tmp_path / "one")
    batch = invoke("pipeline", tiny, noise(tmp_path / "ok.png"), "-o", tmp_path / "many", "-j", "1")
    assert str(tiny) in alone.stderr and "smaller than" in alone.stderr
    assert f"{tiny}: stage 3" in batch.stderr


def test_a_run_writing_the_same_folder_is_refused(tmp_path):
    """While another run holds the destination, a second one says so instead of silently replacing it."""
    image = noise(tmp_path / "a.png")
    lock = os.open(tmp_path / ".out.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = invoke("pipeline", image, "-o", tmp_path / "out")
    finally:
        os.close(lock)
    assert result.exit_code == 2 and "another cnnx run" in result.stderr
    assert invoke("pipeline", image, "-o", tmp_path / "out").exit_code == 0
    assert not debris(tmp_path)


def test_linear_broadcasts_a_row_bias_as_torch_does():
    """A bias of shape (1, out) is added to every row, as torch.nn.functional.linear does."""
    x, w = np.arange(6, dtype=np.float32).reshape(2, 3), np.eye(3, dtype=np.float32)[:2]
    np.testing.assert_array_equal(ops.linear(x, w, [[10, 20]]), [[10, 21], [13, 24]])
    with pytest.raises(ValueError, match="broadcast"):
        ops.linear(x, w, np.zeros((3, 2)))


STOP_AFTER = """
import os, signal, sys, fcntl, pathlib, tempfile
owner, name = {call!r}.rsplit(".", 1)
holder = {{"tempfile": tempfile, "fcntl": fcntl, "os": os, "pathlib.Path": pathlib.Path}}[owner]
real = getattr(holder, name)

def made(*args, **kwargs):
    result = real(*args, **kwargs)
    if not made.done:
        made.done = True
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next instant Python may run a handler: the caller's
    return result

made.done = False
setattr(holder, name, made)
sys.argv = ["cnnx", *{arguments!r}]
from cnnx.app.cli import main
main()
"""


@pytest.mark.parametrize("call, arguments", [
    ("tempfile.mkdtemp", ["pipeline", "in.png", "-o", "deep/er/out"]),
    ("pathlib.Path.mkdir", ["pipeline", "in.png", "-o", "deep/er/out"]),
    ("fcntl.flock", ["pipeline", "in.png", "-o", "out"]),
    ("tempfile.mkstemp", ["filter", "in.png", "sobel_x", "-o", "f.png"]),
    ("os.replace", ["filter", "in.png", "sobel_x", "-o", "f.png"]),
])
def test_a_stop_the_instant_a_file_is_made_leaves_nothing(tmp_path, call, arguments):
    """Ctrl-C landing the moment after cnnx made a temporary folder, a lock, a parent folder or a temporary file
    (before its name was kept) still leaves nothing behind: each is made and recorded with signals held."""
    noise(tmp_path / "in.png")
    process = subprocess.run([sys.executable, "-c", STOP_AFTER.format(call=call, arguments=arguments)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 130 and process.stderr.startswith("cnnx: interrupted"), process.stderr
    assert "Traceback" not in process.stderr and process.stderr.count("\n") == 1, process.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    whole = ["f.png", "in.png"] if call == "os.replace" else ["in.png"]  # a file in place is whole; nothing else
    assert left == whole, left
    if call == "os.replace":
        with Image.open(tmp_path / "f.png") as written:
            assert written.size == (48, 48)


def test_a_stop_that_lands_where_python_drops_exceptions_comes_back_where_it_can_unwind(tmp_path):
    """A signal's Stopped raised inside a finaliser (or C code calling back) would be dropped with an "Exception
    ignored" report and the stop lost (a CI run met one importing pathlib): it is sent again and raised where the
    stack unwinds, with nothing printed."""
    script = tmp_path / "finaliser.py"
    script.write_text(
        "import signal, time\n"
        "from cnnx.base import signals\n"
        "signals.install()\n"
        "class Finalised:\n"
        "    def __del__(self):\n"
        "        signals._handler(signal.SIGINT, None)  # Ctrl-C arriving inside a finaliser\n"
        "try:\n"
        "    thing = Finalised()\n"
        "    del thing\n"
        "    for _ in range(200):\n"
        "        time.sleep(0.01)\n"
        "    print('not stopped')\n"
        "except signals.Stopped as stop:\n"
        "    print('stopped', stop.exit_code)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.stdout, done.stderr) == ("stopped 130\n", "")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_any_instant_prints_one_line_and_exits_with_its_code(tmp_path, signum):
    """From process start on, while modules are still importing included, SIGTERM or Ctrl-C ends cnnx with the stop
    line and 128 + signal (or, before Python has run a line of cnnx, the plain signal), never a traceback, no debris."""
    image = noise(tmp_path / "in.png", side=600)
    script = Path(sys.executable).parent / "cnnx"  # the installed entry point, as a user runs it
    delays = np.random.default_rng(signum).uniform(0.0, 1.0, 16)
    for k, delay in enumerate(sorted(delays)):
        command = [script, "filter", image, "sobel_x", "-o", f"f{k}.png"] if k % 2 else [
            script, "pipeline", image, "-o", f"out{k}"]
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signum)
        stderr = process.communicate(timeout=60)[1]
        assert "Traceback" not in stderr and stderr.count("\n") <= 1, (delay, stderr)
        if process.returncode == -signum:  # killed before the interpreter reached cnnx: nothing ran, nothing said
            assert stderr == "", (delay, stderr)
        else:
            assert process.returncode in (0, 128 + signum), (delay, process.returncode, stderr)
            assert process.returncode == 0 or stderr.startswith("cnnx: "), (delay, stderr)
    assert not debris(tmp_path)
