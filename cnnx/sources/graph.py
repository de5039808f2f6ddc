"""Any ONNX CNN as a source of stages: its graph run on cnnx's own numpy ops, its layers written as stages.

The model file is read with the ``onnx`` package (``pip install "cnnx[onnx]"``)
and nothing in it is ever executed: each node is one of the ops below, run
in the graph's order on numpy arrays, float32 throughout.  A batch
normalisation that follows a convolution is folded into the convolution's
weights when the model is read.  Every value is let go once its last reader
has run.  The chosen nodes' outputs become stage records, the input (as the
model saw it) first and the model's output last.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError, printable
from cnnx.base.files import read_regular
from cnnx.compute import ops
from cnnx.sources.onnx_file import MODEL_LIMIT, check_opset, check_structure, resolve_tensors
from cnnx.sources.prepare import PREPARATIONS, Preparation, preparation
from cnnx.sources.source import PlannedStage, StageResult, Stats, input_labels

__all__ = ["Graph", "SUPPORTED", "attributes", "conv_pads", "load_graph", "pool_geometry", "stage_shape"]

Shape = tuple[int, ...]


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pairs(node_attrs: dict, key: str, default: int, n: int = 2) -> list[int]:
    return list(node_attrs.get(key, [default] * n))


# ---------------------------------------------------------------- the ops


def conv_pads(attrs: dict, x_shape: Shape, kernel: Shape) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``, as ONNX defines them."""
    strides, dilations = _pairs(attrs, "strides", 1), _pairs(attrs, "dilations", 1)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s, d in zip(x_shape[-2:], kernel, strides, dilations, strict=True):
            out = -(-n // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
            pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
        return pads[0][0], pads[1][0], pads[0][1], pads[1][1]
    if auto == "VALID":
        return 0, 0, 0, 0
    top, left, bottom, right = _pairs(attrs, "pads", 0, 4)
    return top, left, bottom, right


def _padded(x: np.ndarray, pads, fill: float) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)


def _conv(node, x, w, b=None):
    attrs = attributes(node)
    pads = conv_pads(attrs, x.shape, w.shape[2:])
    symmetric = pads[0] == pads[2] and pads[1] == pads[3]
    return ops.conv2d(
        x if symmetric else _padded(x, pads, 0.0), w, b, stride=tuple(_pairs(attrs, "strides", 1)),
        padding=(pads[0], pads[1]) if symmetric else 0, dilation=tuple(_pairs(attrs, "dilations", 1)),
        groups=attrs.get("group", 1),
    )


def pool_geometry(attrs: dict, x_shape: Shape):
    kernel = list(attrs["kernel_shape"])
    strides, dilations = _pairs(attrs, "strides", 1), _pairs(attrs, "dilations", 1)
    pads = list(conv_pads(attrs, x_shape, kernel))
    if attrs.get("ceil_mode", 0):  # the last window may start inside the input and reach past it
        for axis, (n, k, s, d) in enumerate(zip(x_shape[-2:], kernel, strides, dilations, strict=True)):
            span = d * (k - 1) + 1
            padded = n + pads[axis] + pads[axis + 2]
            out = -(-(padded - span) // s) + 1
            if (out - 1) * s >= n + pads[axis]:
                out -= 1
            pads[axis + 2] += max(0, (out - 1) * s + span - padded)
    return kernel, strides, dilations, tuple(pads)


def _max_pool(node, x):
    kernel, strides, dilations, pads = pool_geometry(attributes(node), x.shape)
    return ops.max_pool2d(_padded(x, pads, -np.inf), tuple(kernel), tuple(strides), 0, tuple(dilations))


def _average_pool(node, x):
    attrs = attributes(node)
    kernel, strides, dilations, pads = pool_geometry(attrs, x.shape)
    if list(x.shape[-2:]) == kernel and not any(pads) and dilations == [1, 1]:  # one window: the mean of each map
        return x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    explicit = conv_pads(attrs, x.shape, kernel)

    def window_sums(values: np.ndarray) -> np.ndarray:
        if dilations == [1, 1]:
            return ops.avg_pool2d(values, tuple(kernel), tuple(strides), 0) * float(np.prod(kernel))
        # A dilated window: a sum over its taps, as a depthwise convolution by ones.
        ones = np.ones((values.shape[1], 1, *kernel), np.float32)
        return ops.conv2d(values, ones, None, stride=tuple(strides), dilation=tuple(dilations), groups=values.shape[1])

    sums = window_sums(_padded(x, pads, 0.0))
    # The windows count the input, and the explicit padding only with count_include_pad; ceil_mode's never.
    ones = np.ones((1, 1, *x.shape[-2:]), np.float32)
    counted = np.pad(ones, ((0, 0), (0, 0), (explicit[0], explicit[2]), (explicit[1], explicit[3])),
                     constant_values=1.0 if attrs.get("count_include_pad", 0) else 0.0)
    extra = (0, 0, pads[2] - explicit[2], pads[3] - explicit[3])
    counts = window_sums(_padded(counted, extra, 0.0))
    return (sums / counts).astype(np.float32)


def _box_mean(node, x):
    """An average pool over other than two axes (PyTorch's LocalResponseNorm pools over channels as a third):
    window sums along each axis from running sums, in float64; no ceil_mode, dilations or auto_pad."""
    attrs, n = attributes(node), x.ndim - 2
    kernel = list(attrs["kernel_shape"])
    strides, pads = list(attrs.get("strides", [1] * n)), list(attrs.get("pads", [0] * 2 * n))
    auto = attrs.get("auto_pad", b"NOTSET")
    if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1] * n)) or auto not in (
        b"NOTSET", "NOTSET"
    ):
        raise ValueError(f"an average pool over {n} axes takes no ceil_mode, dilations or auto_pad in cnnx")
    widths = list(zip(pads[:n], pads[n:], strict=True))
    sums = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *widths])
    counts = np.pad(np.ones(x.shape[2:]), widths, constant_values=1.0 if attrs.get("count_include_pad", 0) else 0.0)
    for axis, (k, s) in enumerate(zip(kernel, strides, strict=True)):
        sums, counts = _window_sums(sums, axis + 2, k, s), _window_sums(counts, axis, k, s)
    return (sums / counts).astype(np.float32)


