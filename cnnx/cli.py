"""The ``cnnx`` command: parse arguments, call the floors below, turn known errors into one-line messages.

Exit codes: 0 success, 1 a runtime failure (for example a full disk),
2 bad usage or bad input, 130 interrupted.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

from cnnx import __version__
from cnnx.errors import CnnxError

app = typer.Typer(
    help="See what a convolutional network does to an image: Conv -> ReLU -> Pool, every feature map as a PNG.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)

BAD_INPUT, RUNTIME_FAILURE, INTERRUPTED = 2, 1, 130
MAX_PIXELS_HELP = "Refuse images with more pixels than this (Pillow's decompression-bomb limit by default)."


_debug = False


def _say(message: str) -> None:
    err.print(message, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Print known failures as one line on stderr and exit with their code; let bugs keep their traceback.

    With --debug, known failures show their traceback too.
    """
    try:
        yield
    except CnnxError as error:
        _say(f"cnnx: error: {error}")
        _debug and err.print_exception()
        raise typer.Exit(BAD_INPUT) from None
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        _say(f"cnnx: error: {where}{error.strerror or error}")
        _debug and err.print_exception()
        raise typer.Exit(RUNTIME_FAILURE) from None
    except KeyboardInterrupt:
        _say("cnnx: interrupted; nothing was written")
        raise typer.Exit(INTERRUPTED) from None


def _show_version(value: bool) -> None:
    if value:
        out.print(f"cnnx {__version__}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error, for bug reports."),
) -> None:
    """See what a convolutional network does to an image: Conv -> ReLU -> Pool, every feature map as a PNG.

    Example: cnnx pipeline samples/chelsea.png
    """
    global _debug
    _debug = debug


