"""No user file is ever lost and outputs never collide; odd settings and numbers get one line, not a traceback."""

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnx.app import jobs
from cnnx.app.cli import app
from cnnx.io.images import load_image

CNNX = [sys.executable, "-m", "cnnx"]


def invoke(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def picture(path: Path, seed: int = 0, side: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), np.uint8)).save(path)
    return path


def debris(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if any(m in p.name for m in (".tmp-", ".old-", ".lock"))]


def test_unicode_names_keep_their_letters_and_never_share_a_folder(tmp_path, monkeypatch):
    """猫.png then 狗.png write cnnx-out/猫 and cnnx-out/狗; the cat's maps are still there after the dog's run."""
    monkeypatch.chdir(tmp_path)
    picture(tmp_path / "猫.png", seed=1)
    picture(tmp_path / "狗.png", seed=2)
    assert invoke("pipeline", "猫.png").exit_code == 0
    assert invoke("pipeline", "狗.png").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "cnnx-out").iterdir()) == ["狗", "猫"]
    assert json.loads((tmp_path / "cnnx-out" / "猫" / "manifest.json").read_text())["input"]["path"] == "猫.png"


@pytest.mark.parametrize("names", [("a?.png", "a*.png"), ("x y.png", "x-y.png"), ("\u00e9.png", "e\u0301.png")])
@pytest.mark.slow
def test_names_alike_once_made_safe_get_distinct_folders_and_say_so(tmp_path, monkeypatch, names):
    """Two images whose names become the same folder name: the second goes to NAME-2, with a note; running the
    first again replaces its own folder, never the other's."""
    monkeypatch.chdir(tmp_path)
    first, second = (picture(tmp_path / name, seed=k) for k, name in enumerate(names))
    assert invoke("pipeline", first.name).exit_code == 0
    result = invoke("pipeline", second.name)
    assert result.exit_code == 0 and "holds the maps of another image" in result.stderr, result.stderr
    folders = sorted((tmp_path / "cnnx-out").iterdir())
    assert len(folders) == 2 and folders[1].name == folders[0].name + "-2"
    again = invoke("pipeline", first.name)
    assert again.exit_code == 0 and "another image" not in again.stderr
    assert len(list((tmp_path / "cnnx-out").iterdir())) == 2


def test_a_file_saved_while_a_run_is_written_survives(tmp_path, monkeypatch):
    """A file the user saves into the output folder while cnnx writes the next run there is found at the swap:
    the run is refused, the file and the run before stay whole, nothing is left behind."""
    image = picture(tmp_path / "in.png")
    out = tmp_path / "out"
    assert invoke("pipeline", image, "-o", out).exit_code == 0
    before = (out / "manifest.json").read_bytes()
    real = jobs.write_manifest

    def meanwhile(folder, record):
        (out / "notes.txt").write_text("my notes")  # the user saves a file as the run is finishing
        real(folder, record)

    monkeypatch.setattr(jobs, "write_manifest", meanwhile)
    result = invoke("pipeline", image, "-o", out, "-s", "conv(sobel_x) -> relu")
    assert result.exit_code == 2 and "notes.txt" in result.stderr and "while this run" in result.stderr
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "manifest.json").read_bytes() == before
    assert not debris(tmp_path)


@pytest.mark.slow
def test_a_batch_never_reads_its_own_output_back_in(tmp_path, monkeypatch):
    """-o inside the input folder: a second and third run still see two images (not 20, or 132)."""
    photos = tmp_path / "photos"
    picture(photos / "a.png", seed=1)
    picture(photos / "b.png", seed=2)
    for _ in range(3):
        result = invoke("pipeline", photos, "-o", photos / "out", "-j", "1", "-q")
        assert result.exit_code == 0 and "2 of 2 images done" in result.stdout, result.output
    assert sorted(p.name for p in (photos / "out").iterdir()) == ["a", "b"]
    monkeypatch.chdir(photos)  # the default output folder inside the input folder, and filter's PNGs too
    for command in (["pipeline", "."], ["filter", ".", "sobel_x"], ["pipeline", "."], ["filter", ".", "sobel_x"]):
        result = invoke(*command, "-j", "1", "-q")
        assert result.exit_code == 0 and "2 of 2 images done" in result.stdout, (command, result.output)


