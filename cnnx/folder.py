"""The output folder of a run: every map as a PNG, a montage per stage, an overview, appearing whole or not at all.

A run writes into a hidden temporary folder beside the destination and
renames it into place only when everything is written, so a failure or
Ctrl-C leaves nothing behind.  A folder that an earlier cnnx run made (it
holds cnnx's manifest) is replaced; any other non-empty folder is left alone
unless the user says ``--force``.

A stage's maps are coloured on every core, then encoded on a thread pool
(the deflate releases the GIL) while the next stage is computed; a stage's
maps are written and released before the stage after it is coloured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnx import draw, runtime
from cnnx.errors import CnnxError
from cnnx.pipeline import StageResult
from cnnx.png import umask, write_png

MANIFEST = "manifest.json"
SCOPES = ("map", "stage", "block", "pipeline")
# Stages that make new quantities start a block: their range is carried through the stages after them.
BLOCK_STARTS = ("conv", "dense", "softmax")


@dataclass(frozen=True)
class Style:
    """How values become pixels; see ``draw.value_range`` for the methods.

    ``scope`` is what shares one range: each map, each stage, each conv block
    (a conv stage and the stages after it up to the next conv: the conv's range
    is carried through its ReLU and pooling, so a colour means one value across
    them; a dense layer and a softmax start blocks too), or the whole pipeline.
    """

    normalize: str = "symmetric"
    scope: str = "block"
    cmap: str = "diverging"
    percentile: float = 99.5
    fixed: tuple[float, float] | None = None
    min_side: int = 128
    montage_limit: int = 64

    def __post_init__(self):
        if self.normalize not in draw.NORMALIZE:
            raise CnnxError(f"normalize must be one of {', '.join(draw.NORMALIZE)}; got {self.normalize!r}")
        if self.scope not in SCOPES:
            raise CnnxError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        if self.normalize == "fixed" and (self.fixed is None or not self.fixed[0] < self.fixed[1]):
            raise CnnxError("normalize=fixed needs --range LOW,HIGH with LOW < HIGH")
        if not 0 < self.percentile <= 100:
            raise CnnxError(f"percentile must be in (0, 100]; got {self.percentile}")
        draw.colormap(self.cmap)  # an unknown colour map is an error before any work

    def range_of(self, values: np.ndarray, extremes: tuple[float, float] | None = None) -> tuple[float, float]:
        return draw.value_range(values, self.normalize, percentile=self.percentile, fixed=self.fixed, extremes=extremes)


@dataclass(frozen=True)
class MapFile:
    """One written feature map: its file, channel, label, and the values colour 0 and colour 255 stand for."""

    path: Path
    channel: int
    label: str
    low: float
    high: float


@dataclass
class StageFiles:
    """What was written for one stage."""

    result: StageResult
    maps: list[MapFile] = field(default_factory=list)
    montages: list[Path] = field(default_factory=list)
    raw: Path | None = None
    cmap: str = "gray"


def safe_name(text: str) -> str:
    """A file-name fragment from free text: letters, digits, ``.``, ``_``, ``-``; never a path."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")
    return name[:80] or "map"


def stage_folder_name(result: StageResult) -> str:
    """``03_maxpool``: sorts in pipeline order and names the operation."""
    return f"{result.index:02d}_{safe_name(result.name)}"


def png_text(label: str, low: float, high: float, shape: tuple[int, ...], cmap: str) -> dict[str, str]:
    """tEXt chunks that let a reader map any pixel back to its value."""
    return {
        "Software": "cnnx",
        "cnnx:map": label,
        "cnnx:low": repr(low),
        "cnnx:high": repr(high),
        "cnnx:cmap": cmap,
        "cnnx:size": "x".join(map(str, shape)),
    }


