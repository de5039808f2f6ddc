"""One image into its output folder: a pipeline's run (``run_job``), a run drawn again (``redraw_job``), a filter's
(``run_filter``).

``run_job`` does everything one ``cnnx pipeline`` run does: it reads the
image header, refuses a run that would not fit the memory budget, loads the
image, checks the pipeline against its size, and writes the maps, montages,
overview, manifest and gallery into a folder that appears whole or not at
all.  Batches of jobs run on any executor (``batches``); the images a command
line names are found by ``inputs``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnx.app.memory import MemoryEstimate, estimate_memory, refuse_over_budget
from cnnx.base.errors import Cancelled, CnnxError, about
from cnnx.io.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image, probe_image
from cnnx.io.output import checked_destination, staged_folder
from cnnx.render.draw import Style
from cnnx.render.manifest import manifest, write_manifest
from cnnx.render.maps import RunWriter, StageFiles
from cnnx.render.page import gallery
from cnnx.sources.source import PlannedStage, StageResult, StageSource, Stats


@dataclass(frozen=True)
class Job:
    """Everything one run needs; picklable, so it can travel to a worker process or a cluster."""

    image: Path
    destination: Path
    source: StageSource
    style: Style = Style()
    png_level: int = 1
    save_raw: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    frame: int = 0
    force: bool = False
    max_memory: int | None = None


@dataclass
class Outcome:
    """What became of one job: its stages, or the error that stopped it, and where the time went."""

    job: Job
    stages: list[StageFiles] = field(default_factory=list)
    source: LoadedImage | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    answer: list[tuple[str, float]] | None = None  # a model's classes with their probabilities

    @property
    def maps(self) -> int:
        return sum(len(s.maps) for s in self.stages)


def plan(job: Job) -> tuple[tuple[int, int, int], list[PlannedStage], MemoryEstimate]:
    """From the image header alone: the first stage's input shape, the stages, and the memory the run needs."""
    height, width = probe_image(job.image, max_pixels=job.max_pixels)
    loaded = (3 if job.source.color else 1, height, width)
    shape = job.source.input_shape(loaded)
    return shape, job.source.plan(shape), estimate_memory(job.source, loaded, job.style)


@contextmanager
def _naming(image: Path) -> Iterator[None]:
    """Errors a user can cause say which image they happened to."""
    try:
        yield
    except Cancelled:
        raise
    except CnnxError as error:
        raise CnnxError(about(image, error)) from None


def run_job(job: Job, progress: Callable[..., None] | None = None, *,
            cancelled: Callable[[], bool] | None = None) -> Outcome:
    """Run one image into its folder; known failures raise CnnxError naming the image (OSError when writing fails).

    ``progress(stages done, stages, note)`` is called as stages are computed and maps written (from any thread).
    ``cancelled()`` is asked between stages: once it says True the run raises ``Cancelled`` and leaves nothing.
    """
    with _naming(job.image):
        return _run_job(job, progress, cancelled or _never)


def _never() -> bool:
    return False


def _run_job(job: Job, progress: Callable[..., None] | None, cancelled: Callable[[], bool]) -> Outcome:
    start = time.perf_counter()
    shape, planned, estimate = plan(job)
    refuse_over_budget(estimate.peak, job.max_memory)
    checked_destination(job.destination, force=job.force)  # before any work
    source = job.source
    loaded_image = load_image(job.image, color=source.color, max_pixels=job.max_pixels, frame=job.frame)
    image = source.prepare(loaded_image.array)
    source.plan(image.shape)
    loaded = time.perf_counter()
    # From here the stages alone hold the image, and let it go once the first stage has read it.
    loaded_image = replace(loaded_image, array=None)
    outcome = Outcome(job, source=loaded_image)
    # With scope=pipeline the writer keeps every stage until the end, so none may be overwritten.
    results = source.stream(image, reuse=job.style.scope != "pipeline")
    del image
    tally = _Progress(progress, len(planned), shape[0] + sum(s.shape[0] for s in planned))
    writer = _write_run(job, outcome, results, len(planned), tally, cancelled)
    compute = sum(s.result.seconds for s in outcome.stages)
    total = time.perf_counter() - start
    # Wall-clock parts that add up to the total: PNGs are written on other threads while the stages are
    # computed, so "write" is only the time spent waiting for them (and the manifest and gallery).
    load, render = loaded - start, writer.render_seconds
    outcome.timings = {"load": load, "compute": compute, "render": render, "write": total - load - compute - render,
                       "total": total}
    return outcome


def redraw_job(job: Job, previous: Outcome) -> Outcome:
    """Draw a run again with ``job.style`` into ``job.destination`` from the arrays it saved (``save_raw``): the
    same stages, the same answer, nothing computed."""
    if not previous.stages or any(files.raw is None for files in previous.stages):
        raise CnnxError("only a run that saved its arrays can be drawn again")
    start = time.perf_counter()
    checked_destination(job.destination, force=job.force)
    outcome = Outcome(job, source=previous.source)
    saved = (replace(files.result, array=np.load(files.raw, allow_pickle=False)) for files in previous.stages)
    with _naming(job.image):
        writer = _write_run(job, outcome, saved, len(previous.stages) - 1, _Progress(None, 0, 0), _never)
    total = time.perf_counter() - start
    outcome.timings = {"load": 0.0, "compute": 0.0, "render": writer.render_seconds,
                       "write": total - writer.render_seconds, "total": total}
    return outcome