@pytest.mark.slow
def test_a_full_disk_names_the_folder_and_keeps_the_run_before(tmp_path):
    """Writing stops short (here a file-size limit, as a full disk does): one line naming the output folder, the
    earlier run whole, no debris."""
    image = picture(tmp_path / "in.png", side=300)
    out = tmp_path / "out"
    assert invoke("pipeline", image, "-o", out).exit_code == 0
    before = (out / "manifest.json").read_bytes()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    process = subprocess.run([*CNNX, "pipeline", image, "-o", out, "--png-level", "0"], capture_output=True,
                             text=True, preexec_fn=small_files, timeout=120)
    assert process.returncode == 1, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "File too large" in lines[0], lines
    assert ".tmp-" not in lines[0]
    assert (out / "manifest.json").read_bytes() == before
    assert not debris(tmp_path)


@pytest.mark.parametrize("value", ["²", "١", "abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_in_the_environment_is_one_line(tmp_path, value):
    """CNNX_NUM_THREADS that is no positive whole number in ASCII digits: one line, exit 2, for any command."""
    image = picture(tmp_path / "in.png")
    result = invoke("filter", image, "sobel_x", "-o", tmp_path / "f.png", env={"CNNX_NUM_THREADS": value})
    assert result.exit_code == 2
    assert result.stderr.strip() == f"cnnx: error: CNNX_NUM_THREADS must be a whole number of threads, 1 or more; " \
                                    f"got {value!r}"


def test_arithmetic_that_overflows_is_said_in_one_line(tmp_path):
    """A kernel whose products pass float32's limit: the command says what share overflowed, with no numpy warning
    and no source path, and the values it shows are finite numbers."""
    image = picture(tmp_path / "in.png")
    result = invoke("filter", image, "[[3e38,3e38]]", "-o", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert "overflowed float32" in result.stdout and "Warning" not in result.output and ".py" not in result.output
    piped = invoke("pipeline", image, "-s", "conv([[3e38,3e38],[3e38,3e38]]) -> relu", "-o", tmp_path / "o")
    assert piped.exit_code == 0 and "inf" not in piped.stdout.split("NaN or infinite")[0].split("\n", 3)[3]


def _png16(path: Path, values: np.ndarray, colour: int, transparent: int | None = None) -> Path:
    """A 16-bit PNG written byte by byte (Pillow writes no 16-bit colour PNGs): grey (0) or RGB (2)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = values.shape[:2]
    rows = b"".join(b"\x00" + values[r].astype(">u2").tobytes() for r in range(height))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
    if transparent is not None:
        data += chunk(b"tRNS", struct.pack(">H", transparent))
    path.write_bytes(data + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_a_16_bit_grey_png_with_transparency_is_composited_like_an_8_bit_one(tmp_path):
    """The transparent grey value of a 16-bit PNG loads as white (1.0), as in an 8-bit PNG; the rest keep 16 bits."""
    values = np.array([[0, 20000, 1], [300, 20000, 65535]], np.uint16)
    loaded = load_image(_png16(tmp_path / "g.png", values, 0, transparent=20000)).array[0]
    np.testing.assert_array_equal(loaded, np.where(values == 20000, 1.0, values / 65535).astype(np.float32))
    eight = tmp_path / "g8.png"
    Image.fromarray(np.array([[0, 77, 255]], np.uint8)).save(eight, transparency=77)
    assert load_image(eight).array[0, 0, 1] == 1.0


def test_a_48_bit_png_is_read_as_the_readme_says_with_a_note(tmp_path):
    """A PNG of 16 bits a colour channel: read at 8 bits a channel (the docs say so), and the run says so too."""
    values = np.zeros((4, 4, 3), np.uint16)
    values[0, 0] = [65535, 257 * 3, 1000]
    path = _png16(tmp_path / "c.png", values, 2)
    loaded = load_image(path, color=True)
    assert loaded.array[:, 0, 0].tolist() == pytest.approx([1.0, 3 / 255, 3 / 255])
    assert any("16 bits a colour channel are read as 8" in note for note in loaded.notes)
    docs = (Path(__file__).parent.parent / "docs" / "pipelines.md").read_text()
    assert "read at 8 bits a channel" in docs
    result = invoke("filter", path, "sobel_x", "-o", tmp_path / "f.png")
    assert "read as 8" in result.stderr


def test_model_text_and_file_names_reach_the_terminal_escaped(tmp_path, monkeypatch):
    """A file name holding ESC and BEL is printed escaped in errors and tables, never raw."""
    monkeypatch.chdir(tmp_path)
    name = "a\x1b[2Jb\x07.png"
    picture(tmp_path / name)
    (tmp_path / "bad\x1b]0;x\x07.png").write_text("no picture")
    for args in (["pipeline", name, "-o", "o1"], ["pipeline", "bad\x1b]0;x\x07.png"], ["pipeline", ".", "-j", "1"]):
        result = invoke(*args)
        assert "\x1b" not in result.output and "\x07" not in result.output, repr(result.output)
    assert os.path.exists(tmp_path / "o1" / "manifest.json")
