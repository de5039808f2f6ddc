"""The reverse pass through any source of stages: from a target back to the prepared image.

A target is a written stage's value at a place, a channel of it (its sum), or a
model's class score, which is its logit: the value before a final softmax, as
Grad-CAM defines it.  The forward pass runs only as far as the target and keeps
each stage's input and output; the backward pass sends the target's gradient
back stage by stage (a chain's ``Stage.backward``, a graph's ``GRADS``) to the
prepared input, and hands over the value and gradient of the stages asked for
(Grad-CAM reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnx.base.errors import CnnxError


@dataclass(frozen=True)
class Target:
    """What the reverse pass starts from: a written stage's ``channel`` (its sum, or its value at ``place``, a
    (row, column)), or a model's class ``label`` (its index), whose score is its logit."""

    stage: int | None = None
    channel: int | None = None
    place: tuple[int, int] | None = None
    label: int | None = None

    def seed(self, value: np.ndarray) -> np.ndarray:
        """The gradient of the target with respect to its stage's ``value`` (as written, (C, H, W)): 1 at the place,
        over the channel, or at the class."""
        seed = np.zeros(value.shape, np.float32)
        if self.label is not None:
            if not 0 <= self.label < value.size:
                raise CnnxError(f"class {self.label} is not among the {value.size} outputs")
            seed.reshape(-1)[self.label] = 1
            return seed
        C, H, W = value.shape
        channel = 0 if self.channel is None else self.channel
        if not 0 <= channel < C:
            raise CnnxError(f"stage {self.stage} has channels 0 to {C - 1}; got --channel {channel}")
        if self.place is None:
            seed[channel] = 1
            return seed
        row, col = self.place
        if not (0 <= row < H and 0 <= col < W):
            raise CnnxError(f"stage {self.stage} is {H}x{W}; --at {row},{col} lies outside it")
        seed[channel, row, col] = 1
        return seed


@dataclass
class Reversed:
    """The target's value, its gradient with respect to the prepared input (C, H, W), and the value and gradient
    of each stage kept, by stage index."""

    score: float
    gradient: np.ndarray | None
    stages: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def reverse_chain(stages, image: np.ndarray, target: Target, *, end: int, keep=(), flip: bool = False,
                  gradient: bool = True) -> Reversed:
    """Through a chain's ``stages`` (each with ``apply`` and ``backward``), from ``target`` at stage ``end``;
    without ``gradient`` the forward pass alone, for the score."""
    values = [np.asarray(image, np.float32)]
    for stage in stages[:end]:
        values.append(stage.apply(values[-1], flip=flip))
    seed = target.seed(values[end])
    score = float(np.sum(seed * values[end], dtype=np.float64))
    if not gradient:
        return Reversed(score, None)
    kept, g = {}, seed
    for index in range(end, 0, -1):
        if index in keep:
            kept[index] = (values[index], g)
        g = stages[index - 1].backward(values[index - 1], values[index], g, flip=flip)
    return Reversed(score, np.asarray(g, np.float32), kept)


def reverse_graph(graph, image: np.ndarray, target: Target, *, value: str, keep: dict[str, int],
                  gradient: bool = True) -> Reversed:
    """Through a graph's nodes, from ``target`` at the value called ``value``; ``keep`` names the values kept (by
    name, with their stage index).  The forward pass stops once ``value`` is made."""
    from cnnx.sources.graph import stage_shape
    from cnnx.sources.onnx_grads import GRADS
    from cnnx.sources.onnx_ops import run_checked, run_node

    values = {graph.input_name: np.asarray(image, np.float32)[None]}
    ran = []
    kept = _values_kept(graph, value, keep)
    waiting: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            waiting[name] = waiting.get(name, 0) + 1
    with np.errstate(over="ignore", invalid="ignore"):
        for node in graph.nodes:
            inputs = [values.get(n, graph.constants.get(n)) if n else None for n in node.inputs]
            made = run_checked(graph.path, node, run_node, node, inputs, graph.opset)
            values.update(zip(node.outputs, made, strict=False))
            ran.append((node, inputs))
            if value in node.outputs:
                break
            for k, name in enumerate(node.inputs):  # a value read by no reverse step is let go, its shape kept
                waiting[name] -= 1
                if not waiting[name] and name in values and name not in kept:
                    values[name] = inputs[k] = _shape_of(values[name])
        made = values[value]
        as_written = made.reshape(stage_shape(made.shape))
        seed = target.seed(as_written).reshape(made.shape)
        score = float(np.sum(seed * made, dtype=np.float64))
        if not gradient:
            return Reversed(score, None)
        grads: dict[str, np.ndarray] = {value: seed}
        kept = {}  # now the stages kept for the caller
        for node, inputs in reversed(ran):
            outgoing = [grads.get(name) for name in node.outputs]
            if all(g is None for g in outgoing):
                continue
            for name, g in zip(node.outputs, outgoing, strict=True):
                if name in keep and g is not None:
                    kept[keep[name]] = (values[name].reshape(stage_shape(values[name].shape)),
                                        g.reshape(stage_shape(g.shape)))
            if len(node.outputs) == 1 or any(g is None for g in outgoing):
                outgoing = [g if g is not None else np.zeros_like(values[n]) for g, n in zip(outgoing, node.outputs,
                                                                                          strict=True)]
            outputs = [values[name] for name in node.outputs]
            back = run_checked(graph.path, node, GRADS[node.op], node, inputs, outputs, outgoing,
                               graph.opset)
            for name, g in zip(node.inputs, back, strict=False):
                if g is None or not name or name in graph.constants:
                    continue
                grads[name] = g if name not in grads else grads[name] + g
    if graph.input_name not in grads:
        raise CnnxError(f"{graph.path.name}: the target does not depend on the image")
    return Reversed(score, grads[graph.input_name][0].astype(np.float32), kept)


def _values_kept(graph, target: str, keep: dict[str, int]) -> set[str]:
    """The values the reverse pass reads: the target, the stages asked for, the inputs of every node whose
    reverse step reads them, and the outputs of those that read their own; the rest need only their shapes."""
    from cnnx.sources.onnx_grads import ADDED, OUTPUT_ONLY, READS_OUTPUT, SHAPES_ONLY

    kept = {target, graph.input_name, *keep}
    for node in graph.nodes:
        if node.op in READS_OUTPUT:
            kept.update(node.outputs)
        if node.op in OUTPUT_ONLY:
            continue
        if node.op not in SHAPES_ONLY:
            kept.update(node.inputs)
        elif node.op not in ADDED:  # it reads its other inputs' values (a Reshape's shape, a Slice's ends)
            kept.update(node.inputs[1:])
    return kept


def _shape_of(value: np.ndarray) -> np.ndarray:
    """An array of ``value``'s shape and type that holds no memory (its values are not read)."""
    return np.broadcast_to(np.zeros((), value.dtype), value.shape)
