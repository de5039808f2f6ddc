"""The cnnx command, in-process through typer's CliRunner and once through the installed entry point."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnx import __version__
from cnnx.app.cli import app

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_png(path):
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def stripes_png(tmp_path):
    """64x64 vertical stripes, 8 pixels a period."""
    columns = (np.arange(64) // 4) % 2 * 255
    path = tmp_path / "stripes.png"
    Image.fromarray(np.tile(columns, (64, 1)).astype(np.uint8)).save(path)
    return path


def test_pipeline_writes_every_map_and_a_table(stripes_png, tmp_path):
    """The default pipeline writes 1 + 6 x 4 PNGs in stage folders and prints one table row per stage."""
    out = tmp_path / "out"
    result = invoke("pipeline", stripes_png, "-o", out)
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["00_input", "01_conv", "02_relu", "03_maxpool", "04_conv", "05_relu", "06_maxpool"]
    assert len(list(out.glob("*/ch*.png"))) == 25
    maps = [
        "ch00_vertical_edge.png",
        "ch01_horizontal_edge.png",
        "ch02_diagonal_edge.png",
        "ch03_antidiagonal_edge.png",
    ]
    assert sorted(p.name for p in (out / "03_maxpool").iterdir()) == [*maps, "colorbar.png", "montage.png", "tiles"]
    assert sorted(p.name for p in (out / "03_maxpool" / "tiles").iterdir()) == maps
    assert {p.name for p in out.iterdir() if p.is_file()} == {"index.html", "manifest.json", "overview.png"}
    for folder in folders:
        assert f"{folder}/" in result.stdout
    assert "4x32x32" in result.stdout and "wrote 25 maps" in result.stdout
    assert result.stderr == ""


def test_pipeline_pngs_show_vertical_edges_of_vertical_stripes(stripes_png, tmp_path):
    """Read back: the vertical-edge map of vertical stripes has bright lines; the horizontal-edge map is flat."""
    out = tmp_path / "out"
    invoke("pipeline", stripes_png, "-o", out, "--cmap", "gray", "--normalize", "minmax", "--scope", "map")
    vertical = read_png(out / "02_relu" / "ch00_vertical_edge.png")
    horizontal = read_png(out / "02_relu" / "ch01_horizontal_edge.png")
    assert vertical.shape == (128, 128)  # 64x64 upscaled by 2 to reach 128
    assert vertical.max() == 255 and (vertical == 0).mean() > 0.5
    assert (horizontal == 128).all()  # nothing left after ReLU: a constant map, drawn mid grey, no division by zero
    pooled = read_png(out / "06_maxpool" / "ch00_dog-sigma-1-of-vertical_edge.png")
    assert pooled.shape == (128, 128)  # 16x16 map drawn as 8x8-pixel squares
    assert (pooled.reshape(16, 8, 16, 8) == pooled[::8, ::8][:, None, :, None]).all()


def test_pipeline_manifest_maps_pixels_back_to_values(stripes_png, tmp_path):
    """manifest.json lists every file with the values black and white stand for."""
    out = tmp_path / "out"
    invoke("pipeline", stripes_png, "-o", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tool"] == "cnnx" and manifest["version"] == __version__
    conv = manifest["stages"][1]
    assert conv["shape"] == [4, 64, 64] and conv["receptive_field"] == [3, 3]
    first = conv["maps"][0]
    assert first["file"] == "01_conv/ch00_vertical_edge.png" and first["low"] == -first["high"] == -3
    assert len([m for s in manifest["stages"] for m in s["maps"]]) == 25
    assert manifest["drawing"]["scope"] == "block" and conv["cmap"] == "diverging"
    # The block's range is carried from the conv through its relu and pool.
    assert manifest["stages"][3]["maps"][0]["high"] == 3


def test_default_colours_map_back_to_values(stripes_png, tmp_path):
    """With the default diverging map, a pixel's colour-table index and the manifest's range give back its value."""
    from cnnx.render.draw import colormap

    out = tmp_path / "out"
    invoke("pipeline", stripes_png, "-o", out, "--min-size", "1")
    manifest = json.loads((out / "manifest.json").read_text())
    table = colormap("diverging").astype(int)
    conv = np.load(out / "01_conv" / "stage.npy") if (out / "01_conv" / "stage.npy").exists() else None
    assert conv is None  # raw arrays only with --save-raw
    invoke("pipeline", stripes_png, "-o", out, "--min-size", "1", "--save-raw")
    conv = np.load(out / "01_conv" / "stage.npy")
    entry = manifest["stages"][1]["maps"][0]
    with Image.open(out / entry["file"]) as written:
        assert written.mode == "P"  # a palette image: each pixel is its colour-table index
        palette = np.array(written.getpalette()[: 3 * 256]).reshape(256, 3)
        index = np.asarray(written).astype(int)
        rgb = np.asarray(written.convert("RGB")).astype(int)
    np.testing.assert_array_equal(palette, table)
    np.testing.assert_array_equal(rgb, table[index])
    back = entry["low"] + index / 255 * (entry["high"] - entry["low"])
    assert np.abs(back - conv[0]).max() <= (entry["high"] - entry["low"]) / 255


def test_pipeline_rerun_replaces_cleanly_and_identically(stripes_png, tmp_path):
    """Running twice into the same folder replaces it with byte-identical files."""
    out = tmp_path / "out"
    invoke("pipeline", stripes_png, "-o", out)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert invoke("pipeline", stripes_png, "-o", out).exit_code == 0
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first == second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pipeline_will_not_replace_a_folder_it_did_not_write(stripes_png, tmp_path):
    """A non-empty folder cnnx did not make is left alone without --force."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    result = invoke("pipeline", stripes_png, "-o", out)
    assert result.exit_code == 2
    assert "--force" in result.stderr and (out / "thesis.txt").read_text() == "precious"
    assert invoke("pipeline", stripes_png, "-o", out, "--force").exit_code == 0
    assert not (out / "thesis.txt").exists()


