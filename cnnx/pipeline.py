"""Pipeline stages, the default pipeline, and ``run()``.

A pipeline is a tuple of small frozen stages plus two settings: colour
(grey or RGB input) and convention (cross-correlation, or true convolution
with the kernels flipped).  Each stage knows its output shape, how it grows
the receptive field, the labels of its output channels, its spec text and
TOML table, and how to compute its output from the previous stage's.
``stream()`` yields one ``StageResult`` per stage (the input first) so that a
caller can write and release each stage's maps before the next is computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace

import numpy as np

from cnnx import ops, runtime
from cnnx.errors import CnnxError
from cnnx.kernels import RandomBank, WeightBank, parse_dense, parse_filters

__all__ = [
    "LESSON",
    "Activation",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Pipeline",
    "Pool",
    "Softmax",
    "Stage",
    "StageResult",
    "Stats",
    "check",
    "input_labels",
    "run",
    "stream",
]

PADDING_MODES = ops.PADDING_MODES
COMBINES = ("average", "depthwise")
CONVENTIONS = ("correlation", "convolution")
Shape = tuple[int, int, int]
Pair = tuple[int, int]


def _changed(stage, skip: tuple[str, ...]) -> dict:
    """The fields of ``stage`` that differ from their defaults (a field with no default always counts)."""
    return {
        f.name: getattr(stage, f.name)
        for f in fields(stage)
        if f.name not in skip and getattr(stage, f.name) != f.default
    }


def _options_text(stage, skip: tuple[str, ...] = ()) -> list[str]:
    """``key=value`` for every option of ``stage`` that differs from its default."""
    return [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in _changed(stage, skip).items()]


def _table(stage, op: str, skip: tuple[str, ...] = ()) -> dict:
    """The stage as a TOML table: its op and every field that differs from its default."""
    return {"op": op, **{k: list(v) if isinstance(v, tuple) else v for k, v in _changed(stage, skip).items()}}


class _StageBasics:
    """What most stages share: the spec is the name, and labels and the receptive field pass through unchanged."""

    name: str

    def to_spec(self) -> str:
        return self.name

    def to_table(self) -> dict:
        return {"op": self.name}

    def describe(self) -> str:
        return self.to_spec()

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return inputs

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        return rf, jump


def _as_row(shape: Shape) -> Shape:
    """All values in one row: (C, H, W) -> (1, 1, C*H*W)."""
    return (1, 1, shape[0] * shape[1] * shape[2])


@dataclass(frozen=True)
class Conv:
    """Convolve with filters given as specs: 2-D kernels (with rotations), ``random:N``, or (out, in, kH, kW) files.

    ``combine`` says how a 2-D kernel meets a multi-channel input: "average"
    applies it to every channel and averages (one output per kernel, like a
    CNN filter spanning all channels); "depthwise" keeps one output per input
    channel and kernel.  Random filters follow the same rule; filters from a
    file span all channels, as the file says.  ``bias`` is added to every
    output; ``seed`` draws the random filters (He initialisation).
    """

    filters: tuple[str, ...]
    padding: int | str = "same"
    padding_mode: str = "zeros"
    stride: int = 1
    dilation: int = 1
    combine: str = "average"
    bias: float = 0.0
    seed: int = 0
    sources: tuple = field(init=False, repr=False, compare=False)

    name = "conv"

    def __post_init__(self):
        if not self.filters:
            raise CnnxError("conv: give at least one filter")
        # Parse every filter now, so a bad one is reported before any work; keep their canonical spellings.
        sources = tuple(parse_filters(spec) for spec in self.filters)
        for source in sources:
            if isinstance(source, WeightBank) and source.weights.ndim != 4:
                raise CnnxError(f"conv: {source.spec} holds weights of shape {source.weights.shape}; "
                                "a conv needs (out, in, kH, kW) (use dense(...) for a fully connected layer)")
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "filters", tuple(s[0].spec if isinstance(s, tuple) else s.spec for s in sources))
        if self.combine not in COMBINES:
            raise CnnxError(f"conv: combine must be {' or '.join(COMBINES)}; got {self.combine!r}")
        if self.padding_mode not in PADDING_MODES:
            raise CnnxError(f"conv: padding_mode must be one of {', '.join(PADDING_MODES)}; got {self.padding_mode!r}")
        if not (self.padding in ("same", "valid") or (isinstance(self.padding, int) and self.padding >= 0)):
            raise CnnxError(f"conv: padding must be 'same', 'valid' or a whole number >= 0; got {self.padding!r}")
        for key in ("stride", "dilation"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise CnnxError(f"conv: {key} must be a whole number >= 1; got {getattr(self, key)!r}")
        if self.padding == "same" and self.stride != 1:
            raise CnnxError("conv: padding=same needs stride 1")

    @classmethod
    def of(cls, *filters: str, **options) -> Conv:
        """A conv stage from filter specs: ``Conv.of("sobel_x", "gaussian:sigma=2", padding=0)``."""
        return cls(tuple(filters), **options)

    def to_spec(self) -> str:
        options = _options_text(self, skip=("filters", "sources"))
        return f"conv({', '.join(self.filters)}{'; ' + ', '.join(options) if options else ''})"

    def to_table(self) -> dict:
        return _table(self, "conv", skip=("sources",))

    def describe(self) -> str:
        return self.to_spec()

    def _spans(self, channels: int) -> list[Pair]:
        spans = []
        for source in self.sources:
            if isinstance(source, RandomBank):
                shapes = [(source.size, source.size)]
            elif isinstance(source, WeightBank):
                if source.weights.shape[1] != channels:
                    raise CnnxError(
                        f"{self.to_spec()}: {source.spec} has filters for {source.weights.shape[1]} input channels; "
                        f"this stage gets {channels}"
                    )
                shapes = [source.weights.shape[2:]]
            else:
                shapes = [k.weights.shape for k in source]
            spans += [(self.dilation * (h - 1) + 1, self.dilation * (w - 1) + 1) for h, w in shapes]
        return spans

    def _count(self, source, channels: int) -> int:
        if isinstance(source, WeightBank):
            return source.weights.shape[0]
        per_channel = channels if self.combine == "depthwise" else 1
        return per_channel * (source.count if isinstance(source, RandomBank) else len(source))

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        channels = sum(self._count(source, C) for source in self.sources)
        spans = self._spans(C)
        self._check_border(spans, H, W)
        if self.padding == "same":
            return (channels, H, W)
        pad = 0 if self.padding == "valid" else self.padding
        sizes = set()
        for span in spans:
            if span[0] > H + 2 * pad or span[1] > W + 2 * pad:
                raise CnnxError(
                    f"{self.to_spec()}: a filter spans {span[0]}x{span[1]}, larger than the padded "
                    f"{H + 2 * pad}x{W + 2 * pad} input"
                )
            sizes.add(tuple((n + 2 * pad - s) // self.stride + 1 for n, s in zip((H, W), span)))
        if len(sizes) > 1:
            raise CnnxError(f"{self.to_spec()}: filters of different sizes need padding=same")
        return (channels, *sizes.pop())

    def _check_border(self, spans: list[Pair], H: int, W: int) -> None:
        """torch's limits on a border: reflect mirrors once (padding < size), circular wraps once (<= size)."""
        if self.padding_mode not in ("reflect", "circular"):
            return
        limit = (H, W) if self.padding_mode == "reflect" else (H + 1, W + 1)
        for span in spans:
            # The wider side: "same" puts an odd pixel after, s // 2 in all.
            pads = [s // 2 if self.padding == "same" else 0 if self.padding == "valid" else self.padding for s in span]
            if pads[0] >= limit[0] or pads[1] >= limit[1]:
                raise CnnxError(
                    f"{self.to_spec()}: padding_mode={self.padding_mode} cannot pad the {H}x{W} input "
                    f"by {max(pads)} pixels; use zeros or replicate"
                )

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        spans = np.max(self._spans(shape[0]), axis=0)
        return (
            tuple(int(f + (s - 1) * j) for f, s, j in zip(rf, spans, jump)),
            tuple(j * self.stride for j in jump),
        )

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        labels: list[str] = []
        for source in self.sources:
            if isinstance(source, WeightBank):
                labels += [f"{source.label}{o}" for o in range(source.weights.shape[0])]
                continue
            names = [f"random{n}" for n in range(source.count)] if isinstance(source, RandomBank) else [
                k.label for k in source
            ]
            depthwise = self.combine == "depthwise" and len(inputs) > 1
            labels += [f"{c}>{n}" for c in inputs for n in names] if depthwise else names
        return tuple(labels)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        try:
            return self._apply(x, flip)
        except ValueError as error:
            if isinstance(error, CnnxError):
                raise
            raise CnnxError(f"{self.to_spec()}: {error}") from None  # e.g. reflect padding wider than the image

    def _apply(self, x: np.ndarray, flip: bool) -> np.ndarray:
        """Each filter source's maps, written one after another into one output array (no copies to join them)."""
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode)
        C = x.shape[0]
        out = np.empty(self.output_shape(x.shape), np.float32)
        rng = np.random.default_rng(self.seed) if any(isinstance(s, RandomBank) for s in self.sources) else None
        mean = None
        at = 0
        for source in self.sources:
            count = self._count(source, C)
            part = out[at : at + count]
            at += count
            if isinstance(source, WeightBank):
                ops.conv2d(x, _flipped(source.weights, flip), source.bias, **options, out=part)
            elif isinstance(source, RandomBank):
                k = source.size
                fan_in = k * k * (1 if self.combine == "depthwise" else C)
                shape = (C * source.count, 1, k, k) if self.combine == "depthwise" else (source.count, C, k, k)
                weights = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
                ops.conv2d(x, weights, groups=C if self.combine == "depthwise" else 1, **options, out=part)
            elif self.combine == "average":
                # Averaging the channels first is the same linear map, done once instead of per kernel.
                if mean is None:
                    mean = x.mean(axis=0, keepdims=True, dtype=np.float32) if C > 1 else x
                for k, kernel in enumerate(source):
                    ops.conv2d(mean, _flipped(kernel.weights, flip)[None, None], **options, out=part[k : k + 1])
            else:
                by_channel = part.reshape(C, len(source), *out.shape[1:])  # channel-major, as torch's groups
                for k, kernel in enumerate(source):
                    weights = np.broadcast_to(_flipped(kernel.weights, flip), (C, 1, *kernel.weights.shape))
                    by_channel[:, k] = ops.conv2d(x, weights, groups=C, **options)
        if self.bias:
            out += np.float32(self.bias)
        return out


