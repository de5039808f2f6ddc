"""How much memory a run will need, from the image header and the stage shapes alone, before any work, and the
budget it is held to."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from cnnx.base.errors import CnnxError
from cnnx.io.images import probe_image
from cnnx.render.draw import PERCENTILE_SAMPLE, Style
from cnnx.render.maps import OVERVIEW_TILE, TILE
from cnnx.sources.source import StageSource

DEFAULT_STYLE = Style()

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


def load_bytes(shape: tuple[int, int, int]) -> int:
    """Memory to read an image into a (C, H, W) float32 array: the array and the decoded pixels beside it."""
    C, H, W = shape
    return 4 * C * H * W + _LOAD_BYTES * H * W


def estimate_memory(source, shape: tuple[int, int, int], style: Style = DEFAULT_STYLE) -> MemoryEstimate:
    """What a run of ``source`` on an image of ``shape`` (C, H, W) as loaded will hold at its peak, from shapes alone.

    Reading the image: the decoded pixels, the float array, and, where the
    source prepares its input from it (a model crops and scales), the
    preparation's copies.  Then two moments of each stage count.  While it is
    computed: the stage's input (the image, for the first) and output (none
    of its own for an op that overwrites its input), what its op allocates
    (``PlannedStage.workspace``), and the colour indices of the stage before,
    being written.  While its maps are coloured: its output and the indices
    of both stages.  With scope=pipeline every stage is kept to the end and
    nothing is overwritten.
    """
    C, H, W = shape
    load = load_bytes(shape)
    prepared = source.input_shape(shape)
    if prepared != shape:
        load += 2 * 4 * H * W  # luma and the preparation's working copy, beside the loaded image
    keep_all = style.scope == "pipeline"
    stages = []
    kept = 0
    previous = 4 * math.prod(prepared)  # the stage's input: the image, for the first stage
    drawn = math.prod(prepared)  # the colour indices of the stage before, being written
    for planned in source.plan(prepared):
        out = planned.shape
        channel = out[1] * out[2]
        output = 4 * out[0] * channel
        in_place = planned.in_place and not keep_all
        stages.append(kept + previous + (0 if in_place else output) + planned.workspace + drawn)
        indices = out[0] * max(channel, style.min_side**2)
        # While its maps are coloured: the range's sample of magnitudes, and every map's tiles (RGB), kept for the
        # montage and the overview.
        sample = 4 * min(out[0] * channel, PERCENTILE_SAMPLE) if style.normalize == "percentile" else 0
        tiles = 3 * out[0] * (TILE * TILE + OVERVIEW_TILE * OVERVIEW_TILE)
        stages.append(kept + output + indices + drawn + sample + tiles)
        if keep_all:
            kept += output
        previous, drawn = output, indices
    if keep_all:
        stages.append(2 * kept)  # every stage, and all their values joined to find one range
    return MemoryEstimate(load, tuple(stages))


def physical_memory() -> int:
    """Bytes of memory this machine has."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget() -> int:
    """Four fifths of the machine's memory: room for the program and everything else."""
    return physical_memory() * 4 // 5


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


def refuse_over_budget(needed: int, budget: int | None = None) -> None:
    """Refuse work that needs more memory than ``budget`` (by default four fifths of the machine's)."""
    budget = default_memory_budget() if budget is None else budget
    if needed > budget:
        raise CnnxError(
            f"the run needs about {format_bytes(needed)} of memory, over the budget of {format_bytes(budget)}; "
            "raise --max-memory, or use a smaller image or pipeline"
        )


def memory_to_keep_all(image: Path, source: StageSource | None, *, copies: int = 1, **limit) -> int:
    """Memory to load ``image`` and run ``source`` on it ``copies`` times keeping every stage (as ``explain`` does).

    From the header and the shapes alone (an image over the pixel ``limit``, ``max_pixels``, refused); with no
    source, the loading alone.
    """
    height, width = probe_image(image, **limit)
    if source is None:
        return load_bytes((1, height, width))
    loaded = (3 if source.color else 1, height, width)
    estimate = estimate_memory(source, loaded, Style(scope="pipeline", min_side=1))
    return estimate.load + copies * max(estimate.stages)