def test_pipeline_default_folder_is_named_after_the_image(stripes_png, tmp_path, monkeypatch):
    """Without -o the maps go to ./cnnx-out/IMAGE-NAME."""
    monkeypatch.chdir(tmp_path)
    assert invoke("pipeline", stripes_png).exit_code == 0
    assert (tmp_path / "cnnx-out" / "stripes" / "manifest.json").exists()


def test_pipeline_color_feeds_three_channels(tmp_path):
    """--color gives the input stage three maps: red, green, blue."""
    path = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8)).save(path)
    assert invoke("pipeline", path, "-o", tmp_path / "out", "--color").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "out" / "00_input").glob("ch*.png"))
    assert names == ["ch00_red.png", "ch01_green.png", "ch02_blue.png"]


def test_pipeline_spec_runs_the_given_stages(stripes_png, tmp_path):
    """--spec runs the stages written; the folders follow them and the table shows each stage's spec."""
    out = tmp_path / "out"
    result = invoke("pipeline", stripes_png, "-o", out, "--spec", "conv(sobel_x@) -> abs -> avgpool(4)")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["00_input", "01_conv", "02_abs", "03_avgpool"]
    assert len(list((out / "01_conv").glob("ch*.png"))) == 8
    assert "conv(sobel_x@)" in result.stdout and "8x16x16" in result.stdout


def test_print_config_round_trips_through_config(tmp_path):
    """--print-config prints TOML that --config reads back to the same pipeline."""
    printed = invoke("pipeline", "--print-config", "--preset", "random", "--color")
    assert printed.exit_code == 0 and 'color = "rgb"' in printed.stdout
    config = tmp_path / "mine.toml"
    config.write_text(printed.stdout)
    again = invoke("pipeline", "--print-config", "--config", config)
    assert again.stdout == printed.stdout


def test_spec_syntax_error_shows_a_caret(stripes_png, tmp_path):
    """A bad spec is reported with the spec and a caret, exit code 2, no traceback, and nothing written."""
    result = invoke("pipeline", stripes_png, "-o", tmp_path / "out", "--spec", "conv(sobel_x -> relu")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "cnnx: error: '(' is never closed; expected ')'",
        "  conv(sobel_x -> relu",
        "      ^",
    ]
    assert not (tmp_path / "out").exists()