def _flipped(weights: np.ndarray, flip: bool) -> np.ndarray:
    """The kernel turned by 180 degrees for true convolution, as scipy.ndimage.convolve does."""
    return np.ascontiguousarray(weights[..., ::-1, ::-1]) if flip else weights


ACTIVATIONS = {
    "relu": ops.relu,
    "leaky_relu": ops.leaky_relu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "abs": ops.absolute,
}


@dataclass(frozen=True)
class Activation(_StageBasics):
    """An elementwise activation: relu, leaky_relu (with ``slope``), sigmoid, tanh or abs."""

    function: str = "relu"
    slope: float = 0.01

    def __post_init__(self):
        if self.function not in ACTIVATIONS:
            raise CnnxError(f"unknown activation {self.function!r}; choose from {', '.join(ACTIVATIONS)}")

    @property
    def name(self) -> str:
        return self.function

    def to_spec(self) -> str:
        return f"leaky_relu({self.slope:g})" if self.function == "leaky_relu" else self.function

    def to_table(self) -> dict:
        return {"op": self.function, **({"slope": self.slope} if self.function == "leaky_relu" else {})}

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def apply(self, x: np.ndarray, *, flip: bool = False, inplace: bool = False) -> np.ndarray:
        if self.function == "leaky_relu":
            return ops.leaky_relu(x, self.slope, inplace=inplace)
        return ACTIVATIONS[self.function](x, inplace=inplace)


