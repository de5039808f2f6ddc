"""Writing a run's pictures: every map as a PNG (and a tile of it), a montage per stage, and the overview.

A stage's maps are coloured on every core, then encoded in the background
(the deflate releases the GIL) while the next stage is computed; a stage's
maps are written and released before the stage after it is coloured.

Each stage is drawn as what it is: signed maps on the diverging colours
(blue below zero, white at zero, red above), values that are never negative
on its positive half, probabilities from 0 to 1, a row of class scores as
labelled cells, a flattened row folded back into a row per channel.  Values
beyond the range drawn are counted, and every picture says how many.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from cnnx.base import runtime, signals
from cnnx.io.output import check_writable, safe_name
from cnnx.io.png import write_png
from cnnx.render import draw, sheets
from cnnx.render.draw import Style, shape_text
from cnnx.sources.source import StageResult

# Stages that make new quantities start a block: their range is carried through the stages after them.
BLOCK_STARTS = ("conv", "dense", "softmax")
TILE = 256  # pixels on the long side of a map's tile in montages and on the page, at the least
OVERVIEW_TILE = 128  # ... and in the overview
OVERVIEW_ROWS = 6  # maps of each stage the overview shows
BAR = 420  # pixels a stage's colour bar is wide
SOFTWARE = {"Software": "cnnx"}  # the tEXt chunk that marks a PNG as cnnx's
DEFAULT_STYLE = Style()


@dataclass(frozen=True)
class MapFile:
    """One written feature map: its file and tile, channel, label, and the values colours 0 and 255 stand for.

    ``clipped`` is the share of its values below ``low`` and above ``high``, drawn in the end colours.
    """

    path: Path
    channel: int
    label: str
    low: float
    high: float
    clipped: tuple[float, float] = (0.0, 0.0)
    tile: Path | None = None


@dataclass
class StageFiles:
    """What was written for one stage."""

    result: StageResult
    maps: list[MapFile] = field(default_factory=list)
    montages: list[Path] = field(default_factory=list)
    raw: Path | None = None
    cmap: str = "gray"
    stretch: str = "linear"
    colorbar: Path | None = None

def stage_folder_name(result: StageResult) -> str:
    """``03_maxpool``: sorts in pipeline order and names the operation."""
    return f"{result.index:02d}_{safe_name(result.name)}"


def png_text(
    label: str,
    low: float,
    high: float,
    shape: tuple[int, ...],
    cmap: str,
    clipped: tuple[float, float] = (0.0, 0.0),
    stretch: str = "linear",
) -> dict[str, str]:
    """tEXt chunks that let a reader map any pixel back to its value, and know how many values were clipped."""
    return {
        "Software": "cnnx",
        "cnnx:map": label.encode("latin-1", "replace").decode("latin-1"),
        "cnnx:low": repr(low),
        "cnnx:high": repr(high),
        "cnnx:cmap": cmap,
        "cnnx:size": "x".join(map(str, shape)),
        "cnnx:clipped": f"{clipped[0]!r},{clipped[1]!r}",
        "cnnx:stretch": stretch,
    }


def stage_cmap(style: Style, result: StageResult, low: float) -> str:
    """The colour map a stage is drawn with: grey for the input; the positive half for values never below zero."""
    if result.index == 0:
        return "gray"
    return "positive" if style.cmap == "diverging" and low >= 0 else style.cmap


def stage_stretch(style: Style, result: StageResult) -> str:
    """The input, probabilities and labelled scores are drawn linearly; feature maps with the style's stretch."""
    return "linear" if result.index == 0 or result.name == "softmax" or result.value_names else style.curve


def _folded(array: np.ndarray, before: tuple[int, ...] | None) -> np.ndarray:
    """A flattened row (1, 1, C*H*W) drawn as C rows of H*W values, one per channel of the stage it came from."""
    if before and array.shape[:2] == (1, 1) and before[0] > 1 and array.size == int(np.prod(before)):
        return array.reshape(1, before[0], -1)
    return array

