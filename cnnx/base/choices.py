"""The named choices that options take, and their defaults, stated once: the core checks against them, the command
lists them.

Each is a ``StrEnum``, so a member is its own name as a string; this module
imports nothing heavy, so the command can build its help without numpy.
"""

import os
from enum import StrEnum
from pathlib import Path

from cnnx.base.errors import CnnxError


class Normalize(StrEnum):
    """How a map's values become colours: which values the two ends of the colour table stand for."""

    symmetric = "symmetric"
    minmax = "minmax"
    percentile = "percentile"
    fixed = "fixed"


class Scope(StrEnum):
    """What shares one value range: each map, each stage, a conv and the stages after it, or everything."""

    map = "map"
    stage = "stage"
    block = "block"
    pipeline = "pipeline"


class Stretch(StrEnum):
    """How far from the zero colour a value is drawn: in proportion to its magnitude, or to its square root."""

    auto = "auto"  # sqrt with the percentile range, linear with the exact ones
    sqrt = "sqrt"
    linear = "linear"


class Convention(StrEnum):
    """Cross-correlation (kernels as written, as CNNs compute) or true convolution (kernels flipped)."""

    correlation = "correlation"
    convolution = "convolution"


class PaddingMode(StrEnum):
    """What a convolution reads beyond the border, as torch's padding_mode."""

    zeros = "zeros"
    reflect = "reflect"
    replicate = "replicate"
    circular = "circular"


# The magnitude percentile that sets the default range.  Measured on photo-like scenes (tests/scenes.py): it
# clips at most 1% of a block's values; with the sqrt stretch the median map has 11-70% of its pixels in strong
# colours and the faintest 5% or more, where the exact range (symmetric, linear) drew 0.5-20% and 0.2%.
DEFAULT_PERCENTILE = 99.2

NORMALIZE = tuple(Normalize)
SCOPES = tuple(Scope)
STRETCHES = tuple(Stretch)
CONVENTIONS = tuple(Convention)
PADDING_MODES = tuple(PaddingMode)

# The pictures shipped inside the package; the photo is what `cnnx serve` shows when it is given no image.
SAMPLES = Path(__file__).parent.parent / "samples"
SAMPLE = SAMPLES / "chelsea.png"


def threads_from_environment() -> int | None:
    """The thread count ``CNNX_NUM_THREADS`` asks for, None where it is unset; anything but a positive whole number
    in ASCII digits is refused."""
    text = os.environ.get("CNNX_NUM_THREADS", "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise CnnxError(f"CNNX_NUM_THREADS must be a whole number of threads, 1 or more; got {text!r}")
    return int(text)