@dataclass(frozen=True)
class Pool(_StageBasics):
    """Max or average pooling over ``size`` x ``size`` windows; ``stride`` defaults to ``size``."""

    kind: str = "max"
    size: int = 2
    stride: int | None = None
    padding: int = 0

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise CnnxError(f"pool: kind must be 'max' or 'avg'; got {self.kind!r}")
        for key, low in (("size", 1), ("stride", 1), ("padding", 0)):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise CnnxError(f"{self.name}: {key} must be a whole number >= {low}; got {value!r}")
        if self.padding > self.size // 2:
            raise CnnxError(f"{self.name}: padding may be at most half the window, {self.size // 2}; got {self.padding}")

    @property
    def name(self) -> str:
        return f"{self.kind}pool"

    @property
    def step(self) -> int:
        return self.stride or self.size

    def to_spec(self) -> str:
        extras = "".join(f", {k}={v}" for k, v in (("stride", self.stride), ("padding", self.padding)) if v)
        return f"{self.name}({self.size}{extras})"

    def to_table(self) -> dict:
        return _table(self, self.name, skip=("kind",))

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        size = [ops.pool_output_size(n, self.size, stride=self.step, padding=self.padding) for n in (H, W)]
        if min(size) < 1:
            raise CnnxError(f"{self.to_spec()}: the {H}x{W} input is smaller than the {self.size}x{self.size} window")
        return (C, *size)

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        return tuple(f + (self.size - 1) * j for f, j in zip(rf, jump)), tuple(j * self.step for j in jump)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        pool = ops.max_pool2d if self.kind == "max" else ops.avg_pool2d
        return pool(x, self.size, self.step, self.padding)


