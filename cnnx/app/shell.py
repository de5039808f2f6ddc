"""What every cnnx command shares: its options, declared once, how errors and progress are shown, and the sources.

Options that several commands take are ``Annotated`` aliases, so their names
and help texts cannot drift apart.  Known failures become one line on stderr
and an exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cnnx.base.choices import DEFAULT_PERCENTILE, Convention, Normalize, PaddingMode, Scope, Stretch
from cnnx.base.errors import CnnxError, exit_code, is_known, message, printable
from cnnx.base.signals import Stopped, stopped


class _Output(Console):
    """The console of results: when its reader stops reading (``| head``), the rest goes nowhere, quietly."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail on the closed pipe too


out = _Output()
err = Console(stderr=True)
debug = False  # set by --debug: known failures show their traceback too

Images = Annotated[list[str], typer.Argument(metavar="IMAGES", show_default=False,
                   help="Images, folders or glob patterns (PNG, JPEG, GIF, BMP, TIFF, WebP, ...).")]
Spec = Annotated[
    str | None,
    typer.Option("--spec", "-s", metavar="SPEC", help='Stages, e.g. "conv(sobel_x, sobel_y) -> relu -> maxpool(2)".'),
]
Config = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="FILE", help="A pipeline TOML file (see --print-config).")
]
Preset = Annotated[
    str | None, typer.Option("--preset", "-p", metavar="NAME", help="A named pipeline; 'cnnx presets' lists them.")
]
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="NAME|FILE.onnx",
                 help="A model that ships with cnnx (shapes), or any ONNX CNN file."),
]
Layers = Annotated[
    str | None,
    typer.Option("--layers", metavar="WHICH", help="With an ONNX model: the nodes to write, as names, op types or "
                 "patterns (Conv,Relu or layer1.*), or all (default: the last activation at each map size)."),
]
Labels = Annotated[
    Path | None, typer.Option("--labels", metavar="FILE", help="With an ONNX model: class names, one a line.")
]
Preprocess = Annotated[
    str | None,
    typer.Option("--preprocess", metavar="none|imagenet|caffe",
                 help="With an ONNX model: how an image in 0..1 becomes its input: none (resized), imagenet (resized, "
                 "cropped, minus mean, over std) or caffe (the same, BGR, 0..255 minus the means)."),
]
Size = Annotated[
    str | None,
    typer.Option("--size", metavar="crop|stretch|N",
                 help="With an ONNX model: crop (the shorter side to 256/224 of the model's, the middle cut out), "
                 "stretch (resized to the model's size) or N (the shorter side to N pixels, the middle cut out)."),
]
Mean = Annotated[
    str | None,
    typer.Option("--mean", metavar="M[,M,M]", help="With an ONNX model: what is taken off each channel's values."),
]
Std = Annotated[
    str | None,
    typer.Option("--std", metavar="S[,S,S]", help="With an ONNX model: what each channel's values are divided by."),
]
Order = Annotated[
    str | None, typer.Option("--order", metavar="rgb|bgr", help="With an ONNX model: the channels' order it takes.")
]
Scale = Annotated[
    float | None,
    typer.Option("--scale", metavar="X", help="With an ONNX model: values 0..X (1 by default; 255 for 0..255)."),
]
Color = Annotated[
    bool | None,
    typer.Option(
        "--color/--gray",
        show_default=False,
        metavar="",
        help="Feed red, green and blue, or luma (default: gray, or what --config says).",
    ),
]
ConventionOption = Annotated[
    Convention | None,
    typer.Option("--convention", show_default=False, help="Kernels as written, as CNNs compute (default), or flipped."),
]
Force = Annotated[
    bool, typer.Option("--force", metavar="", help="Replace what is there even if cnnx did not write it.")
]
NormalizeOption = Annotated[Normalize, typer.Option("--normalize", help="How values become colours (see README).")]
ScopeOption = Annotated[Scope, typer.Option("--scope", help="What shares one range of colours.")]
Cmap = Annotated[
    str,
    typer.Option(
        "--cmap", metavar="NAME", help="Colour map: diverging, gray, viridis, or any name of the cmap package."
    ),
]
Range = Annotated[
    str | None, typer.Option("--range", metavar="LOW,HIGH", help="LOW,HIGH for --normalize fixed, e.g. -1,1.")
]
StretchOption = Annotated[
    Stretch,
    typer.Option(
        "--stretch",
        help="How far from the zero colour a value is drawn: by its square root (sqrt) or in proportion (linear); "
        "auto: sqrt with --normalize percentile, linear with the exact ranges.",
    ),
]
Percentile = Annotated[
    float, typer.Option("--percentile", metavar="P", help="For --normalize percentile: the magnitude percentile.")
]
PngLevel = Annotated[
    int,
    typer.Option(
        "--png-level",
        metavar="LEVEL",
        min=0,
        max=9,
        help="PNG compression: 1-3 fast (ISA-L), 4-9 slower and smaller on smooth pictures (zlib), 0 none.",
    ),
]
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        metavar="N",
        min=0,
        show_default=False,
        help="Refuse images with more pixels (default: Pillow's decompression-bomb limit).",
    ),
]
Frame = Annotated[
    int, typer.Option("--frame", metavar="N", min=0, help="Which frame of an animated or multi-page image to use.")
]
Jobs = Annotated[
    int | None,
    typer.Option("-j", "--jobs", metavar="N", min=1, help="Images at once, in worker processes (default: the cores)."),
]
Scheduler = Annotated[
    str | None,
    typer.Option("--scheduler", metavar="ADDRESS", help="Run a batch on a Dask cluster, e.g. tcp://HOST:8786."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress bar.")]
Json = Annotated[
    bool, typer.Option("--json", metavar="", help="Print the same content as JSON, for scripts and notebooks.")
]


OutFolder = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--out",
        metavar="FOLDER",
        help="Folder for the maps; for several images, the "
        "folder of their folders (default: cnnx-out/IMAGE-NAME, or cnnx-out).",
    ),
]
OutFile = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--out",
        metavar="FILE",
        help="PNG to write (default: IMAGE-NAME_KERNEL.png); for several images, their folder (default: cnnx-out).",
    ),
]
PrintConfig = Annotated[bool, typer.Option("--print-config", metavar="", help="Print the stages as TOML and exit.")]
DryRun = Annotated[bool, typer.Option("--dry-run", metavar="", help="Show shapes, files and memory; write nothing.")]
MinSize = Annotated[
    int, typer.Option("--min-size", metavar="PIXELS", min=1, help="Enlarge maps whose shorter side is smaller.")
]
SaveRaw = Annotated[bool, typer.Option("--save-raw", metavar="", help="Also write each stage as NN_stage/stage.npy.")]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        help="Refuse a run that needs more memory, e.g. 4G (default: 4/5 of this machine's).",
    ),
]
KernelArgument = Annotated[
    str,
    typer.Argument(
        metavar="KERNEL", help="A filter name (see 'cnnx filters'), name:param=value, a [[...]] matrix or a .npy file."
    ),
]
ShowKernel = Annotated[bool, typer.Option("--show", metavar="", help="Also print the kernel card.")]
PaddingModeOption = Annotated[PaddingMode, typer.Option("--padding-mode", help="What a kernel reads past the border.")]


