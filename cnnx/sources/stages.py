"""The kinds of stage a chain pipeline is made of, and the pipeline itself as data.

Each stage is a small frozen dataclass whose fields are its options: the
spec language and TOML files (``spec.py``) read and print them from these
fields, so an option is declared once, here.  A stage knows its output
shape, how it grows the receptive field, the labels of its output channels,
what memory its op needs beyond its input and output, how to compute
its output from the previous stage's, and how to take a gradient of its
output back to its input (the reverse pass).
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields

import numpy as np

from cnnx.base.choices import CONVENTIONS, PADDING_MODES
from cnnx.base.errors import CnnxError
from cnnx.compute import grad as reverse
from cnnx.compute import ops
from cnnx.sources.kernels import RandomBank, WeightBank, parse_dense, parse_filters

__all__ = [
    "KINDS",
    "LESSON",
    "Activation",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Kind",
    "Pipeline",
    "Pool",
    "Softmax",
    "Stage",
]

COMBINES = ("average", "depthwise")
Shape = tuple[int, int, int]
Pair = tuple[int, int]
MAX_STAGES = 256  # every stage becomes a folder, a montage and a column of the overview


def _option(default, *, low: int | None = None):
    """A stage option with its default and, for a whole number, the least value it may take."""
    return field(default=default, metadata={} if low is None else {"low": low})


def _check_whole_numbers(stage) -> None:
    """Every whole-number option at or above its least value (an option of another type, e.g. 'same', is skipped)."""
    for f in fields(stage):
        low, value = f.metadata.get("low"), getattr(stage, f.name)
        if low is None or value is None or isinstance(value, str):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise CnnxError(f"{stage.name}: {f.name} must be a whole number >= {low}; got {value!r}")


class _StageBasics:
    """What most stages share: labels and the receptive field pass through, the op needs no memory of its own."""

    name: str
    in_place = False  # whether the op may overwrite its input instead of taking new memory
    sees_everything = False  # whether each output weighs every input pixel (a fully connected layer)

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return inputs

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        return rf, jump

    def workspace(self, shape: Shape) -> int:
        return 0


def _as_row(shape: Shape) -> Shape:
    """All values in one row: (C, H, W) -> (1, 1, C*H*W)."""
    return (1, 1, shape[0] * shape[1] * shape[2])


@dataclass(frozen=True)
class Conv(_StageBasics):
    """Convolve with filters given as specs: 2-D kernels (with rotations), ``random:N``, or (out, in, kH, kW) files.

    ``combine`` says how a 2-D kernel meets a multi-channel input: "average"
    applies it to every channel and averages (one output per kernel, like a
    CNN filter spanning all channels); "depthwise" keeps one output per input
    channel and kernel.  Random filters follow the same rule; filters from a
    file span all channels, as the file says.  ``bias`` is added to every
    output; ``seed`` draws the random filters (He initialisation).
    """

    filters: tuple[str, ...]
    padding: int | str = _option("same", low=0)
    padding_mode: str = "zeros"
    stride: int = _option(1, low=1)
    dilation: int = _option(1, low=1)
    combine: str = "average"
    bias: float = 0.0
    seed: int = _option(0, low=0)
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
        if isinstance(self.padding, str) and self.padding not in ("same", "valid"):
            raise CnnxError(f"conv: padding must be 'same', 'valid' or a whole number >= 0; got {self.padding!r}")
        _check_whole_numbers(self)
        if not np.isfinite(self.bias):
            raise CnnxError(f"conv: bias must be a finite number; got {self.bias!r}")
        if self.padding == "same" and self.stride != 1:
            raise CnnxError("conv: padding=same needs stride 1")

    @classmethod
    def of(cls, *filters: str, **options) -> Conv:
        """A conv stage from filter specs: ``Conv.of("sobel_x", "gaussian:sigma=2", padding=0)``."""
        return cls(tuple(filters), **options)

    def kernel_shapes(self, channels: int) -> list[Pair]:
        """The (kH, kW) of every filter, for an input of ``channels``; a file's filters must match the channels."""
        shapes: list[Pair] = []
        for source in self.sources:
            if isinstance(source, RandomBank):
                shapes.append((source.size, source.size))
            elif isinstance(source, WeightBank):
                if source.weights.shape[1] != channels:
                    raise CnnxError(
                        f"{source.spec} has filters for {source.weights.shape[1]} input channels; "
                        f"this stage gets {channels}"
                    )
                shapes.append(source.weights.shape[2:])
            else:
                shapes += [k.weights.shape for k in source]
        return shapes

    def _spans(self, channels: int) -> list[Pair]:
        """The input pixels each filter spans, dilation included."""
        return [(self.dilation * (h - 1) + 1, self.dilation * (w - 1) + 1) for h, w in self.kernel_shapes(channels)]

    def outputs_of(self, source, channels: int) -> int:
        if isinstance(source, WeightBank):
            return source.weights.shape[0]
        per_channel = channels if self.combine == "depthwise" else 1
        return per_channel * (source.count if isinstance(source, RandomBank) else len(source))

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        channels = sum(self.outputs_of(source, C) for source in self.sources)
        sizes = set()
        for kh, kw in self.kernel_shapes(C):
            rows, cols = ops.conv_padding(self.padding, (kh, kw), (self.dilation,) * 2, (self.stride,) * 2)
            span = (self.dilation * (kh - 1) + 1, self.dilation * (kw - 1) + 1)
            padded = (H + sum(rows), W + sum(cols))
            if span[0] > padded[0] or span[1] > padded[1]:
                raise CnnxError(
                    f"a filter spans {span[0]}x{span[1]}, larger than the padded {padded[0]}x{padded[1]} input"
                )
            try:
                ops.check_border(self.padding_mode, rows, cols, H, W)
            except ValueError:
                raise CnnxError(
                    f"padding_mode={self.padding_mode} cannot pad the {H}x{W} input by {max(*rows, *cols)} pixels; "
                    "use zeros or replicate"
                ) from None
            sizes.add(tuple((n - s) // self.stride + 1 for n, s in zip(padded, span, strict=True)))
        if len(sizes) > 1:
            raise CnnxError("filters of different sizes need padding=same")
        return (channels, *sizes.pop())

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        spans = np.max(self._spans(shape[0]), axis=0)
        return (
            tuple(int(f + (s - 1) * j) for f, s, j in zip(rf, spans, jump, strict=True)),
            tuple(j * self.stride for j in jump),
        )

    def workspace(self, shape: Shape) -> int:
        """The largest scratch of its convolutions, and the copies it makes beside them.

        Those are the channels' mean (averaged filters) and a named filter's
        maps over every channel before they are interleaved (depthwise).
        """
        C, H, W = shape
        out = self.output_shape(shape)
        plane = 4 * out[1] * out[2]
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation)
        scratch = []
        for source, (kh, kw) in zip(self.sources, self._source_kernels(C), strict=True):
            if isinstance(source, WeightBank):
                scratch.append(ops.conv2d_scratch(shape, source.weights.shape, **options))
            elif self.combine == "depthwise":
                count = source.count if isinstance(source, RandomBank) else 1
                extra = 0 if isinstance(source, RandomBank) else C * plane
                scratch.append(ops.conv2d_scratch(shape, (C * count, 1, kh, kw), groups=C, **options) + extra)
            else:
                count = source.count if isinstance(source, RandomBank) else 1
                inputs = C if isinstance(source, RandomBank) else 1
                mean = plane if C > 1 and not isinstance(source, RandomBank) else 0
                scratch.append(ops.conv2d_scratch((inputs, H, W), (count, inputs, kh, kw), **options) + mean)
        return max(scratch)

    def _source_kernels(self, channels: int) -> list[Pair]:
        """The largest (kH, kW) of each filter source."""
        sizes = []
        for source in self.sources:
            if isinstance(source, RandomBank):
                sizes.append((source.size, source.size))
            elif isinstance(source, WeightBank):
                sizes.append(tuple(source.weights.shape[2:]))
            else:
                sizes.append(tuple(int(n) for n in np.max([k.weights.shape for k in source], axis=0)))
        return sizes

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        labels: list[str] = []
        for source in self.sources:
            if isinstance(source, WeightBank):
                labels += [f"{source.label} #{o}" for o in range(source.weights.shape[0])]
                continue
            names = (
                [f"random{n}" for n in range(source.count)]
                if isinstance(source, RandomBank)
                else [k.label for k in source]
            )
            depthwise = self.combine == "depthwise" and len(inputs) > 1
            labels += [f"{n} of {c}" for c in inputs for n in names] if depthwise else names
        return tuple(labels)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """Each filter source's maps, written one after another into one output array (no copies to join them)."""
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode)
        C = x.shape[0]
        out = np.empty(self.output_shape(x.shape), np.float32)
        rng = np.random.default_rng(self.seed) if any(isinstance(s, RandomBank) for s in self.sources) else None
        mean = None
        at = 0
        for source in self.sources:
            count = self.outputs_of(source, C)
            part = out[at : at + count]
            at += count
            if isinstance(source, WeightBank):
                ops.conv2d(x, _flipped(source.weights, flip), source.bias, **options, out=part)
            elif isinstance(source, RandomBank):
                weights = self._random_weights(source, C, rng)
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


    def _random_weights(self, source: RandomBank, C: int, rng: np.random.Generator) -> np.ndarray:
        """He-initialised kernels for ``C`` input channels, drawn from ``rng`` in the stage's order."""
        k = source.size
        fan_in = k * k * (1 if self.combine == "depthwise" else C)
        shape = (C * source.count, 1, k, k) if self.combine == "depthwise" else (source.count, C, k, k)
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def banks(self, C: int, *, flip: bool = False) -> list[tuple[np.ndarray, int]]:
        """Each filter source as the bank of kernels ``ops.conv2d`` would take for it, with its groups, in the order
        its maps are written: averaged 2-D kernels as one kernel over every channel, each weighing it by 1/C; a
        depthwise source as one kernel a channel, grouped by channel.  The stage is these banks' convolutions
        (and its bias), which is what its reverse pass goes back through."""
        rng = np.random.default_rng(self.seed) if any(isinstance(s, RandomBank) for s in self.sources) else None
        banks = []
        for source in self.sources:
            if isinstance(source, WeightBank):
                banks.append((_flipped(source.weights, flip), 1))
            elif isinstance(source, RandomBank):
                banks.append((self._random_weights(source, C, rng), C if self.combine == "depthwise" else 1))
            elif self.combine == "average":
                kernels = np.stack([_flipped(k.weights, flip) for k in source])[:, None] / np.float32(C)
                banks.append((np.ascontiguousarray(np.broadcast_to(kernels, (len(source), C, *kernels.shape[2:]))),
                              1))
            else:
                kernels = np.stack([_flipped(k.weights, flip) for k in source])
                banks.append((np.tile(kernels, (C, 1, 1))[:, None].astype(np.float32), C))
        return banks

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """The gradient with respect to the stage's input ``x``, given its output's (``grad``)."""
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, padding_mode=self.padding_mode)
        total, at = np.zeros(x.shape, np.float32), 0
        for weights, groups in self.banks(x.shape[0], flip=flip):
            part = grad[at : at + weights.shape[0]]
            at += weights.shape[0]
            total += reverse.conv2d_backward(part, x, weights, groups=groups, need_weight=False, **options)[0]
        return total