def _window_sums(values: np.ndarray, axis: int, size: int, step: int) -> np.ndarray:
    """The sums of windows of ``size`` along ``axis``, every ``step``-th, from running sums."""
    running = np.cumsum(values, axis=axis)
    running = np.concatenate([np.zeros_like(np.take(running, [0], axis=axis)), running], axis=axis)
    starts = np.arange(0, values.shape[axis] - size + 1, step)
    return np.take(running, starts + size, axis=axis) - np.take(running, starts, axis=axis)


def _batch_norm(node, x, scale, bias, mean, var):
    eps = attributes(node).get("epsilon", 1e-5)
    factor = (scale / np.sqrt(var + eps)).astype(np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * factor.reshape(shape) + (bias - mean * factor).reshape(shape)).astype(np.float32)


def _gemm(node, a, b, c=None):
    attrs = attributes(node)
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        out = out + attrs.get("beta", 1.0) * c
    return out.astype(np.float32)


def _softmax(node, x, opset: int):
    axis = attributes(node).get("axis", -1 if opset >= 13 else 1)
    if opset < 13:  # the input is flattened to 2-D from ``axis`` on, as opsets before 13 say
        shape = x.shape
        flat = x.reshape(math.prod(shape[:axis]), -1)
        return ops.softmax(flat, dim=-1).reshape(shape)
    return ops.softmax(x, dim=axis)


def _lrn(node, x):
    attrs = attributes(node)
    size, alpha, beta, bias = attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    squares = np.square(x, dtype=np.float64)
    padded = np.pad(squares, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    windows = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0), (0, 0))), axis=1)
    total = windows[:, size:] - windows[:, :-size]
    return (x / (bias + alpha / size * total) ** beta).astype(np.float32)


def _reshape(node, x, shape):
    shape = [int(s) for s in shape]
    if not attributes(node).get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(node, inputs, opset: int, since: int) -> list[int] | None:
    """An op's axes: an attribute before opset ``since``, its second input from then on."""
    if opset >= since and len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in inputs[1]]
    axes = attributes(node).get("axes")
    return None if axes is None else list(axes)


def _reduce(node, inputs, opset: int, reducer):
    axes = _axes(node, inputs, opset, 18)
    keep = bool(attributes(node).get("keepdims", 1))
    return reducer(inputs[0], axis=None if axes is None else tuple(axes), keepdims=keep).astype(np.float32)


def _clip(node, inputs, opset: int):
    attrs = attributes(node)
    if opset >= 11:
        low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else -np.inf
        high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.inf
    else:
        low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    return np.clip(inputs[0], low, high).astype(np.float32)


def _pad(node, inputs, opset: int):
    attrs = attributes(node)
    pads = [int(p) for p in (inputs[1] if opset >= 11 else attrs["pads"])]
    value = (inputs[2].item() if opset >= 11 and len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0))
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"Pad mode {mode!r}; cnnx pads with constant, reflect or edge")
    n = inputs[0].ndim
    widths = list(zip(pads[:n], pads[n:], strict=True))
    options = {"constant_values": value} if mode == "constant" else {}
    return np.pad(inputs[0], widths, mode=mode, **options)


def _divide(a, b):
    """ONNX's Div: true division of floats, and of integers (shapes, say) the floor."""
    return np.divide(a, b) if np.issubdtype(np.result_type(a, b), np.floating) else np.floor_divide(a, b)