@dataclass(frozen=True)
class OptionGroup:
    """Options several commands take, declared once: (name, Annotated type, default) each.

    A command names a group as one parameter whose default is the group (``preparation: dict = PREPARATION``);
    ``with_groups`` puts the group's options in the command's signature in that place, and hands the command
    their values as one dict under the parameter's name.
    """

    options: tuple[tuple[str, object, object], ...]


STAGES = OptionGroup((("spec", Spec, None), ("config", Config, None), ("preset", Preset, None),
                      ("model", Model, None)))
PREPARATION = OptionGroup((("preprocess", Preprocess, None), ("size", Size, None), ("mean", Mean, None),
                           ("std", Std, None), ("order", Order, None), ("scale", Scale, None)))
STYLE = OptionGroup((("normalize", NormalizeOption, Normalize.percentile), ("scope", ScopeOption, Scope.block),
                     ("cmap", Cmap, "diverging"), ("value_range", Range, None),
                     ("percentile", Percentile, DEFAULT_PERCENTILE), ("stretch", StretchOption, Stretch.auto)))


def with_groups(command):
    """``command`` with each parameter whose default is an ``OptionGroup`` spelled out as the group's options."""
    hints = typing.get_type_hints(command, include_extras=True)
    parameters, groups = [], {}
    for parameter in inspect.signature(command).parameters.values():
        if isinstance(parameter.default, OptionGroup):
            groups[parameter.name] = parameter.default
            parameters += [inspect.Parameter(name, parameter.kind, default=default, annotation=kind)
                           for name, kind, default in parameter.default.options]
        else:
            parameters.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)))

    @functools.wraps(command)
    def run(**given):
        for name, group in groups.items():
            given[name] = {option: given.pop(option) for option, _, _ in group.options}
        return command(**given)

    run.__signature__ = inspect.Signature(parameters)
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def say(text: str) -> None:
    """One line on stderr; file names and model text in it are shown escaped, never as terminal controls."""
    err.print(printable(text, keep="\n"), markup=False, highlight=False, soft_wrap=True)