class RunWriter:
    """Draws and writes each stage of a run into ``root`` as it arrives; ``finish()`` adds the overview.

    ``root`` is a folder from ``staged_folder``, which appears whole or not at
    all, so files are written straight to their names inside it.  A stage's
    maps are drawn on the pool while the next stage is computed;
    the writer waits for them before it takes the stage after, so at most one
    stage is being drawn at a time.
    """

    def __init__(self, root: Path, style: Style = Style(), *, png_level: int = 1, save_raw: bool = False,
                 on_map: Callable[[], None] | None = None):
        self.root = root
        self.on_map = on_map or (lambda: None)  # told after each map is written, from the thread that wrote it
        self.style = style
        self.png_level = png_level
        self.save_raw = save_raw
        self.stages: list[StageFiles] = []
        self._block_range: tuple[float, float] | None = None
        self._waiting: list[StageResult] = []  # scope=pipeline: drawn once every range is known
        self._overview: list[Image.Image] = []
        self._drawing: Callable[[], None] | None = None  # completes the stage being drawn
        self._tasks: list[Future] = []
        self.render_seconds = 0.0  # time this thread spent colouring maps and drawing montages

    @contextmanager
    def _rendering(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.render_seconds += time.perf_counter() - start

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """On a failure, stop the drawing still under way before anyone removes the folder it writes into."""
        if error is not None:
            for task in self._tasks:
                task.cancel()
            wait(self._tasks)

    def add(self, result: StageResult) -> None:
        if self.style.scope == "pipeline" and result.index > 0:
            self._waiting.append(result)
            return
        self._write(result, self._ranges(result))

    def finish(self) -> list[StageFiles]:
        if self._waiting:
            shared = self.style.range_of(np.concatenate([r.array.ravel() for r in self._waiting]))
            for result in self._waiting:
                self._write(result, [shared] * result.shape[0])
            self._waiting.clear()
        self._complete_drawing()
        self._write_overview()
        return self.stages

    def _complete_drawing(self) -> None:
        if self._drawing is not None:
            complete, self._drawing = self._drawing, None
            complete()

    def _ranges(self, result: StageResult) -> list[tuple[float, float]]:
        """The (low, high) of each channel, by scope; the input is drawn as it is, 0 black and 1 white."""
        channels = result.shape[0]
        if result.index == 0:
            return [(0.0, 1.0)] * channels
        if self.style.scope == "map":
            return [self.style.range_of(fmap) for fmap in result.array]
        extremes = (result.stats.min, result.stats.max)
        if self.style.scope == "block":
            if result.name in BLOCK_STARTS or self._block_range is None:
                self._block_range = self.style.range_of(result.array, extremes)
            return [self._block_range] * channels
        return [self.style.range_of(result.array, extremes)] * channels

    def _write(self, result: StageResult, ranges: list[tuple[float, float]]) -> None:
        """Colour the stage's maps now (on every core), then write them on the pool while the next stage is computed.

        Once this returns the stage's array is no longer read, so the next stage may overwrite it.
        """
        folder = self.root / stage_folder_name(result)
        folder.mkdir()
        cmap = "gray" if result.index == 0 else self.style.cmap
        table = draw.colormap(cmap)
        files = StageFiles(result.released(), cmap=cmap)
        with self._rendering():
            indices = [draw.to_index(fmap, *span) for fmap, span in zip(result.array, ranges)]
        labels, name = result.labels, stage_folder_name(result)
        if self.save_raw:
            files.raw = folder / "stage.npy"
            np.save(files.raw, result.array)

        def write_map(channel: int) -> Image.Image:
            (low, high), label, index = ranges[channel], labels[channel], indices[channel]
            indices[channel] = None  # written maps are let go one by one
            path = folder / f"ch{channel:02d}_{safe_name(label)}.png"
            big = draw.upscale(index, min_side=self.style.min_side)
            write_png(path, big, palette=table, level=self.png_level, text=png_text(label, low, high, index.shape, cmap),
                      atomic=False)
            files.maps.append(MapFile(path, channel, label, low, high))
            self.on_map()
            return draw.thumbnail(index, table, 192)

        pending = runtime.background(write_map, range(len(indices)))
        self._tasks = [task for task in self._tasks if not task.done()] + pending
        self._complete_drawing()  # the stage before this one

        def complete() -> None:
            thumbs = [task.result() for task in pending]
            files.maps.sort(key=lambda m: m.channel)
            files.montages = self._write_montages(files, thumbs, table, folder)
            with self._rendering():
                self._overview.append(draw.column(name, thumbs[:6], max(0, len(thumbs) - 6)))
            self.stages.append(files)

        self._drawing = complete

    def _write_montages(self, files: StageFiles, thumbs, table, folder: Path) -> list[Path]:
        """Contact sheets of every channel, ``montage_limit`` to a page, so no map is ever left out."""
        ranges = {(m.low, m.high) for m in files.maps}
        shared = len(ranges) == 1
        if shared:
            bars = [draw.colorbar(table, *ranges.pop(), 320)]
        else:
            bars = [draw.colorbar(table, 0.0, 1.0, 320, ends=("each map's low", "high"))]
        labels = [f"ch{m.channel:02d} {m.label}" + ("" if shared else f" [{m.low:.3g}, {m.high:.3g}]") for m in files.maps]
        limit = self.style.montage_limit
        pages = [range(start, min(start + limit, len(thumbs))) for start in range(0, len(thumbs), limit)]
        paths = []
        for number, page in enumerate(pages, 1):
            count = _plural(len(thumbs), "map") if len(pages) == 1 else f"maps {page.start + 1}-{page.stop} of {len(thumbs)}"
            title = f"{stage_folder_name(files.result)}  {files.result.description}  ({count})"
            with self._rendering():
                sheet = draw.montage([thumbs[k] for k in page], [labels[k] for k in page], title, bars)
            path = folder / ("montage.png" if len(pages) == 1 else f"montage-{number}.png")
            write_png(path, np.asarray(sheet), level=self.png_level, text={"Software": "cnnx"}, atomic=False)
            paths.append(path)
        return paths

    def _write_overview(self) -> None:
        """Every stage side by side, in order: the first maps of each."""
        if not self._overview:
            return
        gap = 10
        width = sum(c.width for c in self._overview) + gap * (len(self._overview) + 1)
        height = max(c.height for c in self._overview) + 2 * gap
        with self._rendering():
            sheet = Image.new("RGB", (width, height), draw.BACKGROUND)
            x = gap
            for col in self._overview:
                sheet.paste(col, (x, gap))
                x += col.width + gap
        write_png(self.root / "overview.png", np.asarray(sheet), level=self.png_level, text={"Software": "cnnx"},
                  atomic=False)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def is_cnnx_png(path: Path) -> bool:
    """True if ``path`` is a PNG that cnnx wrote (it carries cnnx's tEXt chunk)."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == "cnnx"
    except (OSError, ValueError, SyntaxError):
        return False


def check_writable(path: Path, *, force: bool = False) -> None:
    """Refuse to overwrite a file cnnx did not write (unless ``force``), or to write into a missing folder."""
    if path.is_dir():
        raise CnnxError(f"{path}: is a folder; give a file name ending in .png")
    if path.exists() and not force and not is_cnnx_png(path):
        raise CnnxError(f"{path}: exists and was not written by cnnx; use --force to overwrite it")
    if not path.parent.is_dir():
        raise CnnxError(f"{path.parent}: no such folder")


def is_cnnx_folder(folder: Path) -> bool:
    """True if ``folder`` holds the manifest of an earlier cnnx run."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("tool") == "cnnx"
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def staged_folder(destination: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``destination`` when the block succeeds.

    On any exception (Ctrl-C included) the temporary folder is removed and
    ``destination`` is untouched.
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise CnnxError(f"{destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not is_cnnx_folder(destination) and not force:
        raise CnnxError(f"{destination}: folder exists and was not written by cnnx; use --force to replace it")
    created = _make_parents(destination.parent)
    try:
        temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.tmp-"))
    except OSError as error:
        raise CnnxError(f"{destination.parent}: cannot write here ({error.strerror or error})") from None
    try:
        yield temporary
        _replace(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        for folder in created:
            _remove_if_empty(folder)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones this call created, deepest first.

    Another process of a batch may create the same parent at the same moment: that is no error.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
                created.append(path)
            except FileExistsError:
                if not path.is_dir():
                    raise
    except OSError as error:
        raise CnnxError(f"{missing[0]}: cannot create the folder ({error.strerror or error})") from None
    return created[::-1]


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _replace(temporary: Path, destination: Path) -> None:
    """Move the finished run into place; an earlier run there goes only once the new one is in."""
    os.chmod(temporary, 0o777 & ~umask())
    if not destination.exists():
        os.rename(temporary, destination)
        return
    old = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
    os.rename(destination, old / destination.name)
    os.rename(temporary, destination)
    shutil.rmtree(old)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json``, sorted and indented so that runs can be diffed."""
    text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n"
    (folder / MANIFEST).write_text(text)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")


# ---------------------------------------------------------------- memory

# Bytes per pixel while an image is read: the decoded 8-bit image (Pillow keeps RGB as 4 bytes) and, for the
# modes that are converted first (palette, CMYK, ...), the converted copy.
_LOAD_BYTES = 4 + 4


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory a run needs beyond the program itself, in bytes: when reading the image, and at each stage."""

    load: int
    stages: tuple[int, ...]

    @property
    def peak(self) -> int:
        return max(self.load, *self.stages)


def estimate_memory(pipeline, shape: tuple[int, int, int], style: Style = Style(), threads: int | None = None):
    """What a run of ``pipeline`` on an image of ``shape`` (C, H, W) will hold at its peak, from the shapes alone.

    Two moments of each stage count.  While it is computed: the stage's input
    (the image, for the first) and output (none of its own for an activation,
    which overwrites its input), what its op allocates (every thread's
    strips, and a filter's maps before they are interleaved), and the colour
    indices of the stage before, being written.  While its maps are coloured:
    its output and the indices of both stages.  With scope=pipeline every
    stage is kept to the end and nothing is overwritten.
    """
    from cnnx.kernels import RandomBank, WeightBank
    from cnnx.pipeline import Activation, Conv, check

    threads = threads or runtime.num_threads()
    C, H, W = shape
    load = 4 * C * H * W + _LOAD_BYTES * H * W
    shapes = check(pipeline.stages, shape)
    keep_all = style.scope == "pipeline"
    stages = []
    kept = 0
    previous = 4 * C * H * W  # the stage's input: the image, for the first stage
    drawn = C * H * W  # the colour indices of the stage before, being written
    for k, (stage, out) in enumerate(zip(pipeline.stages, shapes)):
        channel = out[1] * out[2]
        output = 4 * out[0] * channel
        op = 0
        if isinstance(stage, Conv):
            op = min(threads * runtime.STRIP_BYTES, 4 * (shape[0] + 4) * shape[1] * (shape[2] + 2))  # the strips
            if stage.combine == "depthwise" and not all(isinstance(s, (WeightBank, RandomBank)) for s in stage.sources):
                op += 4 * shape[0] * channel  # one named filter's maps over every channel, before they are interleaved
            elif stage.combine == "average" and shape[0] > 1:
                op += 4 * channel  # the channels' mean
        in_place = isinstance(stage, Activation) and k > 0 and not keep_all
        stages.append(kept + previous + (0 if in_place else output) + op + drawn)
        indices = out[0] * max(channel, style.min_side**2)
        stages.append(kept + output + indices + drawn)
        if keep_all:
            kept += output
        previous, shape, drawn = output, out, indices
    if keep_all:
        stages.append(2 * kept)  # every stage, and all their values joined to find one range
    return MemoryEstimate(load, tuple(stages))
