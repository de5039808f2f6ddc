"""Writing a run's pictures: every map as a PNG, a montage per stage, and the overview.

A stage's maps are coloured on every core, then encoded in the background
(the deflate releases the GIL) while the next stage is computed; a stage's
maps are written and released before the stage after it is coloured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnx import draw, runtime
from cnnx.draw import Style
from cnnx.output import check_writable, safe_name
from cnnx.png import write_png
from cnnx.source import StageResult

# Stages that make new quantities start a block: their range is carried through the stages after them.
BLOCK_STARTS = ("conv", "dense", "softmax")


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
        # The known extremes save two passes, where every value is finite (else the range finds the finite ones).
        extremes = (result.stats.min, result.stats.max) if not result.stats.nonfinite else None
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
            indices = [draw.to_index(fmap, *span) for fmap, span in zip(result.array, ranges, strict=True)]
        labels, name = result.labels, stage_folder_name(result)
        if self.save_raw:
            files.raw = folder / "stage.npy"
            np.save(files.raw, result.array)

        def write_map(channel: int) -> Image.Image:
            (low, high), label, index = ranges[channel], labels[channel], indices[channel]
            indices[channel] = None  # written maps are let go one by one
            path = folder / f"ch{channel:02d}_{safe_name(label)}.png"
            big = draw.upscale(index, min_side=self.style.min_side)
            write_png(
                path,
                big,
                palette=table,
                level=self.png_level,
                text=png_text(label, low, high, index.shape, cmap),
                atomic=False,
            )
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
        labels = [
            f"ch{m.channel:02d} {m.label}" + ("" if shared else f" [{m.low:.3g}, {m.high:.3g}]") for m in files.maps
        ]
        limit = self.style.montage_limit
        pages = [range(start, min(start + limit, len(thumbs))) for start in range(0, len(thumbs), limit)]
        paths = []
        for number, page in enumerate(pages, 1):
            count = (
                _plural(len(thumbs), "map")
                if len(pages) == 1
                else f"maps {page.start + 1}-{page.stop} of {len(thumbs)}"
            )
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
        write_png(
            self.root / "overview.png", np.asarray(sheet), level=self.png_level, text={"Software": "cnnx"}, atomic=False
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def write_picture(path: Path, picture: Image.Image, *, force: bool = False) -> None:
    """Write a picture cnnx drew (a kernel sheet, say) as a PNG, never over a file cnnx did not write."""
    check_writable(path, force=force)
    write_png(path, np.asarray(picture.convert("RGB")), text={"Software": "cnnx"})