def _constant(node):
    from onnx import numpy_helper

    attrs = attributes(node)
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key in ("value_float", "value_int"):
        if key in attrs:
            return np.array(attrs[key])
    for key in ("value_floats", "value_ints"):
        if key in attrs:
            return np.array(list(attrs[key]))
    raise CnnxError(f"Constant node {node.name!r}: only numeric values are supported")


def _constant_of_shape(node, shape):
    from onnx import numpy_helper

    value = attributes(node).get("value")
    fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return np.full([int(s) for s in shape], fill.reshape(-1)[0], dtype=fill.dtype)



# Each op: how to compute its outputs from its inputs (None where an optional input is absent) and the opset.
RUN: dict[str, Callable] = {
    "Conv": lambda node, inputs, opset: _conv(node, *inputs),
    "BatchNormalization": lambda node, inputs, opset: _batch_norm(node, *inputs[:5]),
    "Relu": lambda node, inputs, opset: np.maximum(inputs[0], np.float32(0)),
    "LeakyRelu": lambda node, inputs, opset: ops.leaky_relu(inputs[0], attributes(node).get("alpha", 0.01)),
    "PRelu": lambda node, inputs, opset: np.where(inputs[0] < 0, inputs[0] * inputs[1], inputs[0]).astype(np.float32),
    "Clip": lambda node, inputs, opset: _clip(node, inputs, opset),
    "Sigmoid": lambda node, inputs, opset: ops.sigmoid(inputs[0]),
    "HardSigmoid": lambda node, inputs, opset: np.clip(
        attributes(node).get("alpha", 0.2) * inputs[0] + attributes(node).get("beta", 0.5), 0, 1
    ).astype(np.float32),
    "HardSwish": lambda node, inputs, opset: (inputs[0] * np.clip(inputs[0] / 6 + 0.5, 0, 1)).astype(np.float32),
    "Tanh": lambda node, inputs, opset: ops.tanh(inputs[0]),
    "Add": lambda node, inputs, opset: np.add(inputs[0], inputs[1]),
    "Sub": lambda node, inputs, opset: np.subtract(inputs[0], inputs[1]),
    "Mul": lambda node, inputs, opset: np.multiply(inputs[0], inputs[1]),
    "Div": lambda node, inputs, opset: _divide(*inputs[:2]),
    "Sum": lambda node, inputs, opset: sum(inputs[1:], start=inputs[0]),
    "Pow": lambda node, inputs, opset: np.power(inputs[0], inputs[1]).astype(inputs[0].dtype),
    "Concat": lambda node, inputs, opset: np.concatenate(inputs, axis=attributes(node)["axis"]),
    "MaxPool": lambda node, inputs, opset: _max_pool(node, inputs[0]),
    "AveragePool": lambda node, inputs, opset: (
        _average_pool(node, inputs[0]) if inputs[0].ndim == 4 else _box_mean(node, inputs[0])
    ),
    "GlobalAveragePool": lambda node, inputs, opset: (
        inputs[0].mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    ),
    "GlobalMaxPool": lambda node, inputs, opset: inputs[0].max(axis=(2, 3), keepdims=True),
    "ReduceMean": lambda node, inputs, opset: _reduce(node, inputs, opset, np.mean),
    "ReduceMax": lambda node, inputs, opset: _reduce(node, inputs, opset, np.max),
    "Flatten": lambda node, inputs, opset: (
        inputs[0].reshape(math.prod(inputs[0].shape[: attributes(node).get("axis", 1)]), -1)
    ),
    "Reshape": lambda node, inputs, opset: _reshape(node, inputs[0], inputs[1]),
    "Transpose": lambda node, inputs, opset: np.transpose(inputs[0], attributes(node).get("perm")),
    "Squeeze": lambda node, inputs, opset: (
        np.squeeze(inputs[0], axis=None if (a := _axes(node, inputs, opset, 13)) is None else tuple(a))
    ),
    "Unsqueeze": lambda node, inputs, opset: np.expand_dims(inputs[0], tuple(_axes(node, inputs, opset, 13))),
    "Gemm": lambda node, inputs, opset: _gemm(node, *inputs),
    "MatMul": lambda node, inputs, opset: np.matmul(inputs[0], inputs[1]),
    "Softmax": lambda node, inputs, opset: _softmax(node, inputs[0], opset),
    "LRN": lambda node, inputs, opset: _lrn(node, inputs[0]),
    "Pad": lambda node, inputs, opset: _pad(node, inputs, opset),
    "Dropout": lambda node, inputs, opset: inputs[0],
    "Identity": lambda node, inputs, opset: inputs[0],
    "Constant": lambda node, inputs, opset: _constant(node),
    "ConstantOfShape": lambda node, inputs, opset: _constant_of_shape(node, inputs[0]),
    "Shape": lambda node, inputs, opset: np.array(inputs[0].shape, np.int64),
    "Gather": lambda node, inputs, opset: (
        np.take(inputs[0], np.asarray(inputs[1], np.int64), axis=attributes(node).get("axis", 0))
    ),
}
SUPPORTED = tuple(sorted(RUN))
# Ops whose outputs are worth a look as a stage: they make new maps (not shapes, constants or copies).
SHOWN = {
    "Conv",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Add",
    "Sum",
    "Mul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceMax",
    "Flatten",
    "Gemm",
    "MatMul",
    "Softmax",
    "LRN",
    "BatchNormalization",
}
ACTIVATION_OPS = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"}


