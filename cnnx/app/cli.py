"""The ``cnnx`` command: parse arguments, call the floors below, turn known errors into one-line messages.

Options that several commands share are declared once, below, as
``Annotated`` aliases.  Heavy modules are imported inside the commands, so
``cnnx --help`` and ``cnnx --version`` start without numpy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnnx import __version__
from cnnx.app import shell
from cnnx.app.explain_cli import app as explain_app
from cnnx.app.features_cli import features
from cnnx.app.shell import (
    PREPARATION,
    STAGES,
    STYLE,
    Cmap,
    Color,
    ConventionOption,
    DryRun,
    Force,
    Frame,
    Images,
    Jobs,
    KernelArgument,
    Labels,
    Layers,
    MaxMemory,
    MaxPixels,
    MinSize,
    Model,
    NormalizeOption,
    OutFile,
    OutFolder,
    PaddingModeOption,
    Percentile,
    PngLevel,
    PrintConfig,
    Quiet,
    Range,
    SaveRaw,
    Scheduler,
    ShowKernel,
    StretchOption,
    find,
    finish_batch,
    note_frames,
    out,
    pixel_limit,
    prepared,
    print_line,
    progress_bar,
    reported_errors,
    say,
    source_from,
    style_from,
    with_groups,
)
from cnnx.app.train_cli import train
from cnnx.app.why_cli import why
from cnnx.base import signals
from cnnx.base.choices import (
    DEFAULT_PERCENTILE,
    SAMPLE,
    Convention,
    Normalize,
    PaddingMode,
    Scope,
    Stretch,
    threads_from_environment,
)
from cnnx.base.errors import CnnxError

app = typer.Typer(
    help="See what a convolutional network does to an image: Conv -> ReLU -> Pool, every feature map as a PNG.",
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def _show_version(value: bool) -> None:
    if value:
        print_line(f"cnnx {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, metavar="", help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", metavar="", help="Show the traceback of an error, for bug reports.")
    ] = False,
) -> None:
    """See what a convolutional network does to an image: Conv -> ReLU -> Pool, every feature map as a PNG.

    Example: cnnx pipeline samples/chelsea.png
    """
    shell.debug = debug
    with reported_errors():  # a bad setting is said once, before any work
        threads_from_environment()


@app.command()
@with_groups
def pipeline(
    images: Images = None,
    stages: dict = STAGES,
    layers: Layers = None,
    labels: Labels = None,
    preparation: dict = PREPARATION,
    color: Color = None,
    convention: ConventionOption = None,
    out_dir: OutFolder = None,
    print_config: PrintConfig = False,
    dry_run: DryRun = False,
    force: Force = False,
    style: dict = STYLE,
    min_size: MinSize = 128,
    save_raw: SaveRaw = False,
    png_level: PngLevel = 1,
    max_pixels: MaxPixels = 0,
    max_memory: MaxMemory = None,
    frame: Frame = 0,
    jobs: Jobs = None,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Run a Conv -> ReLU -> Pool pipeline (or a model) and write every feature map as a PNG.

    By default the lesson's flow, twice: edges in four directions (conv, relu,
    2x2 max pool), then a centre-surround filter on each direction's map
    (conv, relu, 2x2 max pool).  Each channel of each stage becomes
    OUT/NN_stage/chCC_filter.png, and a table sums up every stage.  Given
    several images (or folders, or patterns), each gets its own folder under
    OUT, processed in parallel.

    Example: cnnx pipeline samples/chelsea.png --spec "conv(sobel_x@) -> relu -> maxpool(2)"
    """
    from cnnx.app.inputs import batch_destinations, default_destination
    from cnnx.app.jobs import Job
    from cnnx.app.memory import parse_bytes

    with reported_errors():
        source = source_from(**stages, color=color, convention=convention, layers=layers, labels=labels,
                             preprocess=prepared(**preparation), max_memory=max_memory)
        if print_config:
            from cnnx.sources.spec import to_toml

            if source.pipeline is None:
                raise CnnxError("--print-config prints a chain of stages; an ONNX model is its own file")
            out.print(to_toml(source.pipeline), markup=False, highlight=False, end="", soft_wrap=True)
            return
        root = out_dir if out_dir is not None else Path("cnnx-out")  # for several images: never read back in
        paths = find(images or [], skip=root)
        if not paths:
            raise CnnxError("give an IMAGE to run (or a folder, or a pattern), or --print-config to see the pipeline")
        settings = dict(
            source=source,
            style=style_from(**style, min_size=min_size),
            png_level=png_level,
            save_raw=save_raw,
            frame=frame,
            force=force,
            max_memory=parse_bytes(max_memory) if max_memory else None,
            **pixel_limit(max_pixels),
        )
        if len(paths) == 1 and not Path(images[0]).is_dir():
            destination, note = (out_dir, None) if out_dir is not None else default_destination(paths[0], root)
            if note:
                say(f"cnnx: note: {note}")
            job = Job(paths[0], destination, **settings)
            if dry_run:
                _dry_run(job)
            else:
                _run_single(job, quiet)
            return
        batch = [Job(p, d, **settings) for p, d in zip(paths, batch_destinations(paths, root), strict=True)]
        if dry_run:
            for job in batch:
                _dry_run(job)
            return
    from cnnx.app.jobs import run_job_reporting

    finish_batch(batch, root, jobs, scheduler, quiet, run_job_reporting, "pipeline")