@dataclass(frozen=True)
class GlobalAvgPool(_StageBasics):
    """The mean of each channel: a (C, 1, 1) output that sees the whole input."""

    name = "global_avgpool"

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[0], 1, 1)

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        # One window as large as its input: it sees everything the input's pixels see.
        return tuple(f + (n - 1) * j for f, n, j in zip(rf, shape[1:], jump)), tuple(j * n for j, n in zip(jump, shape[1:]))

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return x.mean(axis=(1, 2), dtype=np.float64, keepdims=True).astype(np.float32)


@dataclass(frozen=True)
class Flatten(_StageBasics):
    """All values of the maps in one row, (C, H, W) -> (1, 1, C*H*W), channel by channel: the input of a dense layer."""

    name = "flatten"

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return ("features",)

    def output_shape(self, shape: Shape) -> Shape:
        return _as_row(shape)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return np.ascontiguousarray(x).reshape(1, 1, -1)


@dataclass(frozen=True)
class Dense(_StageBasics):
    """A fully connected layer: every output a weighted sum of all inputs, plus a bias (``ops.linear``)."""

    weights: str
    source: WeightBank = field(init=False, repr=False, compare=False)

    name = "dense"

    def __post_init__(self):
        source = parse_dense(self.weights)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "weights", source.spec)

    def to_spec(self) -> str:
        return f"dense({self.weights})"

    def to_table(self) -> dict:
        return {"op": self.name, "weights": self.weights}

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return ("outputs",)

    def output_shape(self, shape: Shape) -> Shape:
        size = shape[0] * shape[1] * shape[2]
        if size != self.source.weights.shape[1]:
            raise CnnxError(f"{self.to_spec()}: takes {self.source.weights.shape[1]} inputs; the stage before gives {size}")
        return (1, 1, self.source.weights.shape[0])

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        # Each output weighs every input: receptive_fields() widens the field to the whole image.
        return ops.linear(x.reshape(1, -1), self.source.weights, self.source.bias).reshape(1, 1, -1)


@dataclass(frozen=True)
class Softmax(_StageBasics):
    """Probabilities from scores: ``exp(x) / sum(exp(x))`` over all values of its input (``ops.softmax``)."""

    name = "softmax"

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return ("probabilities",)

    def output_shape(self, shape: Shape) -> Shape:
        return _as_row(shape)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return ops.softmax(x.reshape(-1)).reshape(1, 1, -1)


Stage = Conv | Activation | Pool | GlobalAvgPool | Flatten | Dense | Softmax


@dataclass(frozen=True)
class Pipeline:
    """Stages and the settings they run under."""

    stages: tuple[Stage, ...]
    color: bool = False
    convention: str = "correlation"

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise CnnxError("a pipeline needs at least one stage")
        if self.convention not in CONVENTIONS:
            raise CnnxError(f"convention must be {' or '.join(CONVENTIONS)}; got {self.convention!r}")

    def to_spec(self) -> str:
        """The stages in the spec language (colour and convention are options of their own)."""
        return " -> ".join(stage.to_spec() for stage in self.stages)

    @property
    def convention_text(self) -> str:
        return "true convolution (kernels flipped)" if self.convention == "convolution" else (
            "cross-correlation (kernels not flipped)"
        )


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
    Conv.of("dog:sigma=1", padding_mode="replicate", combine="depthwise"),
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
    def of(cls, array: np.ndarray) -> Stats:
        """Bands of rows the size of the ops' strips, on their threads; each summed pairwise, in a fixed order."""
        rows = array.reshape(-1, array.shape[-1])
        bands = runtime.strips(rows.shape[0], rows.shape[1] * rows.itemsize)
        parts: list = [None] * len(bands)

        def work(k: int, scratch: dict) -> None:
            band = rows[bands[k][0] : bands[k][1]]
            parts[k] = (band.min(), band.max(), float(band.sum()), np.count_nonzero(band == 0))

        runtime.run_tasks(list(range(len(bands))), work)
        low, high, total, zeros = zip(*parts)
        return cls(float(np.min(low)), float(np.sum(total)) / array.size, float(np.max(high)), sum(zeros) / array.size)