@dataclass
class Node:
    """One step of the graph: its op, name, inputs and outputs (value names), and the node as ONNX read it."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    proto: object = field(repr=False)


@dataclass
class Graph:
    """An ONNX model as a source of stages.

    ``layers`` picks the nodes written as stages (names, op types or glob
    patterns; ``all``); by default, the last activation at each size of map,
    and the output.  ``labels`` names the classes of the output.
    ``preprocess`` says how a loaded image in [0, 1] becomes the model's
    input (``prepare.Preparation``).
    """

    path: Path
    nodes: list[Node]
    constants: dict[str, np.ndarray] = field(repr=False)
    input_name: str = ""
    input_shape_: tuple[int, int, int] = (3, 224, 224)
    output_name: str = ""
    opset: int = 13
    shapes: dict[str, Shape] = field(default_factory=dict, repr=False)
    layers: str | None = None
    labels: tuple[str, ...] = ()
    preprocess: Preparation = PREPARATIONS["none"]
    folded: int = 0  # batch normalisations folded into the convolutions before them
    notes: tuple[str, ...] = ()  # what the user should know of the model: weights that are not finite
    pipeline = None  # a network, not a chain of stages: no spec to print or edit
    accuracy = None  # not measured by cnnx

    color = True
    chained = False  # the layers written are far apart in the graph: each is drawn on its own range
    max_channels: int | None = 64  # maps written of each stage when the layers are the default selection

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def title(self) -> str:
        return f"model {self.path.name}: {len(self.nodes)} nodes, {len(self.chosen())} written"

    @property
    def caption(self) -> str:
        return "convolution = cross-correlation (kernels not flipped), as ONNX defines it"

    def input_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.input_shape_

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The loaded image as the model's input: grey or RGB as it takes, sized and scaled as ``preprocess`` says."""
        return self.preprocess.apply(image, self.input_shape_)

    def chosen(self) -> list[Node]:
        """The nodes written as stages, in the graph's order; the output's always among them."""
        shown = [n for n in self.nodes if n.op in SHOWN]
        if self.layers == "all":
            picked = shown
        elif self.layers:
            picked = self.matching(self.layers)
        else:
            picked = self._default_selection(shown)
        last = next(n for n in self.nodes if self.output_name in n.outputs)
        return picked if last in picked else [*picked, last]

    def learned_kernels(self) -> dict[str, np.ndarray]:
        """Each convolution's weights (out, in/groups, kH, kW), batch norms folded in, by node name, in order."""
        return {
            node.name or f"conv{k}": self.constants[node.inputs[1]]
            for k, node in enumerate(n for n in self.nodes if n.op == "Conv")
            if node.inputs[1] in self.constants
        }

    def run_to(self, image: np.ndarray, name: str) -> tuple[Node, list, np.ndarray]:
        """Run the graph on a prepared (C, H, W) image up to the node called ``name``: the node, its inputs, output."""
        target = next((n for n in self.nodes if name in (n.name, n.outputs[0])), None)
        if target is None:
            convs = [n.name for n in self.nodes if n.op == "Conv"][:12]
            raise CnnxError(f"{self.path.name} has no node {name!r}; its convolutions include {', '.join(convs)}")
        return next((node, inputs, output) for node, inputs, output, _ in self.evaluate(image) if node is target)

    def conv_geometry(self, node: Node, x_shape: Shape) -> dict:
        """A Conv node's strides, dilations, groups and (top, left, bottom, right) padding, as it runs."""
        attrs = attributes(node.proto)
        weights = self.constants[node.inputs[1]]
        return {"strides": _pairs(attrs, "strides", 1), "dilations": _pairs(attrs, "dilations", 1),
                "group": attrs.get("group", 1), "pads": conv_pads(attrs, x_shape, weights.shape[2:])}

    def matching(self, layers: str) -> list[Node]:
        """The nodes named, or of the op types named, or matching the glob patterns, in ``layers`` (a, b, ...)."""
        patterns = [p.strip() for p in layers.split(",") if p.strip()]
        return [n for n in self.nodes if any(fnmatch.fnmatchcase(n.name, p) or n.op == p for p in patterns)]

    def _default_selection(self, shown: list[Node]) -> list[Node]:
        """What each resolution level ends with: at each size of map, the last block output (an activation of a
        sum or a concatenation, or the sum itself), else the last activation."""
        producer = {out: node for node in self.nodes for out in node.outputs}
        joins = ("Add", "Sum", "Concat")
        last: dict[Shape, Node] = {}
        ends: dict[Shape, Node] = {}
        for node in shown:
            shape = self.shapes.get(node.outputs[0])
            if not shape or len(shape) != 4 or not (node.op in ACTIVATION_OPS or node.op in joins):
                continue
            last[shape[2:]] = node
            before = producer.get(node.inputs[0])
            if node.op in joins or (before is not None and before.op in joins):
                ends[shape[2:]] = node
        picked = {**last, **ends}.values()
        return [n for n in self.nodes if n in picked]

    def plan(self, shape: tuple[int, int, int]) -> list[PlannedStage]:
        """The written stages' shapes and fields; the memory of running the graph is counted with the first."""
        fields_ = self._fields()
        planned = []
        for index, node in enumerate(self.chosen(), 1):
            out = stage_shape(self.shapes.get(node.outputs[0], ()))
            if self.max_channels and not self.layers:
                out = (min(out[0], self.max_channels), *out[1:])
            rf, jump = fields_.get(node.outputs[0], (None, None))
            planned.append(
                PlannedStage(
                    index,
                    node.op.lower(),
                    self._describe(node),
                    out,
                    rf,
                    jump,
                    _running_bytes(self) if index == 1 else 0,
                )
            )
        return planned

    def _describe(self, node: Node) -> str:
        return f"{node.op} {node.name}" if node.name else node.op

    def _fields(self) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
        """(receptive field, jump) of each map-shaped value, in input pixels, along the graph."""
        H, W = self.input_shape_[1:]
        known = {self.input_name: ((1, 1), (1, 1))}
        for node in self.nodes:
            sources = [known[i] for i in node.inputs if i in known]
            if not sources:
                continue
            rf = tuple(max(s[0][k] for s in sources) for k in range(2))
            jump = tuple(max(s[1][k] for s in sources) for k in range(2))
            attrs = attributes(node.proto)
            if node.op in ("Conv", "MaxPool", "AveragePool") and len(self.shapes.get(node.inputs[0], (0,) * 4)) == 4:
                weights = self.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
                kernel = attrs.get("kernel_shape") or (
                    weights.shape[2:] if weights is not None else self.shapes.get(node.inputs[1], (0, 0, 1, 1))[2:]
                )
                dilations, strides = _pairs(attrs, "dilations", 1), _pairs(attrs, "strides", 1)
                rf = tuple(r + d * (k - 1) * j for r, d, k, j in zip(rf, dilations, kernel, jump, strict=True))
                jump = tuple(j * s for j, s in zip(jump, strides, strict=True))
            elif node.op in (
                "GlobalAveragePool",
                "GlobalMaxPool",
                "Gemm",
                "MatMul",
                "Flatten",
                "ReduceMean",
                "ReduceMax",
                "Reshape",
                "Softmax",
            ):
                rf = (H, W)
            for output in node.outputs:
                known[output] = (rf, jump)
        return known

    def evaluate(self, image: np.ndarray) -> Iterator[tuple[Node, list, np.ndarray, float]]:
        """Run the graph on a prepared (C, H, W) image: each node with its inputs, its output and the seconds it took.

        A value is let go once the last node that reads it has run (and the caller has moved on).
        """
        readers: dict[str, int] = {}
        for node in self.nodes:
            for name in node.inputs:
                readers[name] = readers.get(name, 0) + 1
        values: dict[str, np.ndarray] = {self.input_name: np.asarray(image, np.float32)[None]}
        for node in self.nodes:
            start = time.perf_counter()
            inputs = [values.get(name, self.constants.get(name)) if name else None for name in node.inputs]
            try:
                with np.errstate(all="ignore"):  # NaN and overflow are counted in the stage's statistics
                    output = np.asarray(RUN[node.op](node.proto, inputs, self.opset))
            except MemoryError:
                raise
            except Exception as error:  # a node of a stranger's graph that cannot run as written is bad input
                raise CnnxError(f"{self.path.name}: node {node.name or node.op} ({node.op}) cannot run: "
                                f"{printable(error)}") from None
            values[node.outputs[0]] = output
            yield node, inputs, output, time.perf_counter() - start
            for name in node.inputs:
                readers[name] -= 1
                if readers[name] == 0 and name != self.input_name and name in values and name not in node.outputs:
                    del values[name]

    def stream(self, image: np.ndarray, *, reuse: bool = False) -> Iterator[StageResult]:
        """The input, then every chosen node's output as it is computed."""
        image = np.asarray(image, np.float32)
        chosen = {id(n): k for k, n in enumerate(self.chosen(), 1)}
        fields_ = self._fields()
        yield StageResult(
            0, "input", f"input: {self.preprocess.describe(self.input_shape_)}", image, input_labels(image.shape[0]),
            0.0, (1, 1), (1, 1), Stats.of(image), image.shape
        )
        since = 0.0  # a stage's seconds are those of every node computed since the stage before
        for node, _, output, seconds in self.evaluate(image):
            since += seconds
            if id(node) in chosen:
                yield self._record(chosen[id(node)], node, output, since, fields_)
                since = 0.0

    def _record(self, index: int, node: Node, output: np.ndarray, seconds: float, fields_: dict) -> StageResult:
        """A node's output as a stage record; of a default selection, the first maps of a wide layer only."""
        start = time.perf_counter()
        array = _as_stage(output)
        rf, jump = fields_.get(node.outputs[0], (None, None))
        stats = Stats.of(array)
        names = self.labels if node.outputs[0] == self.output_name and array.size == len(self.labels) else ()
        description = self._describe(node)
        cap = self.max_channels if not self.layers else None
        if cap and array.shape[0] > cap:
            # Thousands of maps of one layer are unreadable at once; the rest are a --layers away.
            description += (
                f" (its first {cap} of {array.shape[0]} maps written; --layers {node.name or node.op} writes them all)"
            )
            array = array[:cap]
        name = node.name or node.op
        labels = tuple(f"{name} #{c}" for c in range(array.shape[0])) if array.shape[0] > 1 else (name,)
        seconds += time.perf_counter() - start
        return StageResult(index, node.op.lower(), description, array, labels, seconds, rf, jump, stats, array.shape,
                           names)

    def answer(self, output: np.ndarray) -> list[tuple[str, float]] | None:
        """The top five classes by probability, where the output is one row of them."""
        values = np.asarray(output, np.float64).ravel()
        if values.size < 2 or not np.isfinite(values).all():  # no classes, or no answer to rank them by
            return None
        if not (np.all(values >= 0) and abs(values.sum() - 1) < 1e-3):  # scores, not probabilities
            shifted = np.exp(values - values.max())
            values = shifted / shifted.sum()
        names = self.labels if len(self.labels) == values.size else tuple(f"class {k}" for k in range(values.size))
        top = np.argsort(-values, kind="stable")[:5]
        return [(names[k], float(values[k])) for k in top]

    def about(self) -> dict:
        return {
            "convention": self.caption,
            "model": {
                "file": str(self.path),
                "nodes": len(self.nodes),
                "opset": self.opset,
                "input": list(self.input_shape_),
                "preprocess": self.preprocess.name,
                "preparation": self.preprocess.describe(self.input_shape_),
                "layers": self.layers or "default",
                "batch_norms_folded": self.folded,
                "written": [self._describe(n) for n in self.chosen()],
            },
        }


