"""Any ONNX CNN as a source of stages: its graph run on cnnx's own numpy ops, its layers written as stages.

``onnx_file.load_graph`` reads the model (nothing in it is ever executed) and
makes it ready; each node is one of the ops of ``onnx_ops``, run in the
graph's order on numpy arrays, float32 throughout.  Every value is let go
once its last reader has run.  The chosen nodes' outputs become stage
records, the input (as the model saw it) first and the model's output last.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.sources.onnx_ops import (
    ACTIVATION_OPS,
    OPS,
    SHOWN,
    attributes,
    conv_pads,
    pairs,
    run_checked,
    run_node,
    text_of,
)
from cnnx.sources.prepare import PREPARATIONS, Preparation
from cnnx.sources.reverse import Reversed, Target, reverse_graph
from cnnx.sources.source import PlannedStage, StageResult, Stats, input_labels

__all__ = ["Graph", "Node", "stage_shape"]

Shape = tuple[int, ...]


_resizing = threading.Lock()  # a model of any size is made ready for one size at a time


@dataclass
class Node:
    """One step of the graph: its op, name, inputs and outputs (value names), and the node as ONNX read it."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    proto: object = field(repr=False)
    attrs: dict = field(init=False, repr=False)  # the node's attributes, read once

    def __post_init__(self) -> None:
        self.attrs = attributes(self.proto)


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
    computed: int = 0  # nodes computed once at load: everything they read was known before the image
    load_bytes: int = 0  # the most memory making it ready held: the weights and every value computed at load
    notes: tuple[str, ...] = ()  # what the user should know of the model: weights that are not finite, its precision
    loaded_notes: tuple[str, ...] = ()  # those known from reading the file, whatever the input size
    ready_seconds: float = 0.0  # reading the file and making the graph ready (for the latest size), no image's work
    # For a model that takes any height and width: makes the graph ready again for an input shape (C, H, W).
    any_size: Callable[[tuple[int, int, int]], None] | None = field(default=None, repr=False)
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
        """The model's input for a loaded image of ``shape``: its own size, or for a model of any size the size
        ``preprocess`` gives the image (the graph is made ready at it)."""
        if self.any_size is not None:
            wanted = (self.input_shape_[0], *self.preprocess.any_size(shape[1:]))
            with _resizing:
                if wanted != self.input_shape_:
                    self.any_size(wanted)
        return self.input_shape_

    @property
    def size_reason(self) -> str:
        """Why the input has its size, in words, for the manifest and the page."""
        H, W = self.input_shape_[1:]
        if self.any_size is None:
            return f"{H}x{W}, the model's own size"
        return f"{H}x{W}, {self.preprocess.any_size_reason()}: the model takes any size"

    def preparation_text(self) -> str:
        """What was done to the image, and for a model of any size, why the input has its size."""
        if self.any_size is None:
            return self.preprocess.describe(self.input_shape_)
        return self.preprocess.kept_whole().describe(self.input_shape_, sized=self.size_reason)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The loaded image as the model's input: grey or RGB as it takes, sized and scaled as ``preprocess`` says."""
        shape = self.input_shape(image.shape)
        return (self.preprocess if self.any_size is None else self.preprocess.kept_whole()).apply(image, shape)

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

    def reverse(self, image: np.ndarray, target: Target, keep=(), gradient: bool = True) -> Reversed:
        """The reverse pass from ``target`` to the prepared ``image``: a written stage's channel or value, or a class's
        score, the value before the final softmax or log-softmax (the output itself where there is none)."""
        chosen = self.chosen()
        if target.label is not None:
            value = self._logits()
        else:
            if target.stage is None or not 1 <= target.stage <= len(chosen):
                raise CnnxError(f"--stage takes 1 to {len(chosen)}, the layers written (see --layers)")
            value = chosen[target.stage - 1].outputs[0]
        kept = {chosen[k - 1].outputs[0]: k for k in keep if 1 <= k <= len(chosen)}
        return reverse_graph(self, image, target, value=value, keep=kept, gradient=gradient)

    def _logits(self) -> str:
        """The value a class's score is read from: the input of the final softmax or log-softmax, looking back
        through the quantisation steps and copies after it (a quantised network's last ops); the output itself where
        there is none."""
        made = {output: node for node in self.nodes for output in node.outputs}
        node = made.get(self.output_name)
        while node is not None and node.op in ("QuantizeLinear", "DequantizeLinear", "Identity", "Cast"):
            node = made.get(node.inputs[0])
        return node.inputs[0] if node is not None and node.op in ("Softmax", "LogSoftmax") else self.output_name

    def run_to(self, image: np.ndarray, name: str) -> tuple[Node, list, np.ndarray]:
        """Run the graph on a prepared (C, H, W) image up to the node called ``name``: the node, its inputs, output."""
        target = next((n for n in self.nodes if name in (n.name, n.outputs[0])), None)
        if target is None:
            convs = [n.name for n in self.nodes if n.op == "Conv"][:12]
            raise CnnxError(f"{self.path.name} has no node {name!r}; its convolutions include {', '.join(convs)}")
        return next((node, inputs, output) for node, inputs, output, _ in self.evaluate(image) if node is target)

    def conv_geometry(self, node: Node, x_shape: Shape) -> dict:
        """A Conv node's strides, dilations, groups and (top, left, bottom, right) padding, as it runs."""
        attrs = node.attrs
        weights = self.constants[node.inputs[1]]
        return {"strides": pairs(attrs, "strides", 1), "dilations": pairs(attrs, "dilations", 1),
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
        # Sizes of map the windowed ops make: a 4-D value of another size is no map (ConvNeXt's channels last).
        maps = {self.shapes.get(n.outputs[0], (0, 0))[2:] for n in self.nodes if OPS[n.op].field == "window"}
        last: dict[Shape, Node] = {}
        ends: dict[Shape, Node] = {}
        for node in shown:
            shape = self.shapes.get(node.outputs[0])
            if not shape or len(shape) != 4 or not (node.op in ACTIVATION_OPS or node.op in joins):
                continue
            if shape[2:] not in maps:
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
            attrs, field_ = node.attrs, OPS[node.op].field
            if field_ == "window" and len(self.shapes.get(node.inputs[0], (0,) * 4)) == 4:
                weights = self.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
                kernel = attrs.get("kernel_shape") or (
                    weights.shape[2:] if weights is not None else self.shapes.get(node.inputs[1], (0, 0, 1, 1))[2:]
                )
                dilations, strides = pairs(attrs, "dilations", 1), pairs(attrs, "strides", 1)
                rf = tuple(math.ceil(r + d * (k - 1) * j) for r, d, k, j in zip(rf, dilations, kernel, jump,
                                                                                  strict=True))
                jump = tuple(j * s for j, s in zip(jump, strides, strict=True))
            elif field_ == "whole":
                rf = (H, W)
            elif field_ == "spread" and node.inputs[1] in self.constants:
                # Each output reads the inputs whose spread windows cover it: span / stride of them a side.
                kernel = self.constants[node.inputs[1]].shape[2:]
                strides, dilations = pairs(attrs, "strides", 1), pairs(attrs, "dilations", 1)
                rf = tuple(math.ceil(r + (-(-(d * (k - 1) + 1) // s) - 1) * j)
                           for r, j, k, s, d in zip(rf, jump, kernel, strides, dilations, strict=True))
                jump = tuple(j / s for j, s in zip(jump, strides, strict=True))
            elif field_ == "resize" and len(self.shapes.get(node.outputs[0], ())) == 4:
                # Each output reads 1, 2 or 4 neighbours a side (a block, for SpaceToDepth); the input's step
                # between them, over the new size.
                taps = {"linear": 2, "cubic": 4}.get(text_of(attrs.get("mode"), "nearest"), 1)
                taps = attrs["blocksize"] if node.op == "SpaceToDepth" else taps
                before, after = self.shapes[node.inputs[0]][2:], self.shapes[node.outputs[0]][2:]
                rf = tuple(math.ceil(r + (taps - 1) * j) for r, j in zip(rf, jump, strict=True))
                jump = tuple(j * b / a for j, b, a in zip(jump, before, after, strict=True))
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
            made = run_checked(self.path, node, run_node, node, inputs, self.opset)
            values.update(zip(node.outputs, made, strict=False))
            output = made[0]
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
        prepared = self.preparation_text()
        yield StageResult(0, "input", f"input: {prepared}", image, input_labels(image.shape[0]), 0.0, (1, 1), (1, 1),
                          Stats.of(image), image.shape, preparation=prepared)
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
        """The top five classes by probability, where the output is one row of them (a map, as a backbone or a
        segmentation network gives, is no answer)."""
        output = np.asarray(output, np.float64)
        values = output.ravel()
        if sum(side > 1 for side in output.shape) != 1 or not np.isfinite(values).all():  # no row, or no ranking
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
                "preparation": self.preparation_text(),
                "input_size": self.size_reason,
                "layers": self.layers or "default",
                "nodes_folded": self.folded,
                "nodes_computed_at_load": self.computed,
                "written": [self._describe(n) for n in self.chosen()],
            },
        }


def stage_shape(shape: Shape) -> tuple[int, int, int]:
    """An ONNX value's shape as a stage's (C, H, W): the batch of one dropped (a value whose first axis is longer,
    which a stranger's graph can make, has it folded into the next); a row of values, or maps of one value each
    (a global pool's), as (1, 1, N)."""
    shape = tuple(int(s) for s in shape)
    shape = (shape[0] * shape[1], *shape[2:]) if len(shape) > 1 else shape
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        return shape
    return (1, 1, math.prod(shape) if shape else 1)


def _as_stage(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float32)
    return np.ascontiguousarray(value.reshape(stage_shape(value.shape)))


GROWN_IN_PLACE = frozenset({"ConvTranspose", "Resize", "Upsample"})


def _running_bytes(graph: Graph) -> int:
    """The weights, and the most that is held at once while the nodes run in order: every value still to be read,
    the node's output, and a working copy of its largest input (a padded copy, say); or what loading held, if more."""
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
        if node.op in GROWN_IN_PLACE:  # its output is made whole beside it first (an uncropped grid, an axis at a time)
            working = max(working, size(node.outputs[0]))
        live[node.outputs[0]] = size(node.outputs[0])
        peak = max(peak, sum(live.values()) + working)
        for name in node.inputs:
            readers[name] -= 1
            if not readers[name] and name in live and name != graph.input_name:
                del live[name]
    return max(graph.load_bytes, sum(value.nbytes for value in graph.constants.values()) + peak)