def print_line(text: str) -> None:
    """One line of results on stdout, escaped as ``say`` escapes."""
    out.print(printable(text, keep="\n"), markup=False, highlight=False, soft_wrap=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known failures become one line on stderr and their exit code; bugs keep their traceback (--debug: all do)."""
    try:
        yield
    except (KeyboardInterrupt, Stopped) as stop:
        raise typer.Exit(report_stop(stop)) from None
    except BrokenPipeError:
        out.on_broken_pipe()  # a plain print's reader went away: the work is done, and no one is left to tell
    except Exception as error:
        if not is_known(error):
            raise
        say(f"cnnx: error: {message(error)}")
        if debug:
            err.print_exception()
        raise typer.Exit(exit_code(error)) from None


def report_stop(stop: BaseException, what: str | None = None) -> int:
    """Say that a signal stopped the command, and ``what`` became of its work (by default, what was written whole);
    return the exit code: 128 + the signal."""
    stop = stopped(stop)
    say(f"cnnx: {stop}; {what or _what_was_written()}")
    return stop.exit_code


def _what_was_written() -> str:
    """What an interruption leaves: the output folders moved into place whole, and nothing else."""
    output = sys.modules.get("cnnx.io.output")  # not imported: nothing was written
    done = output.finished if output else []
    if not done:
        return "nothing was written"
    return f"{', '.join(map(str, done))} {'was' if len(done) == 1 else 'were'} written whole; nothing else was written"


def prepared(preprocess=None, size=None, mean=None, std=None, order=None, scale=None):
    """The preparation of an ONNX model's input the options ask for; None when none is given."""
    if all(v is None for v in (preprocess, size, mean, std, order, scale)):
        return None
    from cnnx.sources.prepare import preparation

    return preparation(preprocess, size=size, mean=mean, std=std, order=order, scale=scale)


def source_from(spec=None, config=None, preset=None, model=None, color=None, convention=None, *, layers=None,
                labels=None, preprocess=None, max_memory: str | None = None):
    """The source of stages the options ask for (``sources.choose.make_source``), its notes said on stderr."""
    from cnnx.app.memory import parse_bytes
    from cnnx.sources.choose import make_source

    source = make_source(spec, config, preset, model, color, convention, layers=layers, labels=labels,
                         preprocess=preprocess, memory_budget=parse_bytes(max_memory) if max_memory else None)
    for note in source.notes:
        say(f"cnnx: note: {note}")
    return source


def style_from(normalize, scope, cmap, percentile, value_range, stretch, min_size=128):
    from cnnx.render.draw import Style

    fixed = number_pair(value_range, "--range", float)
    return Style(normalize, scope, cmap, percentile, fixed, min_size, stretch=stretch)


@contextmanager
def progress_bar(quiet: bool, what: str):
    """A transient progress bar on stderr, only on a terminal and without --quiet.

    Yields ``advance(done, total, note="")``; the note (maps written, say) shows beside the count.
    """
    if quiet or not err.is_terminal:
        yield lambda done, total, note="": None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=None, note="")
        yield lambda done, total, note="": bar.update(task, completed=done, total=total, note=note)