def stage_shape(shape: Shape) -> tuple[int, int, int]:
    """An ONNX value's shape as a stage's (C, H, W): the batch of one dropped; a row of values, or maps of one
    value each (a global pool's), as (1, 1, N)."""
    shape = tuple(int(s) for s in shape[1:]) if len(shape) > 1 else tuple(int(s) for s in shape)
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        return shape
    return (1, 1, math.prod(shape) if shape else 1)


def _as_stage(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float32)
    return np.ascontiguousarray(value.reshape(stage_shape(value.shape)))


def load_graph(
    path: Path, *, layers: str | None = None, labels: Path | None = None, preprocess: Preparation | str = "none"
) -> Graph:
    """Read an ONNX model: check every op is supported before any work, fold batch norms, infer shapes."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CnnxError('an ONNX model needs the onnx package: pip install "cnnx[onnx]"') from None
    path = Path(path)
    if isinstance(preprocess, str):
        preprocess = preparation(preprocess)
    data = read_regular(path, "an ONNX model", limit=MODEL_LIMIT)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # the protobuf parser raises several kinds on bad bytes
        raise CnnxError(f"{path}: not an ONNX model ({type(error).__name__})") from None
    del data  # the model holds its own copy
    graph = model.graph
    check_structure(model, path)
    unsupported: dict[str, str] = {}  # each op cnnx does not run, and the first node of it
    for n in graph.node:
        if n.op_type not in RUN or n.domain not in ("", "ai.onnx"):
            unsupported.setdefault(printable(n.op_type), printable(n.name or "?"))
    if unsupported:
        named = ", ".join(f"{op} (node {name})" for op, name in unsupported.items())
        verb = "is" if len(unsupported) == 1 else "are"
        raise CnnxError(f"{path}: op {named} {verb} not supported; cnnx runs {', '.join(SUPPORTED)}")
    held = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in held]
    if len(inputs) != 1:
        raise CnnxError(f"{path}: cnnx runs models of one image input; this one takes {len(inputs)} inputs")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims[1:]) or dims[1] not in (1, 3):
        raise CnnxError(
            f"{path}: the input {inputs[0].name!r} has shape {dims}; cnnx runs models of an image "
            "input (N, 1 or 3, H, W) with a fixed size"
        )
    opset = check_opset(model, path)
    resolve_tensors(model, path)  # from here nothing of the model can name another file
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # Each node's own copy of its proto: a part of the model would keep all of it (and its weights) alive.
    nodes = [Node(n.op_type, printable(n.name), list(n.input), list(n.output), _own_copy(n)) for n in graph.node]
    stored = next((p.value for p in model.metadata_props if p.key == "labels"), "")
    names = tuple(_labels(labels)) if labels else tuple(printable(n.strip()) for n in stored.split(",") if n.strip())
    input_name, output_name = inputs[0].name, graph.output[0].name
    result = Graph(path, nodes, constants, input_name, tuple(dims[1:]), output_name, opset, {}, layers, names,
                   preprocess)
    outline = _Outline(model)
    del model, graph, inputs  # the weights are in ``constants`` now: the parsed model's copy goes
    result.shapes = _shapes_before_running(result, outline)
    _check_convs(result)
    result.notes = _nonfinite_weights(result)
    result.folded = _fold_batch_norms(result)
    if layers and layers != "all" and not result.matching(layers):
        raise CnnxError(f"{path}: --layers {layers!r} names no node; give node names, op types or patterns")
    return result


def _nonfinite_weights(graph: Graph) -> tuple[str, ...]:
    """A line for each constant holding NaN or infinite values: the maps they reach will hold them too."""
    notes = []
    for name, value in graph.constants.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            notes.append(f"{graph.path.name}: {bad} of the {value.size} values of {printable(name)!r} are not finite "
                         "(NaN or infinite); the values computed from them will not be either")
    return tuple(notes)


def _check_convs(graph: Graph) -> None:
    """Each convolution's weights fit its input, as far as they are known at load: what shape inference lets pass."""
    for node in (n for n in graph.nodes if n.op == "Conv" and len(n.inputs) > 1):
        constant = graph.constants.get(node.inputs[1])
        weights = constant.shape if constant is not None else graph.shapes.get(node.inputs[1])
        if not weights:
            continue
        x = graph.shapes.get(node.inputs[0], ())
        group = attributes(node.proto).get("group", 1)
        where = f"{graph.path}: node {node.name or node.op} (Conv)"
        if len(weights) != 4 or weights[0] < 1 or group < 1 or weights[0] % group:
            raise CnnxError(f"{where}: weights of shape {list(weights)} in {group} groups are no bank of 2-D kernels")
        if len(x) == 4 and x[1] and x[1] != weights[1] * group:
            raise CnnxError(f"{where}: its input has {x[1]} channels, its weights read {weights[1] * group}")