def _dry_run(job) -> None:
    """Print the plan of one job: shapes, files and memory."""
    from cnnx.app.jobs import plan
    from cnnx.app.memory import format_bytes
    from cnnx.render.report import plan_table

    shape, planned, estimate = plan(job)
    out.print(plan_table(job.image, shape, planned))
    files = shape[0] + sum(s.shape[0] for s in planned)
    print_line(
        f"{files} maps, {len(planned) + 1} montages, overview.png, index.html and manifest.json would go to "
        f"{job.destination}; memory needed at most about {format_bytes(estimate.peak)}"
    )


def _run_single(job, quiet: bool) -> None:
    from cnnx.app.jobs import run_job
    from cnnx.render.report import answer_table, summary_table

    with progress_bar(quiet, "stages") as advance:
        outcome = run_job(job, progress=advance)
    note_frames(outcome.source)
    out.print(summary_table([s.result for s in outcome.stages], job.destination, job.source.caption))
    if outcome.answer:
        out.print(answer_table(outcome.answer, job.source.name, getattr(job.source, "caution", None)))
    t = outcome.timings
    ready = f"; the model made ready before it in {job.source.ready_seconds:.2f} s" if job.source.ready_seconds else ""
    print_line(
        f"wrote {outcome.maps} maps, a montage per stage, overview.png, index.html and manifest.json to "
        f"{job.destination} in {t['total']:.2f} s (load {t['load']:.2f}, compute {t['compute']:.2f}, "
        f"render {t['render']:.2f}, write {t['write']:.2f}{ready})"
    )


@app.command()
def presets() -> None:
    """List the named pipelines that --preset takes.

    Example: cnnx pipeline samples/chelsea.png --preset edges
    """
    from cnnx.render.report import presets_table
    from cnnx.sources.spec import PIPELINE_PRESETS

    out.print(presets_table(PIPELINE_PRESETS))


