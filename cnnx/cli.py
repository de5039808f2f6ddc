"""The ``cnnx`` command: parse arguments, call the floors below, turn known errors into one-line messages.

Exit codes: 0 success, 1 a runtime failure (for example a full disk),
2 bad usage or bad input, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
PNG_LEVEL_HELP = "PNG compression: 1-3 are fast (ISA-L), 4-9 much slower and smaller on smooth pictures (zlib), 0 none."
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
    images: list[str] | None = typer.Argument(
        None, metavar="IMAGES...", help="Images, folders or glob patterns (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)."
    ),
    out_dir: Path | None = typer.Option(
        None, "-o", "--out", help="Folder for the maps; for several images, the folder of their folders (default: cnnx-out/IMAGE-NAME, or cnnx-out)."
    ),
    spec: str | None = typer.Option(
        None, "--spec", "-s", help='Stages to run, e.g. "conv(sobel_x, sobel_y) -> relu -> maxpool(2)".'
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="A pipeline TOML file (see --print-config)."),
    preset_name: str | None = typer.Option(None, "--preset", "-p", help="A named pipeline; 'cnnx presets' lists them."),
    model: str | None = typer.Option(None, "--model", "-m", help="Run a trained model that ships with cnnx (shapes) and show its answer."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the pipeline as TOML and exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show each stage's shape, the files and the memory a run needs; write nothing."),
    color: bool | None = typer.Option(
        None, "--color/--gray", help="Feed red, green and blue, or luma (default: gray, or what --config says).", show_default=False
    ),
    convention: str | None = typer.Option(
        None, "--convention", help="correlation (kernels as written, as CNNs do) or convolution (kernels flipped).", show_default=False
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder that cnnx did not write."),
    normalize: str = typer.Option(
        "symmetric", "--normalize", help="How values become colours: symmetric (0 in the middle), minmax, percentile, fixed."
    ),
    scope: str = typer.Option("block", "--scope", help="What shares one range: map, stage, block (a conv and what follows it), pipeline."),
    cmap: str = typer.Option("diverging", "--cmap", help="Colour map: diverging, gray, viridis, or any name of the cmap package."),
    value_range: str | None = typer.Option(None, "--range", help="LOW,HIGH for --normalize fixed, e.g. -1,1."),
    percentile: float = typer.Option(99.5, "--percentile", help="For --normalize percentile: the magnitude percentile that sets the range."),
    min_size: int = typer.Option(128, "--min-size", min=1, help="Enlarge maps whose shorter side is smaller, by whole factors."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also write each stage's array as NN_stage/stage.npy."),
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help=PNG_LEVEL_HELP),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
    max_memory: str | None = typer.Option(None, "--max-memory", help="Refuse a run that needs more memory, e.g. 4G (default: 4/5 of this machine's)."),
    frame: int = typer.Option(0, "--frame", min=0, help="Which frame of an animated or multi-page image to use."),
    jobs: int | None = typer.Option(None, "-j", "--jobs", min=1, help="Images processed at once, in worker processes (default: the cores)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Run a batch on a Dask cluster at this address, e.g. tcp://HOST:8786."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run a Conv -> ReLU -> Pool pipeline and write every feature map as a PNG.

    By default the lesson's flow, twice: edges in four directions (conv, relu,
    2x2 max pool), then a centre-surround filter on each direction's map
    (conv, relu, 2x2 max pool).  Each channel of each stage becomes
    OUT/NN_stage/chCC_filter.png, and a table sums up every stage.  Given
    several images (or folders, or patterns), each gets its own folder under
    OUT, processed in parallel.

    Example: cnnx pipeline samples/chelsea.png --spec "conv(sobel_x@) -> relu -> maxpool(2)"
    """
    from cnnx.folder import Style
    from cnnx.jobs import Job, find_images, parse_bytes
    from cnnx.spec import load_pipeline, to_toml

    with _reported_errors():
        if model is not None:
            if spec or config or preset_name or color:
                raise CnnxError("--model brings its own pipeline: give no --spec, --config, --preset or --color with it")
            from cnnx.model import load_model

            chosen = load_model(model).pipeline
        else:
            chosen = load_pipeline(spec=spec, config=config, preset_name=preset_name, color=color, convention=convention)
        if print_config:
            out.print(to_toml(chosen), markup=False, highlight=False, end="", soft_wrap=True)
            return
        style = Style(normalize, scope, cmap, percentile, _parse_range(value_range), min_size)
        paths = find_images(images or [])
        if not paths:
            raise CnnxError("give an IMAGE to run (or a folder, or a pattern), or --print-config to see the pipeline")
        budget = parse_bytes(max_memory) if max_memory else None
        single = len(paths) == 1 and not Path((images or [""])[0]).is_dir()
        root = out_dir if out_dir is not None else Path("cnnx-out")
        settings = dict(
            pipeline=chosen, style=style, png_level=png_level, save_raw=save_raw, frame=frame, force=force,
            max_memory=budget, model=model, **_pixel_limit(max_pixels),
        )
        if single:
            destination = out_dir if out_dir is not None else root / paths[0].stem
            job = Job(paths[0], destination, **settings)
            _dry_run(job) if dry_run else _run_single(job, quiet)
            return
    _run_many(paths, root, settings, jobs, scheduler, quiet, dry_run)