def _first_line(error: Exception) -> str:
    """What onnx's checker said, in one line: the node and the fault."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return printable(lines[0] if lines else type(error).__name__)


def _own_copy(proto):
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


@dataclass
class _Outline:
    """What shape inference needs of a model besides its nodes and constants: its declarations."""

    name: str
    outputs: list
    opsets: list
    ir_version: int

    def __init__(self, model):
        self.name, self.outputs = model.graph.name, list(model.graph.output)
        self.opsets, self.ir_version = list(model.opset_import), max(model.ir_version, 4)


# Values worth working out at load, before any image: a shape, and the few numbers computed from shapes.
_FOLDED_AT_MOST = 4096  # elements


def _shapes_before_running(graph: Graph, outline: _Outline) -> dict[str, Shape]:
    """Every value's shape from the input's fixed size, without running the graph on an image.

    Where shape inference cannot tell (a map sized by Shape -> Mul -> ConstantOfShape), the small values that
    depend on shapes alone are computed, become constants, and shapes are inferred again.
    """
    shapes = _inferred_shapes(graph, outline)
    if _unknown(graph, shapes) is None:
        return shapes
    _fold_known_values(graph, shapes)
    shapes = _inferred_shapes(graph, outline)
    node = _unknown(graph, shapes)
    if node is not None:
        raise CnnxError(f"{graph.path}: the shape of node {node.name or node.op} ({node.op})'s output cannot be "
                        "worked out before running it; cnnx runs graphs whose shapes follow from the input's size")
    return shapes


def _unknown(graph: Graph, shapes: dict[str, Shape | None]) -> Node | None:
    """The first node whose output's shape is not known, if any."""
    return next((n for n in graph.nodes if shapes.get(n.outputs[0]) is None), None)


