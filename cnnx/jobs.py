"""One image through a pipeline into its output folder, and many images on any executor.

``run_job`` does everything one ``cnnx pipeline`` run does: it reads the
image header, refuses a run that would not fit the memory budget, loads the
image, checks the pipeline against its size, and writes the maps, montages,
overview, manifest and gallery into a folder that appears whole or not at
all.  ``run_batch`` hands jobs to a ``concurrent.futures.Executor``: a local
process pool, or a Dask cluster's ``Client.get_executor()``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from cnnx import runtime
from cnnx.draw import Style
from cnnx.errors import CnnxError, message
from cnnx.images import DEFAULT_MAX_PIXELS, Source, load_image, probe_image
from cnnx.manifest import manifest, write_manifest
from cnnx.maps import RunWriter, StageFiles
from cnnx.memory import MemoryEstimate, estimate_memory
from cnnx.output import staged_folder
from cnnx.page import gallery
from cnnx.source import PlannedStage, StageSource

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
    source: Source | None = None
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
    if value <= 0:
        raise CnnxError(f"a memory size must be positive; got {text!r}")
    return int(value)


def plan(job: Job) -> tuple[tuple[int, int, int], list[PlannedStage], MemoryEstimate]:
    """From the image header alone: the first stage's input shape, the stages, and the memory the run needs."""
    height, width = probe_image(job.image, max_pixels=job.max_pixels)
    loaded = (3 if job.source.color else 1, height, width)
    shape = job.source.input_shape(loaded)
    return shape, job.source.plan(shape), estimate_memory(job.source, loaded, job.style)


def run_job(job: Job, progress: Callable[..., None] | None = None) -> Outcome:
    """Run one image into its folder; known failures raise CnnxError (or OSError when writing fails).

    ``progress(stages done, stages, note)`` is called as stages are computed and maps written (from any thread).
    """
    start = time.perf_counter()
    shape, planned, estimate = plan(job)
    budget = job.max_memory or default_memory_budget()
    if estimate.peak > budget:
        raise CnnxError(
            f"{job.image}: the run needs about {format_bytes(estimate.peak)} of memory, over the budget of "
            f"{format_bytes(budget)}; raise --max-memory, or use a smaller image or pipeline"
        )
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
    with staged_folder(job.destination, force=job.force) as folder, RunWriter(
        folder, job.style, png_level=job.png_level, save_raw=job.save_raw, on_map=tally.map_written
    ) as writer:
        for result in results:
            if result.index == len(planned):
                outcome.answer = source.answer(result.array)
            writer.add(result)
            tally.stage_done(result.index)
        outcome.stages = writer.finish()
        record = manifest(loaded_image, source, job.style, outcome.stages, folder, outcome.answer)
        write_manifest(folder, record)
        (folder / "index.html").write_text(gallery(loaded_image, source, outcome.stages, folder, outcome.answer))
    for files in outcome.stages:  # the files now live in the destination, not the temporary folder
        files.maps = [replace(m, path=job.destination / m.path.relative_to(folder)) for m in files.maps]
        files.montages = [job.destination / p.relative_to(folder) for p in files.montages]
        files.raw = files.raw and job.destination / files.raw.relative_to(folder)
    compute = sum(s.result.seconds for s in outcome.stages)
    total = time.perf_counter() - start
    # Wall-clock parts that add up to the total: PNGs are written on other threads while the stages are
    # computed, so "write" is only the time spent waiting for them (and the manifest and gallery).
    load, render = loaded - start, writer.render_seconds
    outcome.timings = {"load": load, "compute": compute, "render": render, "write": total - load - compute - render,
                       "total": total}
    return outcome


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
    """``run_job`` for a batch: a known failure becomes the outcome's error instead of stopping the batch."""
    try:
        return run_job(job)
    except (CnnxError, OSError) as error:
        return Outcome(job, error=message(error))


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


@dataclass
class FilterOutcome:
    job: FilterJob
    source: Source | None = None
    shape: tuple[int, ...] = ()
    values: tuple[float, float] = (0.0, 0.0)  # the response's smallest and largest value
    drawn: tuple[float, float] = (0.0, 0.0)  # the values the first and last colours stand for
    seconds: float = 0.0
    error: str | None = None

    @property
    def maps(self) -> int:
        return 0 if self.error else 1


def run_filter(job: FilterJob) -> FilterOutcome:
    """Filter one image and write the response as a PNG the size of the image."""
    from cnnx import draw
    from cnnx.choices import CONVENTIONS
    from cnnx.kernels import parse_kernel
    from cnnx.maps import png_text
    from cnnx.output import check_writable
    from cnnx.png import write_png
    from cnnx.stages import Conv

    start = time.perf_counter()
    kernel = parse_kernel(job.kernel)
    if job.convention not in CONVENTIONS:
        raise CnnxError(f"--convention must be {' or '.join(CONVENTIONS)}; got {job.convention!r}")
    source = load_image(job.image, color=job.color, frame=job.frame, max_pixels=job.max_pixels)
    stage = Conv((kernel.spec,), combine="depthwise", padding="same", padding_mode=job.padding_mode)
    response = stage.apply(source.array, flip=job.convention == "convolution")
    check_writable(job.target, force=job.force)
    low, high = job.style.range_of(response)
    index = draw.to_index(response, low, high)
    shown = "rgb" if job.color else job.style.cmap
    pixels, palette = (index.transpose(1, 2, 0), None) if job.color else (index[0], draw.colormap(job.style.cmap))
    write_png(job.target, pixels, palette=palette, level=job.png_level,
              text=png_text(kernel.label, low, high, response.shape, shown))
    values = (float(response.min()), float(response.max()))
    seconds = time.perf_counter() - start
    return FilterOutcome(job, replace(source, array=None), response.shape, values, (low, high), seconds)


def run_filter_reporting(job: FilterJob) -> FilterOutcome:
    """``run_filter`` for a batch: a known failure becomes the outcome's error."""
    try:
        return run_filter(job)
    except (CnnxError, OSError) as error:
        return FilterOutcome(job, error=message(error))


def find_images(inputs: Iterable[str]) -> list[Path]:
    """The image files named by paths, folders (searched recursively) and glob patterns, in a stable order.

    A name that matches nothing is kept, so that its job reports the problem.
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise CnnxError(f"{path}: no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += inside
        elif any(char in text for char in "*?[") and not path.exists():
            matches = sorted(Path().glob(text)) if not path.is_absolute() else sorted(Path(path.anchor).glob(text[1:]))
            if not matches:
                raise CnnxError(f"{text}: no file matches this pattern")
            found += [p for p in matches if p.is_file()]
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def batch_destinations(images: list[Path], root: Path) -> list[Path]:
    """One subfolder of ``root`` per image, named after it; images of the same name get -2, -3, ..."""
    seen: dict[str, int] = {}
    destinations = []
    for image in images:
        stem = image.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        destinations.append(root / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        yield pool


def _one_thread() -> None:
    runtime.set_num_threads(1)


def run_batch(
    jobs: list, executor: Executor | None, done: Callable | None = None, work: Callable = run_job_reporting
) -> list:
    """``work`` on every job, on ``executor`` (in this process when None); outcomes in the jobs' order."""
    if executor is None:
        outcomes = []
        for job in jobs:
            outcomes.append(work(job))
            if done:
                done(outcomes[-1])
        return outcomes
    futures = [executor.submit(work, job) for job in jobs]
    outcomes = []
    for future in futures:
        outcomes.append(future.result())
        if done:
            done(outcomes[-1])
    return outcomes