def _write_run(job: Job, outcome: Outcome, results: Iterator[StageResult], last: int, tally: _Progress,
               cancelled: Callable[[], bool]) -> RunWriter:
    """Draw and write every stage as it comes, then the manifest and the page, into a folder that appears whole;
    given up, with nothing left, when ``cancelled()`` says so between stages."""
    source = job.source
    with staged_folder(job.destination, force=job.force) as folder, RunWriter(
        folder, job.style, png_level=job.png_level, save_raw=job.save_raw, on_map=tally.map_written,
        chained=source.chained,
    ) as writer:
        for result in results:
            if result.index == last:
                outcome.answer = source.answer(result.array)
            writer.add(result)
            tally.stage_done(result.index)
            if cancelled():
                raise Cancelled("a newer request replaced this run")
        outcome.stages = writer.finish()
        record = manifest(outcome.source, source, job.style, outcome.stages, folder, outcome.answer)
        write_manifest(folder, record)
        (folder / "index.html").write_text(gallery(outcome.source, source, outcome.stages, folder, outcome.answer))
    for files in outcome.stages:  # the files now live in the destination, not the temporary folder
        moved = job.destination
        files.maps = [
            replace(m, path=moved / m.path.relative_to(folder), tile=m.tile and moved / m.tile.relative_to(folder))
            for m in files.maps
        ]
        files.montages = [moved / p.relative_to(folder) for p in files.montages]
        files.colorbar = files.colorbar and moved / files.colorbar.relative_to(folder)
        if files.raw:
            files.raw = moved / files.raw.relative_to(folder)
    return writer


class _Progress:
    """Stages computed and maps written, told to a ``progress`` callback; maps are written on several threads."""

    def __init__(self, progress: Callable[..., None] | None, stages: int, maps: int):
        self.progress, self.stages, self.maps = progress, stages, maps
        self.stage, self.written = 0, 0
        self.lock = threading.Lock()

    def stage_done(self, index: int) -> None:
        with self.lock:
            self.stage = index
            self._tell()

    def map_written(self) -> None:
        with self.lock:
            self.written += 1
            self._tell()

    def _tell(self) -> None:
        if self.progress:
            self.progress(self.stage, self.stages, f"{self.written}/{self.maps} maps written")


def run_job_reporting(job: Job) -> Outcome:
    """``run_job`` for a batch: any failure becomes the outcome's error, naming the image, instead of stopping it."""
    try:
        return run_job(job)
    except Exception as error:  # a batch lists every failure and goes on
        return Outcome(job, error=about(job.image, error))


@dataclass(frozen=True)
class FilterJob:
    """One ``cnnx filter`` run: an image, a kernel, and where the response goes."""

    image: Path
    target: Path
    kernel: str
    style: Style = Style(cmap="gray", scope="stage")
    color: bool = False
    padding_mode: str = "replicate"
    convention: str = "correlation"
    png_level: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    frame: int = 0
    force: bool = False

    @property
    def destination(self) -> Path:
        """Where the run's output goes, as a pipeline ``Job`` says it: here one PNG."""
        return self.target


@dataclass
class FilterOutcome:
    job: FilterJob
    source: LoadedImage | None = None
    shape: tuple[int, ...] = ()
    stats: Stats | None = None  # of the response
    drawn: tuple[float, float] = (0.0, 0.0)  # the values the first and last colours stand for
    clipped: float = 0.0  # the share of values beyond them, drawn in the end colours
    seconds: float = 0.0
    error: str | None = None

    @property
    def timings(self) -> dict[str, float]:
        """Where the time went, as a pipeline ``Outcome`` says it: here only the total."""
        return {"total": self.seconds}

    @property
    def maps(self) -> int:
        return 0 if self.error else 1


def run_filter(job: FilterJob) -> FilterOutcome:
    """Filter one image and write the response as a PNG the size of the image; errors name the image."""
    with _naming(job.image):
        return _run_filter(job)


def _run_filter(job: FilterJob) -> FilterOutcome:
    from cnnx.base.choices import CONVENTIONS
    from cnnx.io.output import check_writable
    from cnnx.io.png import write_png
    from cnnx.render import draw
    from cnnx.render.maps import png_text
    from cnnx.sources.kernels import parse_kernel
    from cnnx.sources.stages import Conv

    start = time.perf_counter()
    kernel = parse_kernel(job.kernel)
    if job.convention not in CONVENTIONS:
        raise CnnxError(f"--convention must be {' or '.join(CONVENTIONS)}; got {job.convention!r}")
    source = load_image(job.image, color=job.color, frame=job.frame, max_pixels=job.max_pixels)
    stage = Conv((kernel.spec,), combine="depthwise", padding="same", padding_mode=job.padding_mode)
    response = stage.apply(source.array, flip=job.convention == "convolution")
    check_writable(job.target, force=job.force)
    low, high = job.style.range_of(response)
    stretch = job.style.curve
    drawn = draw.indexed(response, low, high, count=job.style.clips, stretch=stretch)
    index = drawn.index
    shown = "rgb" if job.color else job.style.cmap
    pixels, palette = (index.transpose(1, 2, 0), None) if job.color else (index[0], draw.colormap(job.style.cmap))
    write_png(job.target, pixels, palette=palette, level=job.png_level,
              text=png_text(kernel.label, low, high, response.shape, shown, drawn.clipped, stretch))
    seconds = time.perf_counter() - start
    stats, clipped = Stats.of(response), sum(drawn.clipped)
    return FilterOutcome(job, replace(source, array=None), response.shape, stats, (low, high), clipped, seconds)


def run_filter_reporting(job: FilterJob) -> FilterOutcome:
    """``run_filter`` for a batch: any failure becomes the outcome's error, naming the image."""
    try:
        return run_filter(job)
    except Exception as error:  # a batch lists every failure and goes on
        return FilterOutcome(job, error=about(job.image, error))