@dataclass(frozen=True)
class StageResult:
    """One stage's output and what is known about it."""

    index: int
    name: str
    description: str
    array: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    seconds: float  # computing the stage and its statistics
    receptive_field: Pair
    jump: Pair
    stats: Stats
    shape: Shape

    def released(self) -> StageResult:
        """The same record without its array, once the maps are written, so memory stays bounded."""
        return replace(self, array=None)


def input_labels(channels: int) -> tuple[str, ...]:
    """Names of the input channels: gray, or red, green, blue."""
    return ("gray",) if channels == 1 else ("red", "green", "blue", "alpha")[:channels]


def check(stages: tuple[Stage, ...], shape: Shape) -> list[Shape]:
    """Every stage's output shape for an input of ``shape``; an error names the first stage that cannot run."""
    shapes = []
    for index, stage in enumerate(stages, 1):
        try:
            if isinstance(stage, Conv):
                stage._spans(shape[0])  # filters from a file must match the channels they meet
            shape = stage.output_shape(shape)
        except CnnxError as error:
            raise CnnxError(f"stage {index}, {error}") from None
        shapes.append(shape)
    return shapes


def receptive_fields(stages: tuple[Stage, ...], shape: Shape) -> list[tuple[Pair, Pair]]:
    """(receptive field, jump) after each stage, in input pixels (Araujo et al., Distill 2019, eq. 1-2)."""
    rf, jump, out = (1, 1), (1, 1), []
    for stage, before in zip(stages, [shape, *check(stages, shape)]):
        rf, jump = stage.receptive(rf, jump, before)
        if isinstance(stage, Dense):  # each output weighs every input: it sees the whole image
            rf = (max(rf[0], shape[1]), max(rf[1], shape[2]))
        out.append((rf, jump))
    return out


def stream(image: np.ndarray, stages: tuple[Stage, ...] | Pipeline, *, reuse: bool = False) -> Iterator[StageResult]:
    """Run a pipeline on a (C, H, W) image, yielding the input and then each stage's result.

    With ``reuse`` the caller is done with each result's array before it asks
    for the next, so an activation overwrites the stage before it instead of
    taking new memory (the image itself is never overwritten).
    """
    pipeline = stages if isinstance(stages, Pipeline) else Pipeline(tuple(stages))
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise CnnxError(f"the image must be a (C, H, W) array; got shape {image.shape}")
    fields_ = receptive_fields(pipeline.stages, image.shape)
    labels = input_labels(image.shape[0])
    current = StageResult(0, "input", "input", image, labels, 0.0, (1, 1), (1, 1), Stats.of(image), image.shape)
    del image  # held by the input's result alone, so it goes once the first stage has read it and the caller moved on
    yield current
    flip = pipeline.convention == "convolution"
    for index, (stage, (rf, jump)) in enumerate(zip(pipeline.stages, fields_), 1):
        start = time.perf_counter()
        if reuse and index > 1 and isinstance(stage, Activation):
            array = stage.apply(current.array, inplace=True)
        else:
            array = stage.apply(current.array, flip=flip)
        stats = Stats.of(array)
        labels = stage.labels(labels)
        current = StageResult(
            index, stage.name, stage.describe(), array, labels, time.perf_counter() - start, rf, jump, stats, array.shape
        )
        yield current


def run(image: np.ndarray, stages: tuple[Stage, ...] | Pipeline = LESSON) -> list[StageResult]:
    """Run a pipeline on a (C, H, W) image; one ``StageResult`` per stage, the input first."""
    return list(stream(image, stages))