def _dry_run(job) -> None:
    """Print the plan of one job: shapes, files and memory."""
    from cnnx.jobs import format_bytes, plan
    from cnnx.report import plan_table

    shape, shapes, estimate = plan(job)
    out.print(plan_table(job, shape, shapes))
    files = sum(s[0] for s in [shape, *shapes])
    out.print(
        f"{files} maps, {len(shapes) + 1} montages, overview.png, index.html and manifest.json would go to "
        f"{job.destination}; memory needed at most about {format_bytes(estimate.peak)}",
        markup=False, highlight=False, soft_wrap=True,
    )


def _run_single(job, quiet: bool) -> None:
    from cnnx.jobs import run_job
    from cnnx.report import summary_table

    with _progress(quiet, "stages") as advance:
        outcome = run_job(job, progress=advance)
    _note_frames(outcome.source)
    out.print(summary_table([s.result for s in outcome.stages], job.destination, job.pipeline))
    if outcome.answer:
        from cnnx.report import answer_table

        out.print(answer_table(outcome.answer, job.model))
    t = outcome.timings
    out.print(
        f"wrote {outcome.maps} maps, a montage per stage, overview.png, index.html and manifest.json to "
        f"{job.destination} in {t['total']:.2f} s (load {t['load']:.2f}, compute {t['compute']:.2f}, "
        f"render {t['render']:.2f}, write {t['write']:.2f})",
        markup=False, highlight=False, soft_wrap=True,
    )


def _run_many(paths, root: Path, settings: dict, jobs: int | None, scheduler: str | None, quiet: bool, dry_run: bool) -> None:
    """A batch: every image into its own folder under ``root``; keeps going past failures and lists them at the end."""
    from cnnx.jobs import Job, batch_destinations, run_job_reporting

    batch = [Job(p, d, **settings) for p, d in zip(paths, batch_destinations(paths, root))]
    if dry_run:
        with _reported_errors():
            for job in batch:
                _dry_run(job)
        return
    _finish_batch(batch, root, jobs, scheduler, quiet, run_job_reporting, "pipeline")


def _finish_batch(
    batch: list, root: Path, jobs: int | None, scheduler: str | None, quiet: bool, work, command: str
) -> None:
    """Run a batch on the executor asked for, print one table, list every failure, and exit 1 if any failed."""
    from cnnx.jobs import run_batch
    from cnnx.report import batch_table

    with _reported_errors(), _executor(jobs, scheduler, len(batch)) as executor, _progress(quiet, "images") as advance:
        count = iter(range(1, len(batch) + 1))
        outcomes = run_batch(batch, executor, done=lambda _: advance(next(count), len(batch)), work=work)
    out.print(batch_table(outcomes, root, command))
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        _say(f"cnnx: error: {outcome.error}")
    if failed:
        _say(f"cnnx: {len(failed)} of {len(outcomes)} images failed")
        raise typer.Exit(RUNTIME_FAILURE)


@contextmanager
def _executor(jobs: int | None, scheduler: str | None, count: int):
    """Worker processes on this machine (-j), or a Dask cluster (--scheduler); none for one worker."""
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise CnnxError("--scheduler needs Dask: pip install 'cnnx[dask]'") from None
        try:
            client = Client(scheduler, timeout=10)
        except OSError as error:
            raise CnnxError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cnnx.ops import num_threads

    workers = min(jobs or num_threads(), count)
    if workers <= 1:
        # One worker is one core, here as in each worker process: -j counts the cores a batch uses.
        previous = num_threads()
        _single_threaded_worker()
        try:
            yield None
        finally:
            from cnnx.ops import set_num_threads

            set_num_threads(previous)
        return
    # Each worker draws on one thread: the processes already keep the cores busy.  Workers are spawned,
    # not forked, since a fork of a process running thread pools can inherit their locks held.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_threaded_worker) as pool:
        yield pool