def _inferred_shapes(graph: Graph, outline: _Outline) -> dict[str, Shape | None]:
    """onnx's strict shape inference with the input at its fixed size (a batch of one); the weights declared by
    shape, not copied, and the small constants (shapes and axes that Reshape and the like read) given."""
    from onnx import helper, numpy_helper, shape_inference

    small = [numpy_helper.from_array(v, k) for k, v in graph.constants.items() if v.size <= 64]
    declared = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                for k, v in graph.constants.items() if v.size > 64]
    image = helper.make_tensor_value_info(graph.input_name, 1, [1, *graph.input_shape_])
    light = helper.make_graph([n.proto for n in graph.nodes], outline.name, [image, *declared], outline.outputs,
                              small)
    model = helper.make_model(light, opset_imports=outline.opsets, ir_version=outline.ir_version)
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx names the node and what is wrong with it
        raise CnnxError(f"{graph.path}: {_first_line(error)}") from None
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    shapes = {v.name: _known_shape(v) for v in values}
    shapes.update({k: v.shape for k, v in graph.constants.items()})
    return shapes


def _known_shape(value) -> Shape | None:
    """A declared value's shape, or None where its rank or any dimension is not known."""
    kind = value.type.tensor_type
    if not kind.HasField("shape") or not all(d.HasField("dim_value") for d in kind.shape.dim):
        return None
    return tuple(d.dim_value for d in kind.shape.dim)