def test_stage_that_cannot_run_is_refused_before_any_work(tmp_path):
    """A pipeline too deep for the image names the stage and writes nothing."""
    small = tmp_path / "small.png"
    Image.new("L", (3, 3)).save(small)
    result = invoke("pipeline", small, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "stage 6, maxpool(2)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_presets_lists_every_preset():
    """cnnx presets names each preset with its description."""
    result = invoke("presets")
    assert result.exit_code == 0
    for name in ("lesson", "edges", "pyramid", "random"):
        assert name in result.stdout


def test_filter_writes_signed_response(stripes_png, tmp_path):
    """cnnx filter writes the image-sized response: 0 is grey 128, the strongest edges black and white."""
    target = tmp_path / "edges.png"
    result = invoke("filter", stripes_png, "sobel_x", "-o", target)
    assert result.exit_code == 0, result.output
    pixels = read_png(target)
    assert pixels.shape == (64, 64)
    assert set(np.unique(pixels)) == {0, 128, 255}
    assert "drawn from -4 to 4 (gray, square-root scale)" in result.stdout
    with Image.open(target) as written:
        assert written.info["cnnx:low"] == "-4.0" and written.info["cnnx:high"] == "4.0"


def test_filter_with_a_colour_map_and_convention(stripes_png, tmp_path):
    """--cmap diverging writes RGB; --convention convolution flips the kernel, negating an antisymmetric filter."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert invoke("filter", stripes_png, "sobel_x", "-o", a, "--cmap", "diverging").exit_code == 0
    flipped = invoke("filter", stripes_png, "sobel_x", "-o", b, "--cmap", "diverging", "--convention", "convolution")
    assert flipped.exit_code == 0
    left, right = read_png(a), read_png(b)
    assert left.shape == (64, 64)  # a palette image: one colour-table index a pixel
    with Image.open(a) as written:
        assert written.mode == "P"
    np.testing.assert_array_equal(left[:, 8], right[:, 12])  # the same edges with the sign swapped sit 4 columns apart


def test_filter_show_prints_the_kernel(stripes_png, tmp_path):
    """--show prints the kernel card with its matrix and facts."""
    result = invoke("filter", stripes_png, "gaussian:sigma=0.5", "-o", tmp_path / "g.png", "--show")
    assert result.exit_code == 0
    assert "normalised" in result.stdout and "5x5" in result.stdout


def test_filter_default_name_and_overwrite_rules(stripes_png, tmp_path, monkeypatch):
    """The default output is IMAGE_KERNEL.png; cnnx overwrites its own file but not someone else's."""
    monkeypatch.chdir(tmp_path)
    assert invoke("filter", stripes_png, "laplacian").exit_code == 0
    assert invoke("filter", stripes_png, "laplacian").exit_code == 0
    (tmp_path / "stripes_sobel_y.png").write_text("not mine")
    result = invoke("filter", stripes_png, "sobel_y")
    assert result.exit_code == 2 and "--force" in result.stderr


def test_filters_lists_the_bank():
    """cnnx filters lists every filter with its size and family."""
    result = invoke("filters")
    assert result.exit_code == 0
    for name in ("sobel_x", "vertical_edge", "gaussian", "laplacian8", "emboss"):
        assert name in result.stdout


def test_filters_card_of_the_lesson_filter():
    """The card of vertical_edge shows its matrix, sum 0, zero-sum kind and range [-3, 3]."""
    result = invoke("filters", "vertical_edge")
    assert result.exit_code == 0
    assert "zero-sum" in result.stdout and "[-3, 3]" in result.stdout and "the lesson" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["pipeline", "missing.png"], "missing.png: no such file"),
        (["filter", "missing.png", "sobel_x"], "missing.png: no such file"),
        (["filter", SAMPLES / "stripes.png", "sobelx"], "unknown filter 'sobelx'; did you mean sobel_x"),
        (["filters", "sobelx"], "unknown filter 'sobelx'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(args, message, tmp_path, monkeypatch):
    """Missing files and unknown filters give a short message, exit code 2, and no traceback."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "cnnx-out").exists()


def test_not_an_image_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    """A text file named .png is refused in one line, and no output folder appears."""
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture")
    result = invoke("pipeline", fake)
    assert result.exit_code == 2 and "not an image file" in result.stderr
    assert list(tmp_path.iterdir()) == [fake]


def test_version():
    """cnnx --version prints the version."""
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cnnx {__version__}"


@pytest.mark.parametrize("command", ["pipeline", "filter", "filters", "presets"])
def test_every_command_help_has_an_example(command):
    """Each command's --help says what it does and shows an example."""
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example: cnnx " in result.stdout


COMMANDS = [["pipeline"], ["filter"], ["filters"], ["presets"], ["why"], ["features"], ["train"], ["serve"],
            ["explain", "conv"], ["explain", "value"], ["explain", "relu"], ["explain", "pool"], ["explain", "field"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_usage_line_names_its_arguments_in_capitals_once(command):
    """The usage line every error repeats reads ``cnnx why [OPTIONS] {IMAGES}...``: each argument once, in capitals,
    marked required or optional once, never a Python name or doubled brackets and dots."""
    usage = runner.invoke(app, [*command, "--help"], prog_name="cnnx").stdout.splitlines()[0]
    assert usage.startswith(f"Usage: cnnx {' '.join(command)} [OPTIONS]"), usage
    for word in usage.split()[3 + len(command):]:
        assert re.fullmatch(r"[{\[][A-Z]+[}\]](\.\.\.)?", word), usage


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in (["filters"], ["presets"])], ids=" ".join)
def test_every_command_that_reads_images_takes_the_max_pixels_its_refusal_names(command):
    """An image over the pixel limit is refused with 'raise --max-pixels to load it': every command that reads
    images takes that option."""
    assert "--max-pixels" in runner.invoke(app, [*command, "--help"], prog_name="cnnx").stdout


@pytest.mark.parametrize("command", [
    ["why", "{image}", "--model", "shapes"],
    ["features", "{image}", "--model", "shapes", "--stage", "2"],
    ["explain", "value", "{image}", "--stage", "1", "--at", "1,1"],
    ["explain", "conv", "{image}", "--at", "1,1"],
])
def test_max_pixels_is_the_limit_each_command_loads_images_by(tmp_path, command):
    """A 20x20 image is refused under --max-pixels 100 and runs under 400, whichever command reads it."""
    image = tmp_path / "in.png"
    Image.new("L", (20, 20), 128).save(image)
    args = [str(image) if a == "{image}" else a for a in command] + ["-o", str(tmp_path / "out")] * (
        command[0] in ("why", "features"))
    refused = invoke(*args, "--max-pixels", "100")
    assert refused.exit_code != 0 and "larger than the limit of 100 pixels" in refused.stderr, refused.output
    assert invoke(*args, "--max-pixels", "400").exit_code == 0


@pytest.mark.slow
def test_installed_entry_point_runs(tmp_path):
    """The installed cnnx script and python -m cnnx both work in a real subprocess."""
    script = Path(sys.executable).with_name("cnnx")
    env = {**os.environ, "NO_COLOR": "1"}
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, env=env, check=True).stdout
    assert "pipeline" in help_text and "filters" in help_text
    run = subprocess.run(
        [sys.executable, "-m", "cnnx", "pipeline", SAMPLES / "stripes.png", "-o", tmp_path / "out"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "out").glob("*/ch*.png"))) == 25


