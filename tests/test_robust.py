"""Any image in, nothing lost: every mode and format, broken and hostile files, interrupts, path safety."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import corpus
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.base.errors import CnnxError
from cnnx.io.images import load_image
from cnnx.io.output import safe_name
from cnnx.render import maps as maps_module
from cnnx.render.maps import RunWriter
from cnnx.sources.kernels import parse_filters
from cnnx.sources.pipeline import run
from cnnx.sources.stages import Activation

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return corpus.valid(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return corpus.broken(tmp_path_factory.mktemp("bad"))


NAMES_GOOD = [
    "mode 1", "mode L", "mode LA", "mode P", "mode P with transparency", "mode RGB", "mode RGBA", "mode CMYK",
    "mode I;16", "mode I", "mode F", "JPEG", "GIF", "BMP", "TIFF", "WebP", "EXIF-rotated JPEG", "animated GIF",
]
NAMES_BAD = [
    "truncated PNG", "truncated JPEG", "bad CRC", "zero bytes", "random bytes", "text named .png", "SVG", "PDF",
    "decompression bomb",
]


@pytest.mark.parametrize("name", NAMES_GOOD)
def test_every_mode_and_format_loads_upright_in_unit_range(good, name):
    """Each mode and format loads as float32 in [0, 1] at the size it is shown, upright."""
    path, (height, width) = good[name]
    for color in (False, True):
        array = load_image(path, color=color).array
        assert array.shape == (3 if color else 1, height, width) and array.dtype == np.float32
        assert array.min() >= 0 and array.max() <= 1


@pytest.mark.parametrize("name", NAMES_GOOD)
def test_every_accepted_file_runs_through_the_cli(good, name, tmp_path):
    """Every accepted file gives a full output folder whose input map has the file's shown size."""
    path, (height, width) = good[name]
    out = tmp_path / "out"
    result = invoke("pipeline", path, "-o", out, "--min-size", "1")
    assert result.exit_code == 0, result.output
    with Image.open(out / "00_input" / "ch00_gray.png") as shown:
        assert shown.size == (width, height)
    assert (out / "manifest.json").exists()


def test_gradient_values_survive_each_lossless_mode(good):
    """The dark-to-light gradient keeps its exact values in L, I;16 (16-bit, scaled by 65535), F, BMP and TIFF."""
    want = corpus.GRADIENT / 255.0
    for name in ("mode L", "mode I;16", "mode F"):
        np.testing.assert_allclose(load_image(good[name][0]).array[0], want, atol=1e-6, err_msg=name)
    # mode I holds gradient * 100 (up to 25,500): a 16-bit range, scaled by 65535, not clipped.
    np.testing.assert_allclose(
        load_image(good["mode I"][0]).array[0], corpus.GRADIENT.astype(np.int64) * 100 / 65535, atol=1e-6
    )
    rgb = load_image(good["BMP"][0], color=True).array
    np.testing.assert_allclose(rgb[0], want, atol=1e-6)
    np.testing.assert_allclose(rgb[1], want[:, ::-1], atol=1e-6)


def test_alpha_is_composited_over_white(good):
    """LA with alpha equal to the grey level: v * a + (1 - a) with v = a."""
    a = corpus.GRADIENT / 255.0
    np.testing.assert_allclose(load_image(good["mode LA"][0]).array[0], a * a + 1 - a, atol=1e-6)
    clear = load_image(good["mode P with transparency"][0], color=True).array
    assert (clear[:, :, 0] == 1).all()  # the first column holds palette index 0, transparent: white
    np.testing.assert_allclose(clear[:, :, -1], 7 * 36 / 255, atol=1e-6)  # the last column, index 7, opaque


def test_exif_rotation_turns_the_gradient(good):
    """The phone JPEG (rotate 90 clockwise) shows its red left-to-right gradient running top to bottom."""
    red = load_image(good["EXIF-rotated JPEG"][0], color=True).array[0]
    assert red.shape == (48, 32)
    row_means = red.mean(axis=1)
    assert row_means[0] < 0.1 and row_means[-1] > 0.9


def test_animated_gif_first_frame_with_a_note_or_the_frame_asked_for(good, tmp_path):
    """An animated GIF gives its first frame and says so; --frame N picks another; a missing frame is an error."""
    path = good["animated GIF"][0]
    result = invoke("pipeline", path, "-o", tmp_path / "a")
    assert result.exit_code == 0 and "has 3 frames; used frame 0" in result.stderr
    assert load_image(path).array.max() == 0
    assert load_image(path, frame=2).array.min() == 1
    result = invoke("pipeline", path, "-o", tmp_path / "b", "--frame", "5")
    assert result.exit_code == 2 and "has 3 frames; --frame counts from 0" in result.stderr