def _flipped(weights: np.ndarray, flip: bool) -> np.ndarray:
    """The kernel turned by 180 degrees for true convolution, as scipy.ndimage.convolve does."""
    return np.ascontiguousarray(weights[..., ::-1, ::-1]) if flip else weights


ACTIVATION_FUNCTIONS = {
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

    in_place = True

    def __post_init__(self):
        if self.function not in ACTIVATION_FUNCTIONS:
            raise CnnxError(f"unknown activation {self.function!r}; choose from {', '.join(ACTIVATION_FUNCTIONS)}")
        if not np.isfinite(self.slope):
            raise CnnxError(f"leaky_relu: slope must be a finite number; got {self.slope!r}")

    @property
    def name(self) -> str:
        return self.function

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def apply(self, x: np.ndarray, *, flip: bool = False, inplace: bool = False) -> np.ndarray:
        if self.function == "leaky_relu":
            return ops.leaky_relu(x, self.slope, inplace=inplace)
        return ACTIVATION_FUNCTIONS[self.function](x, inplace=inplace)

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return reverse.activation_backward(self.function, grad, x, out, slope=self.slope)


@dataclass(frozen=True)
class Pool(_StageBasics):
    """Max or average pooling over ``size`` x ``size`` windows; ``stride`` defaults to ``size``."""

    kind: str = "max"
    size: int = _option(2, low=1)
    stride: int | None = _option(None, low=1)
    padding: int = _option(0, low=0)

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise CnnxError(f"pool: kind must be 'max' or 'avg'; got {self.kind!r}")
        _check_whole_numbers(self)
        if self.padding > self.size // 2:
            raise CnnxError(
                f"{self.name}: padding may be at most half the window, {self.size // 2}; got {self.padding}"
            )

    @property
    def name(self) -> str:
        return f"{self.kind}pool"

    @property
    def step(self) -> int:
        return self.stride or self.size

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = shape
        size = [ops.pool_output_size(n, self.size, stride=self.step, padding=self.padding) for n in (H, W)]
        if min(size) < 1:
            raise CnnxError(f"the {H}x{W} input is smaller than the {self.size}x{self.size} window")
        return (C, *size)

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        return (
            tuple(f + (self.size - 1) * j for f, j in zip(rf, jump, strict=True)),
            tuple(j * self.step for j in jump),
        )

    def workspace(self, shape: Shape) -> int:
        return ops.pool2d_scratch(shape, self.size, self.step, self.padding)

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        pool = ops.max_pool2d if self.kind == "max" else ops.avg_pool2d
        return pool(x, self.size, self.step, self.padding)

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        if self.kind == "max":
            return reverse.max_pool2d_backward(grad, x, self.size, self.step, self.padding, output=out)
        return reverse.avg_pool2d_backward(grad, x.shape, self.size, self.step, self.padding)


@dataclass(frozen=True)
class GlobalAvgPool(_StageBasics):
    """The mean of each channel: a (C, 1, 1) output that sees the whole input."""

    name = "global_avgpool"

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[0], 1, 1)

    def receptive(self, rf: Pair, jump: Pair, shape: Shape) -> tuple[Pair, Pair]:
        # One window as large as its input: it sees everything the input's pixels see.
        sides = shape[1:]
        return (
            tuple(f + (n - 1) * j for f, n, j in zip(rf, sides, jump, strict=True)),
            tuple(j * n for j, n in zip(jump, sides, strict=True)),
        )

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return x.mean(axis=(1, 2), dtype=np.float64, keepdims=True).astype(np.float32)

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return np.broadcast_to(grad / np.float32(x.shape[1] * x.shape[2]), x.shape).astype(np.float32)


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

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return grad.reshape(x.shape)