def number_pair(text: str | None, option: str, kind=int):
    """ "ROW,COL" or "LOW,HIGH" as two numbers; None stays None."""
    if text is None:
        return None
    try:
        first, second = (kind(part) for part in text.split(","))
    except ValueError:
        raise CnnxError(
            f"{option} takes two {'whole numbers' if kind is int else 'numbers'}, e.g. 1,2; got {text!r}"
        ) from None
    return first, second


def pixel_limit(max_pixels: int) -> dict:
    return {"max_pixels": max_pixels} if max_pixels else {}


def note_frames(source) -> None:
    """Say what the user should know about how the image was read."""
    for note in source.notes:
        say(f"cnnx: note: {source.path}: {note}")
    if source.frames > 1:
        say(
            f"cnnx: note: {source.path} has {source.frames} frames; used frame {source.frame} (--frame N picks another)"
        )


def find(images: list[str], *, skip: Path | None = None):
    """The images the command line names, none inside the output folder ``skip``; what was passed over inside
    folders is said on stderr."""
    from cnnx.app.inputs import find_images

    found = find_images(images, skip=skip)
    for note in found.skipped:
        say(f"cnnx: note: skipped {note}")
    return found.images


def _made_since(path: Path, began: int) -> bool:
    """True if ``path`` was put in place after ``began`` (ns): runs and PNGs appear whole (a rename) or not at all."""
    try:
        return os.stat(path, follow_symlinks=False).st_ctime_ns >= began
    except OSError:
        return False


def finish_batch(batch: list, root: Path, jobs: int | None, scheduler: str | None, quiet: bool, work, command: str):
    """Run a batch on the executor asked for, print one table, list every failure, and exit 1 if any failed.

    Interrupted, it says which images were written whole before it stopped.
    """
    from cnnx.app.batches import run_batch
    from cnnx.base.errors import RUNTIME_FAILURE
    from cnnx.render.report import batch_table

    ended: list = []
    began = time.time_ns() - 50_000_000  # a little early: the file system's clock is coarser than this one

    def done(outcome) -> None:
        ended.append(outcome)
        advance(len(ended), len(batch))

    with progress_bar(quiet, "images") as advance:
        try:
            outcomes = run_batch(batch, processes=jobs, scheduler=scheduler, done=done, work=work)
        except (KeyboardInterrupt, Stopped) as stop:
            # A worker stopped between moving its run into place and reporting it still wrote it whole.
            reported = {o.job.destination for o in ended if not o.error}
            written = reported | {j.destination for j in batch if _made_since(j.destination, began)}
            raise typer.Exit(report_stop(stop, f"{len(written)} of {len(batch)} images were written whole, "
                                               "nothing else")) from None
        except Exception as error:
            if not is_known(error):
                raise
            say(f"cnnx: error: {message(error)}")
            raise typer.Exit(exit_code(error)) from None
    with reported_errors():
        out.print(batch_table(outcomes, root, command))
    failed = [o for o in outcomes if o.error]
    causes = {outcome.error.removeprefix(f"{outcome.job.image}: ") for outcome in failed}
    if len(failed) == len(outcomes) > 1 and len(causes) == 1:  # the request, not the images: said once
        say(f"cnnx: error: {causes.pop()} (each of the {len(failed)} images)")
    else:
        for outcome in failed:
            say(f"cnnx: error: {outcome.error}")
    if failed:
        say(f"cnnx: {len(failed)} of {len(outcomes)} images failed")
        raise typer.Exit(RUNTIME_FAILURE)
