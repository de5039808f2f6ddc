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


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Print known failures as one line on stderr and exit with their code; let bugs keep their traceback."""
    try:
        yield
    except CnnxError as error:
        err.print(f"cnnx: error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(BAD_INPUT) from None
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        err.print(f"cnnx: error: {where}{error.strerror or error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(RUNTIME_FAILURE) from None
    except KeyboardInterrupt:
        err.print("cnnx: interrupted; nothing was written", markup=False, highlight=False, soft_wrap=True)
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
) -> None:
    """See what a convolutional network does to an image: Conv -> ReLU -> Pool, every feature map as a PNG.

    Example: cnnx pipeline samples/chelsea.png
    """


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
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help="zlib level of the PNGs: 1 is fast, 9 small."),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """Run a Conv -> ReLU -> Pool pipeline and write every feature map as a PNG.

    By default the lesson's flow, twice: edges in four directions (conv, relu,
    2x2 max pool), then a centre-surround filter on each direction's map
    (conv, relu, 2x2 max pool).  Each channel of each stage becomes
    OUT/NN_stage/chCC_filter.png, and a table sums up every stage.

    Example: cnnx pipeline samples/chelsea.png --spec "conv(sobel_x@) -> relu -> maxpool(2)"
    """
    from cnnx.folder import staged_folder, write_manifest, write_stage
    from cnnx.images import load_image
    from cnnx.pipeline import check, stream
    from cnnx.report import manifest, summary_table
    from cnnx.spec import load_pipeline, to_toml

    with _reported_errors():
        chosen = load_pipeline(spec=spec, config=config, preset_name=preset_name, color=color, convention=convention)
        if print_config:
            out.print(to_toml(chosen), markup=False, highlight=False, end="", soft_wrap=True)
            return
        if image is None:
            raise CnnxError("give an IMAGE to run, or --print-config to see the pipeline")
        source = load_image(image, color=chosen.color, **_pixel_limit(max_pixels))
        check(chosen.stages, source.array.shape)
        destination = out_dir if out_dir is not None else Path("cnnx-out") / image.stem
        results, files = [], {}
        with staged_folder(destination, force=force) as folder:
            for result in stream(source.array, chosen):
                files[result.index] = write_stage(result, folder, png_level=png_level)
                results.append(result)
            write_manifest(folder, manifest(source, chosen, results, files, folder))
        _note_frames(source)
        out.print(summary_table(results, destination, chosen))
        count = sum(len(f) for f in files.values())
        out.print(f"wrote {count} PNGs and manifest.json to {destination}", markup=False, highlight=False)


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
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file that cnnx did not write."),
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help="zlib level of the PNG: 1 is fast, 9 small."),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
) -> None:
    """Apply one filter to an image and write the response as a PNG, the same size as the image.

    The response is signed: mid grey is 0, white the largest magnitude
    (positive), black the same magnitude negative.

    Example: cnnx filter samples/stripes.png sobel_x --show
    """
    from cnnx.folder import check_writable, png_text, safe_name
    from cnnx.images import display_range, load_image, to_pixels, write_png
    from cnnx.kernels import parse_kernel
    from cnnx.pipeline import Conv
    from cnnx.report import kernel_card

    with _reported_errors():
        kernel = parse_kernel(kernel_spec)
        source = load_image(image, color=color, **_pixel_limit(max_pixels))
        stage = Conv((kernel.spec,), combine="depthwise", padding="same", padding_mode=padding_mode)
        response = stage.apply(source.array)
        target = output if output is not None else Path(f"{image.stem}_{safe_name(kernel.label)}.png")
        check_writable(target, force=force)
        black, white = display_range(response)
        pixels = to_pixels(response.transpose(1, 2, 0) if color else response[0], black, white)
        write_png(target, pixels, level=png_level, text=png_text(kernel.label, black, white, response.shape))
        _note_frames(source)
        if show:
            out.print(kernel_card(kernel, _bank_entry(kernel)))
        C, H, W = response.shape
        out.print(
            f"{kernel.label} on {image} ({H}x{W}, {'rgb' if color else 'gray'}): "
            f"values {response.min():.4g} to {response.max():.4g}; black = {black:.4g}, white = {white:.4g}\n"
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
    if source.frames > 1:
        err.print(f"cnnx: note: {source.path} has {source.frames} frames; used the first", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point of the ``cnnx`` script."""
    app(prog_name="cnnx")


if __name__ == "__main__":
    sys.exit(main())