@dataclass(frozen=True)
class Dense(_StageBasics):
    """A fully connected layer: every output a weighted sum of all inputs, plus a bias (``ops.linear``)."""

    weights: str
    source: WeightBank = field(init=False, repr=False, compare=False)

    name = "dense"
    sees_everything = True

    def __post_init__(self):
        source = parse_dense(self.weights)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "weights", source.spec)

    def labels(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        return ("outputs",)

    def output_shape(self, shape: Shape) -> Shape:
        size = shape[0] * shape[1] * shape[2]
        if size != self.source.weights.shape[1]:
            raise CnnxError(f"takes {self.source.weights.shape[1]} inputs; the stage before gives {size}")
        return (1, 1, self.source.weights.shape[0])

    def apply(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return ops.linear(x.reshape(1, -1), self.source.weights, self.source.bias).reshape(1, 1, -1)

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return (grad.reshape(1, -1) @ self.source.weights).reshape(x.shape)


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

    def backward(self, x: np.ndarray, out: np.ndarray, grad: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return reverse.softmax_backward(grad.reshape(-1), out.reshape(-1)).reshape(x.shape)


Stage = Conv | Activation | Pool | GlobalAvgPool | Flatten | Dense | Softmax


@dataclass(frozen=True)
class Kind:
    """A stage kind as the spec language names it: how to make one, and what its values and options are.

    ``value`` is the field that values written without a key fill (a conv's
    filters, a pool's window size, leaky_relu's slope, dense's weights);
    ``options`` are the fields that may be set by name, with their types
    (``many``: several values fill the value field, so it is not an option of
    the text form).
    """

    stage: type
    value: str | None
    options: dict[str, typing.Any]
    fixed: dict[str, typing.Any]
    many: bool = False

    def make(self, **options) -> Stage:
        return self.stage(**self.fixed, **options)

    def required(self, key: str) -> bool:
        """Whether a field has no default, so it must be given."""
        return next(f for f in fields(self.stage) if f.name == key).default is MISSING

    def low(self, key: str) -> int | None:
        """The least value a whole-number option may take, where it has one."""
        return next((f.metadata.get("low") for f in fields(self.stage) if f.name == key), None)


def _kind(stage: type, value: str | None = None, *, fixed: dict | None = None, many: bool = False) -> Kind:
    """A Kind from a stage class: its options are its init fields but the ones ``fixed`` by the kind's name."""
    fixed = fixed or {}
    hints = typing.get_type_hints(stage)
    options = {f.name: hints[f.name] for f in fields(stage) if f.init and f.name not in fixed}
    return Kind(stage, value, options, fixed, many)


KINDS: dict[str, Kind] = {
    "conv": _kind(Conv, "filters", many=True),
    "relu": _kind(Activation, fixed={"function": "relu", "slope": 0.01}),
    "leaky_relu": _kind(Activation, "slope", fixed={"function": "leaky_relu"}),
    "sigmoid": _kind(Activation, fixed={"function": "sigmoid", "slope": 0.01}),
    "tanh": _kind(Activation, fixed={"function": "tanh", "slope": 0.01}),
    "abs": _kind(Activation, fixed={"function": "abs", "slope": 0.01}),
    "maxpool": _kind(Pool, "size", fixed={"kind": "max"}),
    "avgpool": _kind(Pool, "size", fixed={"kind": "avg"}),
    "global_avgpool": _kind(GlobalAvgPool),
    "flatten": _kind(Flatten),
    "dense": _kind(Dense, "weights"),
    "softmax": _kind(Softmax),
}


@dataclass(frozen=True)
class Pipeline:
    """A chain of stages and the settings they run under: grey or colour input, and the convolution convention."""

    stages: tuple[Stage, ...]
    color: bool = False
    convention: str = "correlation"

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise CnnxError("a pipeline needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise CnnxError(f"a pipeline has at most {MAX_STAGES} stages (each is written as a folder); "
                            f"got {len(self.stages)}")
        if self.convention not in CONVENTIONS:
            raise CnnxError(f"convention must be {' or '.join(CONVENTIONS)}; got {self.convention!r}")

    @property
    def convention_text(self) -> str:
        if self.convention == "convolution":
            return "true convolution (kernels flipped)"
        return "cross-correlation (kernels not flipped)"


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
