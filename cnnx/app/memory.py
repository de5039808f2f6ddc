"""How much memory a run will need, from the image header and the stage shapes alone, before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnx.render.draw import PERCENTILE_SAMPLE, Style
from cnnx.render.maps import OVERVIEW_TILE, TILE

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