def test_written_files_have_the_usual_permissions(stripes_png, tmp_path):
    """Maps are readable by others as any file the user makes (umask 022 gives 0644), not private temporaries."""
    import os

    old = os.umask(0o022)
    try:
        invoke("pipeline", stripes_png, "-o", tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "01_conv" / "ch00_vertical_edge.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_version_and_help_do_not_load_numpy():
    """cnnx --version starts without numpy or Pillow: they load only when a command needs them."""
    code = (
        "import sys; from cnnx.app.cli import main; sys.argv = ['cnnx', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('numpy' in sys.modules, 'PIL' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.slow
def test_filter_batch(tmp_path):
    """Several images: one response each in the -o folder, named IMAGE_KERNEL.png, with one table."""
    images = []
    for k in range(3):
        path = tmp_path / f"i{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (20, 30), np.uint8)).save(path)
        images.append(path)
    (tmp_path / "bad.png").write_text("no")
    result = invoke("filter", *images, tmp_path / "bad.png", "laplacian", "-o", tmp_path / "out", "-j", "2")
    assert result.exit_code == 1 and "bad.png: not an image file" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "i0_laplacian.png",
        "i1_laplacian.png",
        "i2_laplacian.png",
    ]
    assert "cnnx filter -> " in result.stdout and "3 of 4 images done" in result.stdout


def test_a_large_kernels_card_prints_every_number_at_80_columns():
    """An 11x11 difference of Gaussians: every weight printed whole (a common power of ten named under it),
    none cut to an ellipsis, in an 80-column terminal."""
    result = runner.invoke(app, ["filters", "dog:sigma=1"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    matrix = result.stdout.split("matrix", 1)[1]
    assert "…" not in matrix and "each times 1e-2" in matrix
    assert "9.7" in matrix  # the centre, 0.097


def test_a_colour_map_named_in_several_catalogues_is_taken_quietly(stripes_png, tmp_path):
    """RdBu is ColorBrewer's and vispy's: cmap takes ColorBrewer's, and its note to programmers about the choice
    does not reach the terminal (the installed command, stderr read back)."""
    done = subprocess.run([sys.executable, "-m", "cnnx", "filter", str(stripes_png), "sobel_x", "-o",
                           str(tmp_path / "a.png"), "--cmap", "RdBu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    with Image.open(tmp_path / "a.png") as written:
        assert written.mode == "P"
