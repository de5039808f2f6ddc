"""Pipeline stages, the default pipeline, and ``run()``.

A pipeline is a tuple of small frozen stages.  Each stage knows its output
shape, how it grows the receptive field, the labels of its output channels,
and how to compute its output from the previous stage's.  ``stream()`` yields
one ``StageResult`` per stage (the input first) so that a caller can write and
release each stage's maps before the next is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from cnnx import ops
from cnnx.errors import CnnxError
from cnnx.kernels import Kernel, parse_kernel

__all__ = [
    "Conv",
    "Activation",
    "Pool",
    "Stage",
    "StageResult",
    "Stats",
    "LESSON",
    "check",
    "stream",
    "run",
    "input_labels",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
Shape = tuple[int, int, int]
Pair = tuple[int, int]


def _pair(value) -> Pair:
    return (value, value) if isinstance(value, int) else tuple(value)


def _fmt_pair(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


@dataclass(frozen=True)
class Conv:
    """Convolve with a bank of 2-D kernels.

    ``combine`` says how a 2-D kernel meets a multi-channel input: "average"
    applies it to every channel and averages (one output per kernel, like a
    CNN filter spanning all channels); "depthwise" keeps one output per input
    channel and kernel.
    """

    kernels: tuple[Kernel, ...]
    combine: str = "average"
    stride: int = 1
    padding: int | str = "same"
    padding_mode: str = "zeros"
    dilation: int = 1

    name = "conv"

    def __post_init__(self):
        if not self.kernels:
            raise CnnxError("conv: give at least one kernel")
        if self.combine not in ("average", "depthwise"):
            raise CnnxError(f"conv: combine must be 'average' or 'depthwise'; got {self.combine!r}")
        if self.padding_mode not in PADDING_MODES:
            raise CnnxError(f"conv: padding mode must be one of {', '.join(PADDING_MODES)}; got {self.padding_mode!r}")

    @classmethod
    def of(cls, *specs: str, **options) -> "Conv":
        """A conv stage from kernel specs: ``Conv.of("sobel_x", "gaussian:sigma=2")``."""
        return cls(tuple(parse_kernel(s) for s in specs), **options)

    def describe(self) -> str:
        sizes = "/".join(sorted({"x".join(map(str, k.weights.shape)) for k in self.kernels}))
        words = ["conv", sizes, self.padding if isinstance(self.padding, str) else f"pad {self.padding}"]
        words += [f"{key} {value}" for key, value in (("stride", self.stride), ("dilation", self.dilation)) if value != 1]
        words += [self.padding_mode] if self.padding_mode != "zeros" else []
        words += ["depthwise"] if self.combine == "depthwise" else []
        return f"{' '.join(words)}: {', '.join(k.label for k in self.kernels)}"

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        if self.combine == "average" or len(inputs) == 1:
            return tuple(k.label for k in self.kernels)
        return tuple(f"{c}>{k.label}" for c in inputs for k in self.kernels)

    def _span(self, kernel: Kernel) -> Pair:
        return tuple(self.dilation * (n - 1) + 1 for n in kernel.weights.shape)

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        channels = len(self.kernels) * (C if self.combine == "depthwise" else 1)
        sizes = set()
        for kernel in self.kernels:
            if self.padding == "same":
                sizes.add((H, W))
                continue
            pad = 0 if self.padding == "valid" else self.padding
            span = self._span(kernel)
            if span[0] > H + 2 * pad or span[1] > W + 2 * pad:
                raise CnnxError(
                    f"{self.describe()}: kernel {kernel.label} spans {span[0]}x{span[1]}, "
                    f"larger than the padded {H + 2 * pad}x{W + 2 * pad} input"
                )
            sizes.add(tuple((n + 2 * pad - s) // self.stride + 1 for n, s in zip((H, W), span)))
        if len(sizes) > 1:
            raise CnnxError(f"{self.describe()}: kernels of different sizes need padding='same'")
        return (channels, *sizes.pop())

    def receptive(self, field: Pair, jump: Pair) -> tuple[Pair, Pair]:
        spans = np.max([self._span(k) for k in self.kernels], axis=0)
        return (
            tuple(int(f + (s - 1) * j) for f, s, j in zip(field, spans, jump)),
            tuple(j * self.stride for j in jump),
        )

    def apply(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._apply(x)
        except ValueError as error:  # an op refused the input, e.g. reflect padding wider than the image
            raise CnnxError(f"{self.describe()}: {error}") from None

    def _apply(self, x: np.ndarray) -> np.ndarray:
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode)
        if self.padding == "same" and self.stride != 1:
            raise CnnxError(f"{self.describe()}: padding='same' needs stride 1")
        if self.combine == "average":
            # Averaging the channels first is the same linear map, done once instead of per kernel.
            x = x.mean(axis=0, keepdims=True, dtype=np.float32) if x.shape[0] > 1 else x
            return np.concatenate([ops.conv2d(x, k.weights[None, None], **options) for k in self.kernels])
        C = x.shape[0]
        per_kernel = [
            ops.conv2d(x, np.broadcast_to(k.weights, (C, 1, *k.weights.shape)), groups=C, **options)
            for k in self.kernels
        ]
        return np.stack(per_kernel, axis=1).reshape(-1, *per_kernel[0].shape[1:])


ACTIVATIONS = {
    "relu": ops.relu,
    "leaky_relu": ops.leaky_relu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
}


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: relu, leaky_relu (with ``slope``), sigmoid or tanh."""

    function: str = "relu"
    slope: float = 0.01

    def __post_init__(self):
        if self.function not in ACTIVATIONS:
            raise CnnxError(f"unknown activation {self.function!r}; choose from {', '.join(ACTIVATIONS)}")

    @property
    def name(self) -> str:
        return self.function

    def describe(self) -> str:
        return f"leaky_relu slope {self.slope:g}" if self.function == "leaky_relu" else self.function

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return inputs

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def receptive(self, field: Pair, jump: Pair) -> tuple[Pair, Pair]:
        return field, jump

    def apply(self, x: np.ndarray) -> np.ndarray:
        # The previous stage's array is still written out, so work on a copy.
        y = x.copy()
        if self.function == "leaky_relu":
            return ops.leaky_relu(y, self.slope, inplace=True)
        return ACTIVATIONS[self.function](y, inplace=True)