@app.command()
def pipeline(
    image: Optional[Path] = typer.Argument(None, help="The image to run (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)."),
    out_dir: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Folder for the feature maps (default: cnnx-out/IMAGE-NAME)."
    ),
    spec: Optional[str] = typer.Option(
        None, "--spec", "-s", help='Stages to run, e.g. "conv(sobel_x, sobel_y) -> relu -> maxpool(2)".'
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A pipeline TOML file (see --print-config)."),
    preset_name: Optional[str] = typer.Option(None, "--preset", "-p", help="A named pipeline; 'cnnx presets' lists them."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the pipeline as TOML and exit."),
    color: Optional[bool] = typer.Option(
        None, "--color/--gray", help="Feed red, green and blue, or luma (default: gray, or what --config says).", show_default=False
    ),
    convention: Optional[str] = typer.Option(
        None, "--convention", help="correlation (kernels as written, as CNNs do) or convolution (kernels flipped).", show_default=False
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder that cnnx did not write."),
    normalize: str = typer.Option(
        "symmetric", "--normalize", help="How values become colours: symmetric (0 in the middle), minmax, percentile, fixed."
    ),
    scope: str = typer.Option("block", "--scope", help="What shares one range: map, stage, block (a conv and what follows it), pipeline."),
    cmap: str = typer.Option("diverging", "--cmap", help="Colour map: diverging, gray, viridis, or any name of the cmap package."),
    value_range: Optional[str] = typer.Option(None, "--range", help="LOW,HIGH for --normalize fixed, e.g. -1,1."),
    percentile: float = typer.Option(99.5, "--percentile", help="For --normalize percentile: the magnitude percentile that sets the range."),
    min_size: int = typer.Option(128, "--min-size", min=1, help="Enlarge maps whose shorter side is smaller, by whole factors."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also write each stage's array as NN_stage/stage.npy."),
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help="zlib level of the PNGs: 1 is fast, 9 small."),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
    frame: int = typer.Option(0, "--frame", min=0, help="Which frame of an animated or multi-page image to use."),
) -> None:
    """Run a Conv -> ReLU -> Pool pipeline and write every feature map as a PNG.

    By default the lesson's flow, twice: edges in four directions (conv, relu,
    2x2 max pool), then a centre-surround filter on each direction's map
    (conv, relu, 2x2 max pool).  Each channel of each stage becomes
    OUT/NN_stage/chCC_filter.png, and a table sums up every stage.

    Example: cnnx pipeline samples/chelsea.png --spec "conv(sobel_x@) -> relu -> maxpool(2)"
    """
    from cnnx.folder import RunWriter, Style, staged_folder, write_manifest
    from cnnx.images import load_image
    from cnnx.pipeline import check, stream
    from cnnx.report import gallery, manifest, summary_table
    from cnnx.spec import load_pipeline, to_toml

    with _reported_errors():
        chosen = load_pipeline(spec=spec, config=config, preset_name=preset_name, color=color, convention=convention)
        if print_config:
            out.print(to_toml(chosen), markup=False, highlight=False, end="", soft_wrap=True)
            return
        style = Style(normalize, scope, cmap, percentile, _parse_range(value_range), min_size)
        if image is None:
            raise CnnxError("give an IMAGE to run, or --print-config to see the pipeline")
        source = load_image(image, color=chosen.color, frame=frame, **_pixel_limit(max_pixels))
        check(chosen.stages, source.array.shape)
        destination = out_dir if out_dir is not None else Path("cnnx-out") / image.stem
        with staged_folder(destination, force=force) as folder:
            writer = RunWriter(folder, style, png_level=png_level, save_raw=save_raw)
            for result in stream(source.array, chosen):
                writer.add(result)
            stages = writer.finish()
            write_manifest(folder, manifest(source, chosen, style, stages, folder))
            (folder / "index.html").write_text(gallery(source, chosen, stages, folder))
        _note_frames(source)
        out.print(summary_table([s.result for s in stages], destination, chosen))
        count = sum(len(s.maps) for s in stages)
        out.print(
            f"wrote {count} maps, a montage per stage, overview.png, index.html and manifest.json to {destination}",
            markup=False, highlight=False, soft_wrap=True,
        )


def _parse_range(text: Optional[str]) -> Optional[tuple[float, float]]:
    """"-1,1" -> (-1.0, 1.0)."""
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CnnxError(f"--range takes LOW,HIGH, e.g. -1,1; got {text!r}") from None
    return low, high


@app.command()
def presets() -> None:
    """List the named pipelines that --preset takes.

    Example: cnnx pipeline samples/chelsea.png --preset edges
    """
    from cnnx.report import presets_table
    from cnnx.spec import PRESETS

    out.print(presets_table(PRESETS))


@app.command(name="filter")
def filter_(
    image: Path = typer.Argument(..., help="The image to filter."),
    kernel_spec: str = typer.Argument(
        ..., metavar="KERNEL", help="A filter name (see 'cnnx filters'), name:param=value, a [[...]] matrix or a .npy file."
    ),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="PNG to write (default: IMAGE-NAME_KERNEL.png)."),
    show: bool = typer.Option(False, "--show", help="Also print the kernel card."),
    color: bool = typer.Option(False, "--color/--gray", help="Filter each of red, green, blue, or luma (default)."),
    padding_mode: str = typer.Option(
        "replicate", "--padding-mode", help="Border values: zeros, reflect, replicate or circular."
    ),
    convention: str = typer.Option("correlation", "--convention", help="correlation (kernel as written) or convolution (flipped)."),
    normalize: str = typer.Option("symmetric", "--normalize", help="symmetric (0 in the middle), minmax, percentile or fixed."),
    cmap: str = typer.Option("gray", "--cmap", help="Colour map: gray, diverging, viridis, or any name of the cmap package."),
    value_range: Optional[str] = typer.Option(None, "--range", help="LOW,HIGH for --normalize fixed, e.g. -1,1."),
    percentile: float = typer.Option(99.5, "--percentile", help="For --normalize percentile: the magnitude percentile that sets the range."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file that cnnx did not write."),
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help="zlib level of the PNG: 1 is fast, 9 small."),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
    frame: int = typer.Option(0, "--frame", min=0, help="Which frame of an animated or multi-page image to use."),
) -> None:
    """Apply one filter to an image and write the response as a PNG, the same size as the image.

    The response is signed; by default mid grey is 0, white the largest
    magnitude (positive), black the same magnitude negative.  With --color
    each colour channel is filtered and drawn in its own colour.

    Example: cnnx filter samples/stripes.png sobel_x --show
    """
    from cnnx import draw
    from cnnx.folder import Style, check_writable, png_text, safe_name
    from cnnx.images import load_image, write_png
    from cnnx.kernels import parse_kernel
    from cnnx.pipeline import CONVENTIONS, Conv
    from cnnx.report import kernel_card

    with _reported_errors():
        kernel = parse_kernel(kernel_spec)
        style = Style(normalize, "stage", cmap, percentile, _parse_range(value_range))
        if convention not in CONVENTIONS:
            raise CnnxError(f"--convention must be {' or '.join(CONVENTIONS)}; got {convention!r}")
        source = load_image(image, color=color, frame=frame, **_pixel_limit(max_pixels))
        stage = Conv((kernel.spec,), combine="depthwise", padding="same", padding_mode=padding_mode)
        response = stage.apply(source.array, flip=convention == "convolution")
        target = output if output is not None else Path(f"{image.stem}_{safe_name(kernel.label)}.png")
        check_writable(target, force=force)
        low, high = style.range_of(response)
        index = draw.to_index(response, low, high)
        pixels = index.transpose(1, 2, 0) if color else draw.colorize(index[0], draw.colormap(cmap))
        shown = "rgb" if color else cmap
        write_png(target, pixels, level=png_level, text=png_text(kernel.label, low, high, response.shape, shown))
        _note_frames(source)
        if show:
            out.print(kernel_card(kernel, _bank_entry(kernel)))
        C, H, W = response.shape
        out.print(
            f"{kernel.label} on {image} ({H}x{W}, {'rgb' if color else 'gray'}): "
            f"values {response.min():.4g} to {response.max():.4g}; drawn from {low:.4g} to {high:.4g} ({shown})\n"
            f"wrote {target}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def filters(
    name: Optional[str] = typer.Argument(
        None, metavar="[KERNEL]", help="Show one kernel in full: a name, name:param=value, a matrix or a .npy file."
    ),
) -> None:
    """List the filter bank, or show one kernel's card: matrix, sum, kind and output range.

    Example: cnnx filters gaussian:sigma=0.5
    """
    from cnnx.kernels import parse_kernel
    from cnnx.report import filters_table, kernel_card

    with _reported_errors():
        if name is None:
            out.print(filters_table())
            return
        kernel = parse_kernel(name)
        out.print(kernel_card(kernel, _bank_entry(kernel)))


def _bank_entry(kernel):
    from cnnx.kernels import BANK

    return BANK.get(kernel.label.partition(":")[0])


def _pixel_limit(max_pixels: int) -> dict:
    return {"max_pixels": max_pixels} if max_pixels else {}


def _note_frames(source) -> None:
    """Say what the user should know about how the image was read."""
    for note in source.notes:
        _say(f"cnnx: note: {source.path}: {note}")
    if source.frames > 1:
        _say(f"cnnx: note: {source.path} has {source.frames} frames; used frame {source.frame} (--frame N picks another)")


def main() -> None:
    """Entry point of the ``cnnx`` script."""
    app(prog_name="cnnx")


if __name__ == "__main__":
    sys.exit(main())