class RunWriter:
    """Draws and writes each stage of a run into ``root`` as it arrives; ``finish()`` adds the overview.

    ``root`` is a folder from ``staged_folder``, which appears whole or not at
    all, so files are written straight to their names inside it.  A stage's
    maps are drawn on the pool while the next stage is computed;
    the writer waits for them before it takes the stage after, so at most one
    stage is being drawn at a time.
    """

    def __init__(
        self,
        root: Path,
        style: Style = DEFAULT_STYLE,
        *,
        png_level: int = 1,
        save_raw: bool = False,
        on_map: Callable[[], None] | None = None,
        chained: bool = True,
    ):
        self.root = root
        self.on_map = on_map or (lambda: None)  # told after each map is written, from the thread that wrote it
        self.style = style
        self.png_level = png_level
        self.save_raw = save_raw
        self.chained = chained  # with scope=block, a conv's range is carried to the stages after it
        self.stages: list[StageFiles] = []
        self._block_range: tuple[float, float] | None = None
        self._block = 0  # which block the stage belongs to: its stages share a range and a colour bar
        self._before: tuple[int, ...] | None = None  # the shape of the stage before
        self._waiting: list[StageResult] = []  # scope=pipeline: drawn once every range is known
        self._overview: list[sheets.Column] = []
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
        """The (low, high) of each channel, by scope; the input is drawn as it is, probabilities from 0 to 1."""
        channels = result.shape[0]
        if result.index == 0 or result.name == "softmax":
            self._block_range = None if result.index == 0 else (0.0, 1.0)
            return [(0.0, 1.0)] * channels
        if self.style.scope == "map":
            return [self.style.range_of(fmap) for fmap in result.array]
        # The known extremes save two passes, where every value is finite (else the range finds the finite ones).
        extremes = (result.stats.min, result.stats.max) if not result.stats.nonfinite else None
        if self.style.scope == "block":
            if self._starts_block(result) or self._block_range is None:
                self._block_range = self.style.range_of(result.array, extremes)
            return [self._block_range] * channels
        return [self.style.range_of(result.array, extremes)] * channels

    def _starts_block(self, result: StageResult) -> bool:
        """A conv, dense or softmax stage makes new quantities; a graph's written layers each stand alone."""
        return result.name in BLOCK_STARTS or not self.chained

    def _write(self, result: StageResult, ranges: list[tuple[float, float]]) -> None:
        """Colour the stage's maps now (on every core), then write them on the pool while the next stage is computed.

        Once this returns the stage's array is no longer read, so the next stage may overwrite it.
        """
        folder = self.root / stage_folder_name(result)
        (folder / "tiles").mkdir(parents=True)
        cmap = stage_cmap(self.style, result, min(low for low, _ in ranges))
        table = draw.colormap(cmap)
        stretch = stage_stretch(self.style, result)
        files = StageFiles(result.released(), cmap=cmap, stretch=stretch)
        count = self.style.clips and result.index > 0
        array = _folded(result.array, self._before)
        with self._rendering():
            indexed = [
                draw.indexed(fmap, low, high, count=count, stretch=stretch)
                for fmap, (low, high) in zip(array, ranges, strict=True)
            ]
        labels, name = result.labels, stage_folder_name(result)
        names = result.value_names
        values = result.array.ravel() if names else None
        if self.save_raw:
            files.raw = folder / "stage.npy"
            np.save(files.raw, result.array)

        def write_map(channel: int) -> tuple[Image.Image, Image.Image]:
            (low, high), label, drawn = ranges[channel], labels[channel], indexed[channel]
            indexed[channel] = None  # written maps are let go one by one
            stem = f"ch{channel:02d}_{safe_name(label)}.png"
            path, tile_path = folder / stem, folder / "tiles" / stem
            big = draw.upscale(drawn.index, min_side=self.style.min_side)
            text = png_text(label, low, high, result.shape, cmap, drawn.clipped, stretch)
            write_png(path, big, palette=table, level=self.png_level, text=text, atomic=False)
            if names:
                tile = sheets.labelled_values(drawn.index, table, list(names), values, TILE)
            else:
                tile = draw.thumbnail(drawn.index, table, TILE)
            write_png(tile_path, np.asarray(tile), level=self.png_level, text={"Software": "cnnx"}, atomic=False)
            files.maps.append(MapFile(path, channel, label, low, high, drawn.clipped, tile_path))
            self.on_map()
            if names:
                small = sheets.labelled_values(drawn.index, table, list(names), values, OVERVIEW_TILE)
            else:
                small = draw.thumbnail(drawn.index, table, OVERVIEW_TILE, within=True)
            return tile, small

        # Held signals: a stop between submitting the writes and recording them would leave writes that no one
        # waits for, into a folder being removed.
        with signals.deferred():
            pending = runtime.background(write_map, range(len(indexed)))
            self._tasks = [task for task in self._tasks if not task.done()] + pending
        self._complete_drawing()  # the stage before this one
        if self._starts_block(result) or result.index <= 1 or self.style.scope != "block":
            self._block += 1
        block, before = self._block, self._before
        self._before = result.shape

        def complete() -> None:
            drawn = [task.result() for task in pending]
            files.maps.sort(key=lambda m: m.channel)
            bar = self._colorbar(files, table)
            files.colorbar = folder / "colorbar.png"
            drawn_bar = bar(BAR)
            write_png(files.colorbar, np.asarray(drawn_bar), level=self.png_level, text=SOFTWARE, atomic=False)
            files.montages = self._write_montages(files, [tile for tile, _ in drawn], drawn_bar, folder)
            with self._rendering():
                shown = [small for _, small in drawn[:OVERVIEW_ROWS]]
                title = [name, shape_text(result.shape)] + (
                    [f"folded from {shape_text(before)}"] if array is not result.array else []
                )
                labels_shown = [f"ch{m.channel:02d} {m.label}" for m in files.maps[:OVERVIEW_ROWS]]
                more = max(0, len(drawn) - OVERVIEW_ROWS)
                self._overview.append(sheets.Column(title, shown, labels_shown, more, block, bar))
            self.stages.append(files)

        self._drawing = complete

    def _colorbar(self, files: StageFiles, table) -> Callable[[int], Image.Image]:
        """The stage's colour bar, at a width: its range with what lies beyond, or words where each map has its own."""
        ranges = {(m.low, m.high) for m in files.maps}
        if len(ranges) > 1:
            return partial(draw.colorbar, table, 0.0, 1.0, ends=("each map's low", "its high"), stretch=files.stretch)
        below = sum(m.clipped[0] for m in files.maps) / len(files.maps)
        above = sum(m.clipped[1] for m in files.maps) / len(files.maps)
        low, high = ranges.pop()
        return partial(draw.colorbar, table, low, high, clipped=(below, above), stretch=files.stretch)

    def _write_montages(self, files: StageFiles, tiles, bar, folder: Path) -> list[Path]:
        """Contact sheets of every channel, ``montage_limit`` to a page, so no map is ever left out."""
        shared = len({(m.low, m.high) for m in files.maps}) == 1
        labels = [
            f"ch{m.channel:02d} {m.label}" + ("" if shared else f" [{m.low:.3g}, {m.high:.3g}]") for m in files.maps
        ]
        limit = self.style.montage_limit
        pages = [range(start, min(start + limit, len(tiles))) for start in range(0, len(tiles), limit)]
        paths = []
        for number, page in enumerate(pages, 1):
            with self._rendering():
                sheet = sheets.montage([tiles[k] for k in page], [labels[k] for k in page], bar)
            path = folder / ("montage.png" if len(pages) == 1 else f"montage-{number}.png")
            write_png(path, np.asarray(sheet), level=self.png_level, text={"Software": "cnnx"}, atomic=False)
            paths.append(path)
        return paths

    def _write_overview(self) -> None:
        """Every stage side by side, in order: the first maps of each, rows lined up, a colour bar per block."""
        if not self._overview:
            return
        with self._rendering():
            sheet = sheets.overview(self._overview, box=OVERVIEW_TILE)
        write_png(
            self.root / "overview.png", np.asarray(sheet), level=self.png_level, text={"Software": "cnnx"}, atomic=False
        )


def write_picture(path: Path, picture: Image.Image, *, force: bool = False) -> None:
    """Write a picture cnnx drew (a kernel sheet, say) as a PNG, never over a file cnnx did not write."""
    check_writable(path, force=force)
    write_png(path, np.asarray(picture.convert("RGB")), text={"Software": "cnnx"})