def _single_threaded_worker() -> None:
    from cnnx.ops import set_num_threads

    set_num_threads(1)


@contextmanager
def _progress(quiet: bool, what: str):
    """A transient progress bar on stderr, only on a terminal and without --quiet.

    Yields ``advance(done, total, note="")``; the note (maps written, say) shows beside the count.
    """
    if quiet or not err.is_terminal:
        yield lambda done, total, note="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=None, note="")
        yield lambda done, total, note="": bar.update(task, completed=done, total=total, note=note)


def _parse_range(text: str | None) -> tuple[float, float] | None:
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
    images: list[str] = typer.Argument(..., metavar="IMAGES...", help="The image to filter; or several, folders or patterns."),
    kernel_spec: str = typer.Argument(
        ..., metavar="KERNEL", help="A filter name (see 'cnnx filters'), name:param=value, a [[...]] matrix or a .npy file."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--out", help="PNG to write (default: IMAGE-NAME_KERNEL.png); for several images, their folder (default: cnnx-out)."
    ),
    show: bool = typer.Option(False, "--show", help="Also print the kernel card."),
    color: bool = typer.Option(False, "--color/--gray", help="Filter each of red, green, blue, or luma (default)."),
    padding_mode: str = typer.Option(
        "replicate", "--padding-mode", help="Border values: zeros, reflect, replicate or circular."
    ),
    convention: str = typer.Option("correlation", "--convention", help="correlation (kernel as written) or convolution (flipped)."),
    normalize: str = typer.Option("symmetric", "--normalize", help="symmetric (0 in the middle), minmax, percentile or fixed."),
    cmap: str = typer.Option("gray", "--cmap", help="Colour map: gray, diverging, viridis, or any name of the cmap package."),
    value_range: str | None = typer.Option(None, "--range", help="LOW,HIGH for --normalize fixed, e.g. -1,1."),
    percentile: float = typer.Option(99.5, "--percentile", help="For --normalize percentile: the magnitude percentile that sets the range."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file that cnnx did not write."),
    png_level: int = typer.Option(1, "--png-level", min=0, max=9, help=PNG_LEVEL_HELP),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help=MAX_PIXELS_HELP, show_default=False),
    frame: int = typer.Option(0, "--frame", min=0, help="Which frame of an animated or multi-page image to use."),
    jobs: int | None = typer.Option(None, "-j", "--jobs", min=1, help="Images processed at once, in worker processes (default: the cores)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Run a batch on a Dask cluster at this address."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Apply one filter to an image and write the response as a PNG, the same size as the image.

    The response is signed; by default mid grey is 0, white the largest
    magnitude (positive), black the same magnitude negative.  With --color
    each colour channel is filtered and drawn in its own colour.

    Example: cnnx filter samples/stripes.png sobel_x --show
    """
    from cnnx.folder import Style, safe_name
    from cnnx.jobs import FilterJob, batch_destinations, find_images, run_filter, run_filter_reporting
    from cnnx.kernels import parse_kernel
    from cnnx.report import kernel_card

    with _reported_errors():
        kernel = parse_kernel(kernel_spec)
        style = Style(normalize, "stage", cmap, percentile, _parse_range(value_range))
        paths = find_images(images)
        settings = dict(
            kernel=kernel.spec, style=style, color=color, padding_mode=padding_mode, convention=convention,
            png_level=png_level, frame=frame, force=force, **_pixel_limit(max_pixels),
        )
        if show:
            out.print(kernel_card(kernel, _bank_entry(kernel)))
        name = safe_name(kernel.label)
        if len(paths) == 1 and not Path(images[0]).is_dir():
            target = output if output is not None else Path(f"{paths[0].stem}_{name}.png")
            result = run_filter(FilterJob(paths[0], target, **settings))
            _note_frames(result.source)
            (H, W), shown = result.shape[1:], "rgb" if color else cmap
            out.print(
                f"{kernel.label} on {paths[0]} ({H}x{W}, {'rgb' if color else 'gray'}): values {result.values[0]:.4g} to "
                f"{result.values[1]:.4g}; drawn from {result.drawn[0]:.4g} to {result.drawn[1]:.4g} ({shown})\nwrote {target}",
                markup=False, highlight=False, soft_wrap=True,
            )
            return
        root = output if output is not None else Path("cnnx-out")
        root.mkdir(parents=True, exist_ok=True)
        targets = [d.with_name(f"{d.name}_{name}.png") for d in batch_destinations(paths, root)]
        batch = [FilterJob(p, t, **settings) for p, t in zip(paths, targets)]
    _finish_batch(batch, root, jobs, scheduler, quiet, run_filter_reporting, "filter")


@app.command()
def filters(
    name: str | None = typer.Argument(
        None, metavar="[KERNEL]", help="Show one kernel in full: a name, name:param=value, a matrix or a .npy file."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Show the learned kernels of a shipped model (shapes)."),
    layer: str = typer.Option("conv1", "--layer", help="With --model: which conv layer to print."),
    output: Path | None = typer.Option(None, "-o", "--out", help="With --model: also draw every conv layer's kernels into this PNG."),
) -> None:
    """List the filter bank, or show one kernel's card: matrix, sum, kind and output range.

    With --model, the kernels a trained model learned, as matrices (and pictures with -o).

    Example: cnnx filters --model shapes -o shapes-kernels.png
    """
    from cnnx.kernels import parse_kernel
    from cnnx.report import filters_table, kernel_card

    with _reported_errors():
        if model is not None:
            _show_model_kernels(model, layer, output)
            return
        if name is None:
            out.print(filters_table())
            return
        kernel = parse_kernel(name)
        out.print(kernel_card(kernel, _bank_entry(kernel)))


explain_app = typer.Typer(
    help="The arithmetic of each step, shown step by step: conv, relu, pool, field.", no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(explain_app, name="explain")
JSON_HELP = "Print the same content as JSON, for scripts and notebooks."


def _show(data, view) -> None:
    """Print an explanation: as rich text, or as JSON with --json."""
    import json

    from cnnx.explain import as_json

    if view is None:
        out.print_json(json.dumps(as_json(data)), highlight=False) if out.is_terminal else print(json.dumps(as_json(data), indent=2))
    else:
        out.print(view(data))


@explain_app.command("conv")
def explain_conv(
    image: Path | None = typer.Argument(None, help="An image to take a patch from (default: the lesson's 4x4 example)."),
    matrix: str | None = typer.Option(None, "--input", help="A small input matrix, e.g. [[1,2,1,0],[0,1,3,2]]."),
    kernel_spec: str = typer.Option("vertical_edge", "--kernel", "-k", help="The kernel: a name, name:param=value or a matrix."),
    stride: int = typer.Option(1, "--stride", min=1, help="Step between windows (input matrices)."),
    padding: int = typer.Option(0, "--padding", min=0, help="Zero border around an input matrix."),
    at: str | None = typer.Option(None, "--at", help="ROW,COL of the output pixel to explain, with an IMAGE."),
    padding_mode: str = typer.Option("replicate", "--padding-mode", help="Border of an IMAGE: zeros, reflect, replicate, circular."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Replay a convolution window by window: the values under the kernel, the products, the sum.

    Without arguments, the lesson's example: the 4x4 input and the vertical-edge
    filter, with where the lesson's own arithmetic went wrong.

    Example: cnnx explain conv samples/chelsea.png --at 120,200 --kernel sobel_x
    """
    from cnnx import explain, explain_view
    from cnnx.images import load_image
    from cnnx.kernels import parse_kernel

    with _reported_errors():
        kernel = parse_kernel(kernel_spec)
        if image is not None:
            if at is None:
                raise CnnxError("with an IMAGE, say which output pixel with --at ROW,COL")
            row, col = _pair_of_ints(at, "--at")
            data = explain.explain_patch(load_image(image).array, str(image), kernel, row, col, padding_mode)
            _show(data, None if as_json else explain_view.patch_view)
            return
        values = explain.parse_matrix(matrix) if matrix else explain.lesson_input()
        data = explain.explain_conv(values, kernel, stride=stride, padding=padding)
        _show(data, None if as_json else explain_view.conv_view)


@explain_app.command("relu")
def explain_relu(
    image: Path | None = typer.Argument(None, help="An image: show values before and after a ReLU stage of a pipeline."),
    stage: int = typer.Option(2, "--stage", help="Which stage of the pipeline (a relu) to look at."),
    spec: str | None = typer.Option(None, "--spec", "-s", help="The pipeline (default: the lesson's)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show ReLU, max(0, x): on the lesson's -10..10, or on a real image's feature maps as a histogram.

    Example: cnnx explain relu samples/chelsea.png --stage 2
    """
    from cnnx import explain, explain_view
    from cnnx.images import load_image
    from cnnx.spec import load_pipeline

    with _reported_errors():
        if image is None:
            data = explain.explain_relu()
        else:
            chosen = load_pipeline(spec=spec)
            data = explain.explain_relu_image(load_image(image, color=chosen.color).array, chosen, stage)
        _show(data, None if as_json else explain_view.relu_view)


@explain_app.command("pool")
def explain_pool(
    image: Path | None = typer.Argument(None, help="An image: measure how pooling tolerates small shifts of it."),
    matrix: str | None = typer.Option(None, "--input", help="A small input matrix (default: the lesson's 4x4)."),
    size: int = typer.Option(2, "--size", min=1, help="Window size."),
    stride: int | None = typer.Option(None, "--stride", min=1, help="Step between windows (default: the size)."),
    shifts: int = typer.Option(4, "--shifts", min=1, max=32, help="With an IMAGE: shift it by 1, 2, ... this many pixels."),
    spec: str | None = typer.Option(None, "--spec", "-s", help="With an IMAGE: the pipeline (default: the lesson's)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show pooling window by window, or measure on an image how much each stage tolerates a small shift.

    Example: cnnx explain pool samples/chelsea.png --shifts 4
    """
    from cnnx import explain, explain_view
    from cnnx.images import load_image
    from cnnx.spec import load_pipeline

    with _reported_errors():
        if image is not None:
            chosen = load_pipeline(spec=spec)
            source = load_image(image, color=chosen.color)
            data = explain.shift_tolerance(source.array, str(image), chosen, list(range(1, shifts + 1)))
            _show(data, None if as_json else explain_view.shift_view)
            return
        values = explain.parse_matrix(matrix) if matrix else explain.lesson_input()
        _show(explain.explain_pool(values, size, stride), None if as_json else explain_view.pool_view)


@explain_app.command("field")
def explain_field(
    image: Path | None = typer.Argument(None, help="An image whose size to use (default: 256x256)."),
    spec: str | None = typer.Option(None, "--spec", "-s", help="The pipeline (default: the lesson's)."),
    preset_name: str | None = typer.Option(None, "--preset", "-p", help="A named pipeline."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show how the receptive field grows stage by stage: deeper layers see larger patterns.

    Example: cnnx explain field --preset random
    """
    from cnnx import explain, explain_view
    from cnnx.images import probe_image
    from cnnx.spec import load_pipeline

    with _reported_errors():
        chosen = load_pipeline(spec=spec, preset_name=preset_name)
        size = probe_image(image) if image is not None else (256, 256)
        data = explain.explain_field(chosen, (3 if chosen.color else 1, *size))
        _show(data, None if as_json else explain_view.field_view)


def _pair_of_ints(text: str, option: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise CnnxError(f"{option} takes two whole numbers, ROW,COL; got {text!r}") from None
    return first, second


def _show_model_kernels(name: str, layer: str, output: Path | None) -> None:
    import numpy as np
    from rich.columns import Columns

    from cnnx.explain_view import matrix
    from cnnx.folder import check_writable
    from cnnx.kernels import load_model_layer
    from cnnx.model import load_model
    from cnnx.png import write_png
    from cnnx.report import kernels_picture

    chosen = load_model(name)
    weights = load_model_layer(f"model:{name}:{layer}").weights
    if weights.ndim != 4:
        raise CnnxError(f"{layer} of model {name} is not a conv layer")
    out.print(f"model {name}, layer {layer}: {weights.shape[0]} filters over {weights.shape[1]} input channels, "
              f"{weights.shape[2]}x{weights.shape[3]}; test accuracy {chosen.meta['test']['accuracy']:.2%}",
              markup=False, highlight=False, soft_wrap=True)
    grids = [matrix(weights[o, c].round(2).tolist(), f"filter {o}" + (f" ch {c}" if weights.shape[1] > 1 else ""), digits=2)
             for o in range(weights.shape[0]) for c in range(weights.shape[1])]
    out.print(Columns(grids, padding=(0, 2)))
    if output is not None:
        check_writable(output)
        layers = [load_model_layer(f"model:{name}:{key}").weights for key in ("conv1", "conv2")]
        write_png(output, np.asarray(kernels_picture(layers, ["conv1", "conv2"])), text={"Software": "cnnx"})
        out.print(f"wrote {output}", markup=False, highlight=False)


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