def _fold_known_values(graph: Graph, shapes: dict[str, Shape | None]) -> None:
    """Nodes whose small outputs follow from shapes and constants alone are computed now and become constants."""
    kept = []
    for node in graph.nodes:
        inputs = [name for name in node.inputs if name]
        if node.op == "Shape" and shapes.get(node.inputs[0]) is not None:
            shaped = np.broadcast_to(np.uint8(0), shapes[node.inputs[0]])  # the shape, with no memory behind it
            graph.constants[node.outputs[0]] = RUN["Shape"](node.proto, [shaped], graph.opset)
            continue
        held = [graph.constants.get(name) for name in inputs]
        small = all(v is not None and v.size <= _FOLDED_AT_MOST for v in held)
        if inputs and small and node.op not in ("ConstantOfShape",) and len(node.outputs) == 1:
            values = [graph.constants.get(name) if name else None for name in node.inputs]
            with np.errstate(all="ignore"):
                try:
                    output = np.asarray(RUN[node.op](node.proto, values, graph.opset))
                except Exception as error:  # a stranger's graph: its own fault, named
                    raise CnnxError(f"{graph.path}: node {node.name or node.op} ({node.op}) cannot run: "
                                    f"{printable(error)}") from None
            if output.size <= _FOLDED_AT_MOST:
                graph.constants[node.outputs[0]] = output
                continue
        kept.append(node)
    graph.nodes = kept


def _running_bytes(graph: Graph) -> int:
    """The weights, and the most that is held at once while the nodes run in order: every value still to be read,
    the node's output, and a working copy of its largest input (a padded copy, say)."""
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1

    def size(name: str) -> int:
        shape = graph.shapes.get(name)
        return 4 * math.prod(shape) if shape is not None else 0

    live = {graph.input_name: size(graph.input_name)}
    peak = 0
    for node in graph.nodes:
        inputs = [name for name in node.inputs if name in live]
        working = max((live[name] for name in inputs), default=0)
        live[node.outputs[0]] = size(node.outputs[0])
        peak = max(peak, sum(live.values()) + working)
        for name in node.inputs:
            readers[name] -= 1
            if not readers[name] and name in live and name != graph.input_name:
                del live[name]
    return sum(value.nbytes for value in graph.constants.values()) + peak


def _labels(path: Path) -> list[str]:
    text = read_regular(Path(path), "a labels file", limit=16 << 20).decode("utf-8", "replace")
    return [printable(line.strip()) for line in text.splitlines() if line.strip()]


def _fold_batch_norms(graph: Graph) -> int:
    """A BatchNormalization read only by itself after a Conv with constant weights becomes part of the Conv."""
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    producer = {out: node for node in graph.nodes for out in node.outputs}
    folded = 0
    kept = []
    for node in graph.nodes:
        conv = producer.get(node.inputs[0]) if node.op == "BatchNormalization" else None
        consts = graph.constants
        if (
            conv is not None
            and conv.op == "Conv"
            and readers.get(conv.outputs[0]) == 1
            and conv.inputs[1] in consts
            and all(i in consts for i in node.inputs[1:5])
            and (len(conv.inputs) < 3 or conv.inputs[2] in consts)
        ):
            scale, bias, mean, var = (consts[i].astype(np.float64) for i in node.inputs[1:5])
            factor = scale / np.sqrt(var + attributes(node.proto).get("epsilon", 1e-5))
            weight = consts[conv.inputs[1]].astype(np.float64) * factor[:, None, None, None]
            old_bias = consts[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] else 0
            new_w, new_b = f"{conv.inputs[1]}__folded", f"{conv.inputs[1]}__folded_bias"
            consts[new_w] = weight.astype(np.float32)
            consts[new_b] = ((old_bias - mean) * factor + bias).astype(np.float32)
            for name in {*conv.inputs[1:], *node.inputs[1:5]} & consts.keys():  # weights read by nothing else go
                readers[name] -= 1
                if not readers[name]:
                    del consts[name]
            conv.inputs = [conv.inputs[0], new_w, new_b]
            conv.outputs = list(node.outputs)
            conv.name = conv.name or node.name
            folded += 1
            continue
        kept.append(node)
    graph.nodes = kept
    return folded
