"""One image through a pipeline into its output folder, and many images on any executor.

``run_job`` does everything one ``cnnx pipeline`` run does: it reads the
image header, refuses a run that would not fit the memory budget, loads the
image, checks the pipeline against its size, and writes the maps, montages,
overview, manifest and gallery into a folder that appears whole or not at
all.  ``run_batch`` hands jobs to a ``concurrent.futures.Executor``: a local
process pool, or a Dask cluster's ``Client.get_executor()``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnx.app.memory import MemoryEstimate, estimate_memory, load_bytes
from cnnx.base import runtime, signals
from cnnx.base.errors import Cancelled, CnnxError, about
from cnnx.io.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image, probe_image
from cnnx.io.output import checked_destination, run_image, safe_name, staged_folder
from cnnx.render.draw import Style
from cnnx.render.manifest import manifest, write_manifest
from cnnx.render.maps import RunWriter, StageFiles
from cnnx.render.page import gallery
from cnnx.sources.source import PlannedStage, StageResult, StageSource, Stats

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".tga"}


def physical_memory() -> int:
    """Bytes of memory this machine has."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget() -> int:
    """Four fifths of the machine's memory: room for the program and everything else."""
    return physical_memory() * 4 // 5


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


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """'4G', '512M', '300k' or a plain number of bytes."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, unit = text.strip().lower().rstrip("ib").rstrip(), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise CnnxError(f"a memory size is a number with an optional K, M, G or T, e.g. 4G; got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise CnnxError(f"a memory size is a finite number of bytes, at least 1, e.g. 512M; got {text!r}")
    return int(value)


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


def refuse_over_budget(needed: int, budget: int | None = None) -> None:
    """Refuse work that needs more memory than ``budget`` (by default four fifths of the machine's)."""
    budget = default_memory_budget() if budget is None else budget
    if needed > budget:
        raise CnnxError(
            f"the run needs about {format_bytes(needed)} of memory, over the budget of {format_bytes(budget)}; "
            "raise --max-memory, or use a smaller image or pipeline"
        )


def memory_to_keep_all(image: Path, source: StageSource | None, *, copies: int = 1) -> int:
    """Memory to load ``image`` and run ``source`` on it ``copies`` times keeping every stage (as ``explain`` does).

    From the header and the shapes alone; with no source, the loading alone.
    """
    height, width = probe_image(image)
    if source is None:
        return load_bytes((1, height, width))
    loaded = (3 if source.color else 1, height, width)
    estimate = estimate_memory(source, loaded, Style(scope="pipeline", min_side=1))
    return estimate.load + copies * max(estimate.stages)


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


@dataclass
class Found:
    """The images a command line names, in a stable order, and what inside its folders was passed over, and why."""

    images: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _kind_of(path: Path) -> str | None:
    """Why a folder entry named like an image is no image file: None for a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return "a link that leads nowhere" if path.is_symlink() else (error.strerror or str(error)).lower()
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a pipe or device, not a file"


def _walk(folder: Path, found: Found, skip: Path | None) -> None:
    """Image files below ``folder``; folders are entered once each, so a link loop ends.  The output folder
    ``skip`` and the folders of cnnx's runs are passed over: cnnx never reads its own maps back in."""
    seen: set[tuple[int, int]] = set()
    output = None
    if skip is not None and skip.is_dir():
        here = os.stat(skip)
        output = (here.st_dev, here.st_ino)
        seen.add(output)
    for top, folders, files in os.walk(folder, followlinks=True):
        here = os.stat(top)
        if (here.st_dev, here.st_ino) in seen:
            if (here.st_dev, here.st_ino) != output:
                found.skipped.append(f"{top}: a link back to a folder already searched")
            folders.clear()
            continue
        seen.add((here.st_dev, here.st_ino))
        if run_image(Path(top)) is not None:
            found.skipped.append(f"{top}: a folder of cnnx's maps")
            folders.clear()
            continue
        folders.sort()
        for name in sorted(files):
            path = Path(top, name)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            why = _kind_of(path)
            if why:
                found.skipped.append(f"{path}: {why}")
            else:
                found.images.append(path)


def _in_output(path: Path, root: Path | None) -> bool:
    """True if ``path`` lies in the output folder ``root`` or in a cnnx run's folder (its maps are up to three
    folders down: ``run/01_conv/tiles/ch00.png``)."""
    real = Path(os.path.realpath(path))
    if root is not None and Path(os.path.realpath(root)) in real.parents:
        return True
    return any(run_image(folder) is not None for folder in list(real.parents)[:3])


def find_images(inputs: Iterable[str], *, skip: Path | None = None) -> Found:
    """The image files named by paths, folders (searched recursively) and glob patterns, in a stable order.

    A name given on its own is kept whatever it is, so that its job reports
    the problem; inside folders and patterns, what is not a regular file is
    passed over and listed in ``skipped``.
    """
    found = Found()
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            before = len(found.images)
            _walk(path, found, skip)
            found.images[before:] = sorted(found.images[before:])
            if len(found.images) == before:
                raise CnnxError(f"{path}: no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif any(char in text for char in "*?[") and not path.exists():
            matches = sorted(Path().glob(text)) if not path.is_absolute() else sorted(Path(path.anchor).glob(text[1:]))
            if not matches:
                raise CnnxError(f"{text}: no file matches this pattern")
            for match in (m for m in matches if not _in_output(m, skip)):
                why = _kind_of(match)
                if why is None:
                    found.images.append(match)
                elif why != "a folder":
                    found.skipped.append(f"{match}: {why}")
        else:
            found.images.append(path)
    found.images = list(dict.fromkeys(found.images))
    return found


def output_name(image: Path) -> str:
    """The name of an image's output: its stem as a safe file name (never ``.`` or ``..``)."""
    return safe_name(image.stem, fallback="image")


def default_destination(image: Path, root: Path) -> tuple[Path, str | None]:
    """``root/NAME`` for an image's run, NAME its safe stem; where that folder holds the run of another image (two
    names alike once made safe), the first ``NAME-2``, ``NAME-3``, ... that is free or holds this image's own run.
    Returns the folder, and a note saying why it is not ``root/NAME`` (None where it is)."""
    stem = output_name(image)
    wanted = os.path.realpath(image)
    count = 1
    while True:
        folder = root / (stem if count == 1 else f"{stem}-{count}")
        other = run_image(folder)
        if other is None or os.path.realpath(other) == wanted:
            break
        count += 1
    if count == 1:
        return folder, None
    return folder, f"{root / stem} holds the maps of another image; those of {image} go to {folder}"


def batch_destinations(images: list[Path], root: Path) -> list[Path]:
    """One subfolder of ``root`` per image, named after it, no two alike (nor alike but for case).

    A name already taken gets the first free of -2, -3, ...: ``a-2.png`` and
    a second ``a.png`` never share a folder.
    """
    taken: set[str] = set()
    destinations = []
    for image in images:
        stem = name = output_name(image)
        count = 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name.casefold())
        destinations.append(root / name)
    return destinations


@contextmanager
def batch_executor(jobs: int | None, scheduler: str | None, count: int) -> Iterator[Executor | None]:
    """Worker processes on this machine (``jobs`` of them, one per core by default), or a Dask cluster's executor.

    None (work in this process, on one thread) where one worker is all there is.
    """
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
    workers = min(jobs or runtime.num_threads(), count)
    if workers <= 1:
        # One worker is one core, here as in each worker process: -j counts the cores a batch uses.
        previous = runtime.num_threads()
        runtime.set_num_threads(1)
        try:
            yield None
        finally:
            runtime.set_num_threads(previous)
        return
    # Each worker draws on one thread: the processes already keep the cores busy.  Workers are spawned,
    # not forked, since a fork of a process running thread pools can inherit their locks held.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_started) as pool:
        yield pool


def _worker_started() -> None:
    """A worker process: one thread, Ctrl-C left to the parent, SIGTERM unwinding so nothing is left half-written."""
    runtime.set_num_threads(1)
    signals.install(worker=True)


# How the batch machinery says a worker process died: the pool is then broken and must be made anew.
WORKER_DIED = "the worker process died while processing it (killed by the system, perhaps for lack of memory)"


def run_batch(jobs: list, *, processes: int | None = None, scheduler: str | None = None,
              done: Callable | None = None, work: Callable = run_job_reporting) -> list:
    """``work`` on every job; outcomes in the jobs' order, ``done(outcome)`` told as each ends.

    Every failure becomes its job's outcome: an error in the work, a failure
    to hand the job over, or a worker process that died.  A pool whose worker
    died is made anew; the jobs that were running then are run again one at
    a time, and one that kills a pool on its own is given up.  Ctrl-C (or
    SIGTERM) stops the workers, whose half-written folders are removed, and
    is raised again once they are gone.
    """
    outcomes: list = [None] * len(jobs)
    strikes = [0] * len(jobs)
    waiting = list(range(len(jobs)))

    def finish(k: int, outcome) -> None:
        outcomes[k] = outcome
        if done:
            done(outcome)

    while waiting:
        with batch_executor(processes, scheduler, len(waiting)) as executor:
            if executor is None:
                for k in waiting:
                    finish(k, work(jobs[k]))
                break
            # Jobs that were running when a worker died run alone, so the one that kills a pool shows itself.
            suspects = [k for k in waiting if strikes[k]]
            width = 1 if suspects else processes or runtime.num_threads()
            left = _run_on(executor, jobs, suspects or waiting, strikes, finish, work, width)
            waiting = left + [k for k in waiting if suspects and k not in suspects]
    return outcomes


def _run_on(executor: Executor, jobs: list, waiting: list[int], strikes: list[int], finish, work, width: int):
    """Keep ``width`` jobs running on the executor until all are done or it breaks; return the jobs left."""
    running: dict = {}
    queue = list(waiting)
    try:
        while queue or running:
            while queue and len(running) < width:
                k = queue.pop(0)
                with signals.children_ignore_interrupt():  # a worker may be started now
                    running[executor.submit(_in_worker, work, jobs[k])] = k
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                k = running.pop(future)
                try:
                    finish(k, future.result())
                except BrokenExecutor:
                    left = [k, *running.values()]
                    for j in left:
                        strikes[j] += 1
                    for j in [j for j in left if strikes[j] >= 2]:
                        finish(j, _failed(jobs[j], WORKER_DIED))
                    return [j for j in left if strikes[j] < 2] + queue
                except Exception as error:  # handing the job over or getting it back failed
                    finish(k, _failed(jobs[k], about(jobs[k].image, error)))
    except BaseException:
        for future in running:
            future.cancel()
        _stop_workers()
        raise
    return []


def _in_worker(work: Callable, job):
    """``work(job)`` in a worker process: stopped by a signal, it ends the process once its files are cleaned up."""
    with signals.job():
        return work(job)


def _failed(job, error: str):
    return (Outcome if isinstance(job, Job) else FilterOutcome)(job, error=error)


def _stop_workers(seconds: float = 10.0) -> None:
    """Ask this process's worker processes to stop (SIGTERM: they remove what they half wrote) and wait for them."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + seconds
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