@app.command(name="filter")
def filter_(
    images: Images,
    kernel_spec: KernelArgument,
    output: OutFile = None,
    show: ShowKernel = False,
    color: Color = None,
    convention: ConventionOption = None,
    padding_mode: PaddingModeOption = PaddingMode.replicate,
    normalize: NormalizeOption = Normalize.percentile,
    cmap: Cmap = "gray",
    value_range: Range = None,
    percentile: Percentile = DEFAULT_PERCENTILE,
    stretch: StretchOption = Stretch.auto,
    force: Force = False,
    png_level: PngLevel = 1,
    max_pixels: MaxPixels = 0,
    frame: Frame = 0,
    jobs: Jobs = None,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Apply one filter to an image and write the response as a PNG, the same size as the image.

    The response is signed; by default mid grey is 0, white the largest
    magnitude (positive), black the same magnitude negative.  With --color
    each colour channel is filtered and drawn in its own colour.

    Example: cnnx filter samples/stripes.png sobel_x --show
    """
    from cnnx.app.inputs import batch_destinations, output_name
    from cnnx.app.jobs import FilterJob, run_filter, run_filter_reporting
    from cnnx.io.output import safe_name
    from cnnx.render.report import kernel_card
    from cnnx.sources.kernels import parse_kernel

    with reported_errors():
        kernel = parse_kernel(kernel_spec)
        root = output if output is not None else Path("cnnx-out")  # for several images: never read back in
        paths = find(images, skip=root)
        settings = dict(
            kernel=kernel.spec,
            style=style_from(normalize, Scope.stage, cmap, percentile, value_range, stretch),
            color=bool(color),
            padding_mode=padding_mode,
            convention=convention or Convention.correlation,
            png_level=png_level,
            frame=frame,
            force=force,
            **pixel_limit(max_pixels),
        )
        if show:
            out.print(kernel_card(kernel))
        name = safe_name(kernel.label)
        if len(paths) == 1 and not Path(images[0]).is_dir():
            target = output if output is not None else Path(f"{output_name(paths[0])}_{name}.png")
            result = run_filter(FilterJob(paths[0], target, **settings))
            note_frames(result.source)
            (H, W), mode, stats = result.shape[1:], "rgb" if color else "gray", result.stats
            values = "no finite values" if stats.min is None else f"values {stats.min:.4g} to {stats.max:.4g}"
            if stats.nonfinite:
                values += f" ({stats.nonfinite:.1%} not finite: the arithmetic overflowed float32, or met NaN)"
            print_line(
                f"{kernel.label} on {paths[0]} ({H}x{W}, {mode}): {values}; drawn from {result.drawn[0]:.4g} to "
                f"{result.drawn[1]:.4g} ({'rgb' if color else cmap}"
                + (", square-root scale)" if settings["style"].curve == "sqrt" else ")")
                + (f", {result.clipped:.2%} beyond those ends" if result.clipped else "")
                + f"\nwrote {target}"
            )
            return
        root.mkdir(parents=True, exist_ok=True)
        targets = [d.with_name(f"{d.name}_{name}.png") for d in batch_destinations(paths, root)]
        batch = [FilterJob(p, t, **settings) for p, t in zip(paths, targets, strict=True)]
    finish_batch(batch, root, jobs, scheduler, quiet, run_filter_reporting, "filter")


@app.command()
def filters(
    name: Annotated[str | None, typer.Argument(metavar="KERNEL", show_default=False, help="Show one kernel in full.")]
    = None,
    model: Model = None,
    layer: Annotated[str | None, typer.Option("--layer", help="With --model: which conv layer to print.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--out", help="Draw the kernel, or the model's, into a PNG.")]
    = None,
) -> None:
    """List the filter bank, or show one kernel's card: matrix, sum, kind and output range.

    With --model, the kernels a trained model learned, as matrices (and pictures with -o).

    Example: cnnx filters --model shapes -o shapes-kernels.png
    """
    from cnnx.render.report import filters_table, kernel_card
    from cnnx.sources.kernels import parse_kernel

    with reported_errors():
        if model is not None:
            _show_model_kernels(model, layer, output)
        elif name is None:
            if output is not None:
                raise CnnxError("-o draws a kernel or a model's kernels: name a KERNEL or a --model")
            out.print(filters_table())
        else:
            kernel = parse_kernel(name)
            out.print(kernel_card(kernel))
            if output is not None:
                _draw_kernels(output, {kernel.label: kernel.weights})


def _show_model_kernels(name: str, layer: str | None, output: Path | None) -> None:
    from cnnx.explain.views import learned_kernels_view

    chosen = source_from(None, None, None, name, None, None)
    accuracy = chosen.accuracy
    title = f"model {chosen.name}" + (f" (test accuracy {accuracy:.2%})" if accuracy is not None else "")
    kernels = chosen.learned_kernels()
    if not kernels:
        raise CnnxError(f"model {name} has no convolution with weights of its own")
    layer = layer or next(iter(kernels))
    if layer not in kernels:
        shown = ", ".join(list(kernels)[:12]) + (" ..." if len(kernels) > 12 else "")
        raise CnnxError(f"model {name} has no conv layer {layer!r}; it has {shown}")
    out.print(learned_kernels_view(title, layer, kernels[layer]))
    if output is not None:
        # The whole sheet of a deep network would be metres long: the layer asked for (by default the first).
        _draw_kernels(output, kernels if len(kernels) <= 4 else {layer: kernels[layer]})


def _draw_kernels(output: Path, kernels: dict) -> None:
    """A kernel sheet of ``kernels`` (name: weights) as a PNG, never over a file cnnx did not write."""
    from cnnx.render.maps import write_picture
    from cnnx.render.sheets import kernel_sheet

    write_picture(output, kernel_sheet(kernels))
    print_line(f"wrote {output}")


@app.command()
@with_groups
def serve(
    image: Annotated[
        Path | None, typer.Argument(
                metavar="IMAGE", help="The image to explore (default: the shipped sample; others can be uploaded).")
    ] = None,
    stages: dict = STAGES,
    layers: Layers = None,
    labels: Labels = None,
    preparation: dict = PREPARATION,
    color: Color = None,
    convention: ConventionOption = None,
    style: dict = STYLE,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The port (default: a free one).")] = 0,
    host: Annotated[str, typer.Option("--host", help="The address to listen on (others can reach it).")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", metavar="", help="Do not open a browser.")] = False,
    max_pixels: MaxPixels = 0,
) -> None:
    """Explore a run in the browser, live: any value and its arithmetic, stages and filters edited, images uploaded.

    Point at a map for the value there; click it for the arithmetic that made it. Edit the stages or a filter and
    every map is computed again; change the colours and they are drawn again. Pick an image, drop one on the page,
    or pick a shipped sample; download the run as the folder cnnx pipeline writes. With no IMAGE, the shipped
    photo.

    Example: cnnx serve samples/chelsea.png
    """
    import webbrowser

    from cnnx.app.serve import make_server
    from cnnx.app.session import Session

    with reported_errors():
        def make_source(text):
            if text is not None:
                return source_from(text, None, None, None, color, convention)
            return source_from(**stages, color=color, convention=convention, layers=layers, labels=labels,
                               preprocess=prepared(**preparation))

        drawn = style_from(**style)
    session = server = stopped = None
    try:  # from the first run on, whatever stops the server (Ctrl-C at any moment included) removes the runs
        with reported_errors():
            with signals.deferred():  # made and kept as one step: a stop always finds its folder to remove
                session = Session(image or SAMPLE, make_source, drawn, stages["spec"] or "", max_pixels)
            session.recompute()
            if session.run is None:
                raise CnnxError(session.error)
            if host not in ("127.0.0.1", "localhost"):
                say(f"cnnx: warning: listening on {host}: anyone who can reach it and has the URL can use it")
            server, url = make_server(session, host, port)
        print_line(f"cnnx serve: open {url}  (Ctrl-C stops it)")
        if not no_browser:
            webbrowser.open(url)
        server.serve_forever()
    except (KeyboardInterrupt, signals.Stopped) as stop:  # Ctrl-C, or SIGTERM/SIGHUP from a service manager
        stopped = shell.report_stop(stop, "the server's runs are removed")
    finally:
        if server is not None:
            server.server_close()
        if session is not None:
            session.close(seconds=0.25)
    if stopped is not None:
        # A recompute may still be inside a stage on other threads; its runs are gone, so nothing is left to wait
        # for, and waiting for its threads would keep the user (or a service manager) waiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped)


app.add_typer(explain_app)
app.command("why")(why)
app.command("features")(features)
app.command("train")(train)


def main() -> None:
    """Run the command line: signals unwind the stack, so nothing is left half-written."""
    signals.install()
    try:
        try:
            app(prog_name="cnnx")
        except (KeyboardInterrupt, signals.Stopped) as stop:  # while the options were read, before a command's report
            raise SystemExit(shell.report_stop(stop)) from None
    except SystemExit as done:
        if signals.stopping():
            # Stopped and cleaned up as the stack unwound, and said so: end now. Waiting at exit for the work's
            # threads could wait for ever on one the interruption left holding a lock.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 0 if done.code is None else 1)
        raise
    finally:
        signals.uninstall()


if __name__ == "__main__":
    sys.exit(main())