@pytest.mark.parametrize("name", NAMES_BAD)
def test_broken_files_are_refused_clearly(bad, name, tmp_path, monkeypatch):
    """Each broken file: a short message naming the file and the problem, exit 2, no traceback, no output folder."""
    path, words = bad[name]
    with pytest.raises(CnnxError, match=words):
        load_image(path)
    monkeypatch.chdir(tmp_path)
    result = invoke("pipeline", path)
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and words in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bomb_is_refused_before_decoding_and_the_limit_can_be_raised(bad, tmp_path):
    """The 40,000 x 40,000 bomb is refused at once with its size; under a raised limit it fails as truncated instead."""
    path = bad["decompression bomb"][0]
    start = time.perf_counter()
    result = invoke("pipeline", path, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 5
    assert "(40000x40000)" in result.stderr and "--max-pixels" in result.stderr
    small = tmp_path / "small.png"
    Image.new("L", (100, 100)).save(small)
    assert invoke("pipeline", small, "-o", tmp_path / "s", "--max-pixels", "9999").exit_code == 2
    assert invoke("pipeline", small, "-o", tmp_path / "s", "--max-pixels", "10000").exit_code == 0


def test_folders_and_missing_paths(tmp_path):
    """A folder with no images, a pattern matching nothing, and a missing file, are one-line errors."""
    (tmp_path / "notes.txt").write_text("no pictures here")
    for path, words in (
        (tmp_path, "no image files in this folder"),
        (tmp_path / "*.jpg", "no file matches"),
        (tmp_path / "nope.png", "no such file"),
    ):
        result = invoke("pipeline", path, "-o", tmp_path / "out")
        assert result.exit_code == 2 and words in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    """A file without read permission is a one-line error."""
    path = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(path)
    path.chmod(0)
    result = invoke("pipeline", path, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "permission denied" in result.stderr


@pytest.mark.parametrize(
    "size, spec, stage",
    [
        ((1, 1), None, "stage 3, maxpool(2)"),
        ((2, 2), "conv(sobel_x; padding=valid)", "stage 1, conv(sobel_x; padding=valid)"),
        ((1, 5000), None, "stage 3, maxpool(2)"),
    ],
)
def test_too_small_images_are_refused_up_front(tmp_path, size, spec, stage):
    """1x1, 2x2 under a 3x3 valid conv, and 1x5000 under 2x2 pooling are refused before any work, naming the stage."""
    path = tmp_path / "tiny.png"
    Image.new("L", size[::-1], 100).save(path)
    result = invoke("pipeline", path, "-o", tmp_path / "out", *(["--spec", spec] if spec else []))
    assert result.exit_code == 2 and stage in result.stderr
    assert not (tmp_path / "out").exists()


def test_extreme_aspect_ratio_runs(tmp_path):
    """A 1x5000 strip runs through a pipeline that can take it, and the maps keep their size."""
    path = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 5000), np.uint8)).save(path)
    result = invoke("pipeline", path, "-o", tmp_path / "out", "--spec", "conv(sobel_x) -> relu -> maxpool(1)")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "01_conv" / "ch00_sobel_x.png") as written:
        assert written.size[0] >= 5000 or written.size == (5000, 1)


def test_failure_on_the_third_png_leaves_nothing(tmp_path, monkeypatch, stripes):
    """A write that fails half-way (the 3rd PNG) exits 1 and leaves neither the folder nor a temporary one."""
    calls = []
    real = maps_module.write_png

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(maps_module, "write_png", failing)
    result = invoke("pipeline", stripes, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stripes.png"]


def test_failure_keeps_the_previous_run(tmp_path, monkeypatch, stripes):
    """When a rerun fails, the earlier run's folder is still there, unchanged."""
    out = tmp_path / "out"
    assert invoke("pipeline", stripes, "-o", out).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    monkeypatch.setattr(maps_module, "write_png", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
    assert invoke("pipeline", stripes, "-o", out).exit_code == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.fixture
def stripes(tmp_path):
    path = tmp_path / "stripes.png"
    Image.fromarray(np.tile((np.arange(64) // 4 % 2 * 255).astype(np.uint8), (64, 1))).save(path)
    return path


@pytest.mark.slow
def test_sigint_leaves_nothing(tmp_path):
    """A real Ctrl-C (SIGINT) half-way through a run exits 130 and leaves no folder, temporary or final."""
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1600, 1600), np.uint8)).save(big)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnx", "pipeline", str(big), "-o", str(out), "--png-level", "9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*/01_conv")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_debug_shows_the_traceback(tmp_path):
    """--debug adds the traceback to a known error, for bug reports."""
    result = invoke("--debug", "pipeline", tmp_path / "nope.png")
    assert result.exit_code == 2 and "no such file" in result.stderr and "Traceback" in result.stderr


@pytest.mark.parametrize("label", ["../../etc/passwd", "/abs/path", "..", "a/../../b", "con:nul", "x" * 500, ""])
def test_crafted_names_cannot_leave_the_output_folder(tmp_path, label):
    """Map labels become file names that stay inside their stage folder."""
    name = safe_name(label)
    assert "/" not in name and name not in ("", ".", "..") and len(name) <= 80
    result = replace(run(np.zeros((1, 8, 8), np.float32), (Activation("relu"),))[1], labels=(label,))
    writer = RunWriter(tmp_path / "root")
    (tmp_path / "root").mkdir()
    writer.add(result)
    writer.finish()
    written = [p for p in tmp_path.rglob("*.png")]
    assert written and all(p.resolve().is_relative_to((tmp_path / "root").resolve()) for p in written)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.data())
@pytest.mark.slow
def test_fuzzed_image_bytes_never_escape(tmp_path_factory, data):
    """Valid images with bytes flipped, cut or inserted either load or raise CnnxError: never another exception."""
    folder = tmp_path_factory.mktemp("fuzz")
    kind = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    source = folder / f"seed.{kind.lower()}"
    Image.fromarray(corpus.GRADIENT).convert("RGB").save(source, format=kind)
    raw = bytearray(source.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    target = folder / f"fuzzed.{kind.lower()}"
    target.write_bytes(bytes(raw))
    try:
        array = load_image(target).array
        assert array.ndim == 3 and np.isfinite(array).all()
    except CnnxError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_fuzzed_kernel_specs_never_escape(text):
    """Any kernel spec text parses or raises CnnxError."""
    with contextlib.suppress(CnnxError):
        parse_filters(text)