@dataclass(frozen=True)
class Pool:
    """Max or average pooling over ``size`` x ``size`` windows; ``stride`` defaults to ``size``."""

    kind: str = "max"
    size: int = 2
    stride: int | None = None
    padding: int = 0

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise CnnxError(f"pool: kind must be 'max' or 'avg'; got {self.kind!r}")

    @property
    def name(self) -> str:
        return f"{self.kind}pool"

    @property
    def step(self) -> int:
        return self.stride or self.size

    def describe(self) -> str:
        extras = "".join(f", {k} {v}" for k, v in (("stride", self.stride), ("padding", self.padding)) if v)
        return f"{self.name} {self.size}x{self.size}{extras}"

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return inputs

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        if self.padding > self.size // 2:
            raise CnnxError(f"{self.describe()}: padding may be at most half the window, {self.size // 2}")
        size = [ops.pool_output_size(n, self.size, stride=self.step, padding=self.padding) for n in (H, W)]
        if min(size) < 1:
            raise CnnxError(f"{self.describe()}: the {H}x{W} input is smaller than the {self.size}x{self.size} window")
        return (C, *size)

    def receptive(self, field: Pair, jump: Pair) -> tuple[Pair, Pair]:
        return tuple(f + (self.size - 1) * j for f, j in zip(field, jump)), tuple(j * self.step for j in jump)

    def apply(self, x: np.ndarray) -> np.ndarray:
        pool = ops.max_pool2d if self.kind == "max" else ops.avg_pool2d
        return pool(x, self.size, self.step, self.padding)


Stage = Conv | Activation | Pool

# The lesson's flow, twice round.  Round 1 finds edges in four directions
# (the lesson's vertical-edge filter and its turns by 45, 90 and 135 degrees).
# Round 2 looks at each direction's map with a centre-surround filter, which
# answers where edges of that direction crowd together more than around them:
# a pattern several times larger than one edge.  The border repeats the edge
# pixels, so the frame of the photo does not show up as an edge of its own.
LESSON: tuple[Stage, ...] = (
    Conv.of("vertical_edge", "horizontal_edge", "diagonal_edge", "antidiagonal_edge", padding_mode="replicate"),
    Activation("relu"),
    Pool("max", 2),
    Conv.of("dog:sigma=1", combine="depthwise", padding_mode="replicate"),
    Activation("relu"),
    Pool("max", 2),
)


@dataclass(frozen=True)
class Stats:
    """Summary statistics of a feature map, for the table and the manifest."""

    min: float
    mean: float
    max: float
    zeros: float  # fraction of exact zeros

    @classmethod
    def of(cls, array: np.ndarray) -> "Stats":
        return cls(
            float(array.min()),
            float(array.mean(dtype=np.float64)),
            float(array.max()),
            float(np.count_nonzero(array == 0) / array.size),
        )


@dataclass(frozen=True)
class StageResult:
    """One stage's output and what is known about it."""

    index: int
    name: str
    description: str
    array: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    seconds: float
    receptive_field: Pair
    jump: Pair
    stats: Stats

    @property
    def shape(self) -> Shape:
        return self.array.shape


def input_labels(channels: int) -> tuple[str, ...]:
    """Names of the input channels: gray, or red, green, blue."""
    return ("gray",) if channels == 1 else ("red", "green", "blue", "alpha")[:channels]


def check(stages: tuple[Stage, ...], shape: Shape) -> list[Shape]:
    """Every stage's output shape for an input of ``shape``; an error names the first stage that cannot run."""
    shapes = []
    for index, stage in enumerate(stages, 1):
        try:
            shape = stage.output_shape(shape)
        except CnnxError as error:
            raise CnnxError(f"stage {index}, {error}") from None
        shapes.append(shape)
    return shapes


def stream(image: np.ndarray, stages: tuple[Stage, ...]) -> Iterator[StageResult]:
    """Run ``stages`` on a (C, H, W) image, yielding the input and then each stage's result."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise CnnxError(f"the image must be a (C, H, W) array; got shape {image.shape}")
    check(stages, image.shape)
    labels = input_labels(image.shape[0])
    field, jump = (1, 1), (1, 1)
    current = StageResult(0, "input", "input", image, labels, 0.0, field, jump, Stats.of(image))
    yield current
    for index, stage in enumerate(stages, 1):
        start = time.perf_counter()
        array = stage.apply(current.array)
        seconds = time.perf_counter() - start
        field, jump = stage.receptive(field, jump)
        labels = stage.labels(labels)
        current = StageResult(index, stage.name, stage.describe(), array, labels, seconds, field, jump, Stats.of(array))
        yield current


def run(image: np.ndarray, stages: tuple[Stage, ...] = LESSON) -> list[StageResult]:
    """Run ``stages`` on a (C, H, W) image; one ``StageResult`` per stage, the input first."""
    return list(stream(image, stages))
