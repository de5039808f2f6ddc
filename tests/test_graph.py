"""ONNX models run on cnnx's own ops: every supported op and the light model-zoo models against ONNX Runtime."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.base.errors import CnnxError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402
from onnx_models import (  # noqa: E402
    LIGHT_MODELS,
    agree,
    block_model,
    ours,
    reference,
    single_op_model,
    with_random_weights,
)

from cnnx.sources.onnx_file import load_graph  # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", LIGHT_MODELS)
@pytest.mark.slow
def test_light_models_agree_with_onnx_runtime_at_every_layer(tmp_path, name):
    """The nine light model-zoo models (with random weights) agree with ONNX Runtime on every value, output too."""
    path = with_random_weights(name, tmp_path)
    graph = load_graph(path, layers="all")
    x = np.random.default_rng(1).random((1, *graph.input_shape_), dtype=np.float32)
    want, got = reference(path, x), ours(graph, x)
    compared = [key for key in want if key in got]
    assert graph.output_name in compared and len(compared) > len(graph.nodes) // 2
    for key in compared:
        assert agree(got[key].astype(np.float32), want[key]), key


@pytest.mark.parametrize("name", LIGHT_MODELS)
@pytest.mark.slow
def test_light_models_as_shipped_are_made_ready_at_load(name):
    """The light models as the onnx package ships them, their weights built by ConstantOfShape: every weight is
    computed once at load (no ConstantOfShape is left to run with the image), batch norms then fold into the
    convolutions, and the output equals ONNX Runtime's within 1e-4 relative."""
    from onnx_models import LIGHT

    path = LIGHT / f"light_{name}.onnx"
    graph = load_graph(path)
    assert graph.computed > 0
    assert not any(node.op in ("ConstantOfShape", "Constant") for node in graph.nodes)
    made_by_conv = {node.outputs[0] for node in graph.nodes if node.op == "Conv"}
    assert not any(node.op == "BatchNormalization" and node.inputs[0] in made_by_conv for node in graph.nodes)
    x = np.random.default_rng(2).random((1, *graph.input_shape_), dtype=np.float32)
    want = reference(path, x, outputs=[graph.output_name])[graph.output_name]
    got = ours(graph, x)[graph.output_name]
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_values_past_the_load_budget_are_computed_with_the_image(monkeypatch):
    """A graph whose constants would take more than the load budget keeps those nodes and computes them with each
    image: the same answer, and memory at load stays within the budget."""
    from onnx_models import LIGHT

    from cnnx.sources import onnx_file

    path = LIGHT / "light_squeezenet.onnx"
    whole = load_graph(path)
    monkeypatch.setattr(onnx_file, "FOLDED_BYTES", 4096)
    frugal = load_graph(path)
    assert frugal.computed < whole.computed and any(n.op == "ConstantOfShape" for n in frugal.nodes)
    assert sum(v.nbytes for v in frugal.constants.values()) < sum(v.nbytes for v in whole.constants.values())
    x = np.random.default_rng(3).random(whole.input_shape_, dtype=np.float32)
    a, b = ([o for *_, o, _ in g.evaluate(x)][-1] for g in (whole, frugal))
    np.testing.assert_allclose(a, b, rtol=1e-5)


CASES = [
    ("Conv", (1, 3, 9, 11), {"w": ("r", (4, 3, 3, 3)), "b": ("r", (4,))}, {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ("Conv", (1, 4, 9, 9), {"w": ("r", (4, 1, 3, 3))}, {"group": 4, "dilations": [2, 2], "pads": [2, 1, 2, 3]}),
    ("Conv", (1, 2, 9, 8), {"w": ("r", (3, 2, 4, 3))}, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("Conv", (1, 6, 8, 8), {"w": ("r", (5, 6, 1, 1))}, {}),
    (
        "BatchNormalization",
        (1, 3, 5, 5),
        {"s": ("r", (3,)), "b": ("r", (3,)), "m": ("r", (3,)), "v": ("p", (3,))},
        {"epsilon": 1e-3},
    ),
    ("Relu", (1, 2, 4, 4), {}, {}),
    ("LeakyRelu", (1, 2, 4, 4), {}, {"alpha": 0.2}),
    ("PRelu", (1, 3, 4, 4), {"slope": ("r", (3, 1, 1))}, {}),
    ("Clip", (1, 2, 4, 4), {"lo": ("c", 0.0), "hi": ("c", 0.5)}, {}),
    ("Sigmoid", (1, 2, 4, 4), {}, {}),
    ("HardSigmoid", (1, 2, 4, 4), {}, {"alpha": 0.3}),
    ("HardSwish", (1, 2, 4, 4), {}, {}),
    ("Tanh", (1, 2, 4, 4), {}, {}),
    ("Add", (1, 2, 4, 4), {"y2": ("r", (2, 1, 1))}, {}),
    ("Sub", (1, 2, 4, 4), {"y2": ("r", (1, 4))}, {}),
    ("Mul", (1, 2, 4, 4), {"y2": ("r", (2, 4, 4))}, {}),
    ("Div", (1, 2, 4, 4), {"y2": ("p", (2, 1, 1))}, {}),
    ("Sum", (1, 2, 4, 4), {"y2": ("r", (1, 2, 4, 4)), "y3": ("r", (1, 2, 4, 4))}, {}),
    ("Concat", (1, 2, 4, 4), {"y2": ("r", (1, 3, 4, 4))}, {"axis": 1}),
    ("MaxPool", (1, 2, 9, 10), {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("MaxPool", (1, 2, 9, 9), {}, {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("MaxPool", (1, 2, 9, 9), {}, {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 2, 2, 1]}),
    ("AveragePool", (1, 2, 9, 10), {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]}),
    (
        "AveragePool",
        (1, 2, 9, 10),
        {},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1, "ceil_mode": 1},
    ),
    ("GlobalAveragePool", (1, 3, 5, 6), {}, {}),
    ("GlobalMaxPool", (1, 3, 5, 6), {}, {}),
    ("ReduceMean", (1, 3, 5, 6), {}, {"axes": [2, 3], "keepdims": 1}),
    ("ReduceMax", (1, 3, 5, 6), {}, {"axes": [2, 3], "keepdims": 0}),
    ("Flatten", (1, 3, 4, 4), {}, {"axis": 1}),
    ("Reshape", (1, 3, 4, 4), {"shape": ("i", [1, 0, -1])}, {}),
    ("Transpose", (1, 3, 4, 5), {}, {"perm": [0, 2, 3, 1]}),
    ("Squeeze", (1, 3, 1, 5), {"axes": ("i", [2])}, {}),
    ("Unsqueeze", (1, 3, 4), {"axes": ("i", [1])}, {}),
    ("Gemm", (2, 6), {"w": ("r", (4, 6)), "c": ("r", (1, 4))}, {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    ("MatMul", (1, 3, 4, 5), {"w": ("r", (5, 2))}, {}),
    ("Softmax", (1, 3, 4, 5), {}, {"axis": 1}),
    ("LRN", (1, 7, 4, 4), {}, {"size": 3, "alpha": 1e-2, "beta": 0.75, "bias": 1.5}),
    ("LRN", (1, 6, 3, 5), {}, {"size": 5, "alpha": 0.5, "beta": 0.6}),
    ("LRN", (1, 3, 4, 4), {}, {"size": 9, "beta": 1.5, "bias": 2.0}),
    ("AveragePool", (1, 3, 9, 8), {}, {"kernel_shape": [5, 2], "pads": [2, 0, 1, 1], "count_include_pad": 1}),
    ("Pad", (1, 2, 4, 4), {"pads": ("i", [0, 0, 1, 2, 0, 0, 2, 1]), "value": ("c", 0.5)}, {"mode": "constant"}),
    ("Pad", (1, 2, 4, 4), {"pads": ("i", [0, 0, 1, 2, 0, 0, 2, 1])}, {"mode": "reflect"}),
    ("Dropout", (1, 2, 4, 4), {}, {}),
    ("Identity", (1, 2, 4, 4), {}, {}),
    ("Erf", (1, 2, 5, 4), {}, {}),
    ("Exp", (1, 2, 4, 4), {}, {}),
    ("Neg", (1, 2, 4, 4), {}, {}),
    ("Slice", (1, 3, 6, 7), {"starts": ("i", [1, 2]), "ends": ("i", [5, -1]), "axes": ("i", [2, 3]),
                             "steps": ("i", [2, 1])}, {}),
    ("Expand", (1, 3, 1, 1), {"shape": ("i", [1, 3, 4, 5])}, {}),
    ("Cast", (1, 2, 4, 4), {}, {"to": 1}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 3, 3)), "b": ("r", (3,))},
     {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 4, 4))}, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 2, 3, 3))}, {"pads": [1, 0, 1, 2], "group": 2}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 1, 3, 3))}, {"strides": [2, 1], "group": 4, "dilations": [1, 2]}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 3, 3))},
     {"strides": [2, 2], "output_shape": [10, 12], "auto_pad": "SAME_UPPER"}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 3, 3))}, {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 3, 3))}, {"strides": [2, 2], "output_shape": [11, 12]}),
    ("ConvTranspose", (1, 4, 5, 6), {"w": ("r", (4, 3, 2, 2)), "b": ("r", (3,))}, {"strides": [3, 3]}),
    ("ReduceSum", (1, 3, 5, 6), {"axes": ("i", [1, 3])}, {"keepdims": 0}),
    ("ReduceSum", (1, 3, 5, 6), {}, {}),
    ("ReduceMin", (1, 3, 5, 6), {}, {"axes": [2, 3], "keepdims": 1}),
    ("ReduceProd", (1, 3, 2, 3), {}, {"axes": [2, 3]}),
    ("ReduceL1", (1, 3, 5, 6), {}, {"axes": [1]}),
    ("ReduceL2", (1, 3, 5, 6), {}, {"axes": [1], "keepdims": 1}),
    ("ReduceSumSquare", (1, 3, 5, 6), {}, {"axes": [2, 3], "keepdims": 0}),
    ("ReduceLogSumExp", (1, 3, 5, 6), {}, {"axes": [1]}),
    ("InstanceNormalization", (1, 3, 5, 6), {"scale": ("r", (3,)), "bias": ("r", (3,))}, {"epsilon": 1e-3}),
    ("DepthToSpace", (1, 8, 3, 4), {}, {"blocksize": 2}),
    ("DepthToSpace", (1, 8, 3, 4), {}, {"blocksize": 2, "mode": "CRD"}),
    ("SpaceToDepth", (1, 2, 6, 4), {}, {"blocksize": 2}),
    ("Tile", (1, 2, 3, 4), {"repeats": ("i", [1, 2, 2, 3])}, {}),
    ("CumSum", (1, 2, 4, 5), {"axis": ("i", 3)}, {}),
    ("CumSum", (1, 2, 4, 5), {"axis": ("i", -2)}, {"exclusive": 1, "reverse": 1}),
    ("CumSum", (1, 2, 4, 5), {"axis": ("i", 1)}, {"exclusive": 1}),
    ("Shrink", (1, 2, 4, 4), {}, {"lambd": 0.4, "bias": 0.1}),
    ("Shrink", (1, 2, 4, 4), {}, {}),
    ("GatherND", (1, 3, 4, 5), {"idx": ("i", [[[0, 1, 2], [0, 2, 3]], [[0, 0, 0], [0, 2, 1]]])}, {}),
    ("GatherND", (1, 3, 4, 5), {"idx": ("i", [[[1], [2]]])}, {"batch_dims": 1}),
    ("GatherND", (1, 3, 4, 5), {"idx": ("i", [[0, -1, 1, -2]])}, {}),
    ("Pad", (1, 2, 4, 4), {"pads": ("i", [0, 0, -1, 2, 0, 0, 1, -2])}, {"mode": "constant"}),
    ("Mean", (1, 2, 4, 4), {"y2": ("r", (2, 1, 1)), "y3": ("r", (1, 2, 4, 4))}, {}),
    ("Sign", (1, 2, 4, 4), {}, {}),
    ("Floor", (1, 2, 4, 4), {}, {}),
    ("Ceil", (1, 2, 4, 4), {}, {}),
    ("Round", (1, 2, 4, 4), {}, {}),
    ("Log", (1, 2, 4, 4), {}, {}),
    ("Reciprocal", (1, 2, 4, 4), {}, {}),
    ("Elu", (1, 2, 4, 4), {}, {"alpha": 0.7}),
    ("Selu", (1, 2, 4, 4), {}, {}),
    ("Selu", (1, 2, 4, 4), {}, {"alpha": 1.5, "gamma": 0.9}),
    ("Celu", (1, 2, 4, 4), {}, {"alpha": 2.0}),
    ("Softplus", (1, 2, 4, 4), {}, {}),
    ("Softsign", (1, 2, 4, 4), {}, {}),
    ("ThresholdedRelu", (1, 2, 4, 4), {}, {"alpha": 0.3}),
    ("Max", (1, 2, 4, 4), {"y2": ("r", (2, 1, 1))}, {}),
    ("Min", (1, 2, 4, 4), {"y2": ("r", (1, 2, 4, 4)), "y3": ("r", (4,))}, {}),
    ("LogSoftmax", (1, 3, 4, 5), {}, {"axis": 1}),
    ("LogSoftmax", (1, 10), {}, {}),
]


def _value(kind: str, spec, rng):
    if kind == "r":
        return rng.standard_normal(spec).astype(np.float32)
    if kind == "p":
        return rng.uniform(0.5, 1.5, spec).astype(np.float32)
    if kind == "i":
        return np.array(spec, np.int64)
    return np.array(spec, np.float32)


@pytest.mark.parametrize("op, shape, inputs, attributes", CASES, ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_each_op_agrees_with_onnx_runtime(op, shape, inputs, attributes):
    """Each supported op, on random inputs with awkward sizes and options, gives ONNX Runtime's numbers."""
    rng = np.random.default_rng(len(op))
    data = single_op_model(op, shape, {k: _value(kind, spec, rng) for k, (kind, spec) in inputs.items()}, attributes)
    x = _image_for(op, shape, rng)
    want = reference(data, x)["y"]
    graph = _graph_of(data, shape)
    got = ours(graph, x)["y"]
    assert agree(np.asarray(got, np.float32), want)


POSITIVE = {"Sqrt", "Pow", "Log", "Reciprocal"}  # ops checked on inputs above zero, where they are defined


def _image_for(op: str, shape, rng) -> np.ndarray:
    """A random input for ``op``: standard normal, or its magnitude plus a half where the op needs it positive."""
    x = rng.standard_normal(shape).astype(np.float32)
    return np.abs(x) + np.float32(0.5) if op in POSITIVE else x


# Ops whose form changed between opsets 9 and 23 (attributes becoming inputs, new defaults), in each form.
OPSET_CASES = [
    ("Clip", 9, (1, 2, 4, 4), {}, {"min": 0.0, "max": 0.5}),
    ("Clip", 21, (1, 2, 4, 4), {"lo": ("c", -0.25), "hi": ("c", 0.5)}, {}),
    ("Squeeze", 11, (1, 3, 1, 5), {}, {"axes": [2]}),
    ("Squeeze", 21, (1, 3, 1, 5), {"axes": ("i", [2])}, {}),
    ("Unsqueeze", 9, (1, 3, 4), {}, {"axes": [1]}),
    ("Unsqueeze", 21, (1, 3, 4), {"axes": ("i", [1])}, {}),
    ("ReduceMean", 13, (1, 3, 5, 6), {}, {"axes": [2, 3], "keepdims": 1}),
    ("ReduceMean", 18, (1, 3, 5, 6), {"axes": ("i", [2, 3])}, {"keepdims": 1}),
    ("ReduceMax", 21, (1, 3, 5, 6), {"axes": ("i", [-1, -2])}, {"keepdims": 0}),
    ("Pad", 9, (1, 2, 4, 4), {}, {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "constant", "value": 0.5}),
    ("Pad", 21, (1, 2, 4, 4), {"pads": ("i", [0, 0, 1, 2, 0, 0, 2, 1])}, {"mode": "edge"}),
    ("Softmax", 11, (1, 3, 4, 5), {}, {"axis": 1}),
    ("Softmax", 21, (1, 3, 4, 5), {}, {}),
    ("Dropout", 9, (1, 2, 4, 4), {}, {}),
    ("Dropout", 21, (1, 2, 4, 4), {}, {}),
    ("MaxPool", 9, (1, 2, 9, 9), {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", 21, (1, 2, 9, 10), {}, {"kernel_shape": [3, 3], "dilations": [2, 2], "ceil_mode": 1}),
    ("Gemm", 9, (1, 6), {"w": ("r", (6, 4)), "c": ("r", (4,))}, {}),
    ("Flatten", 9, (1, 3, 4, 4), {}, {}),
    ("HardSwish", 21, (1, 2, 4, 4), {}, {}),
    ("Gelu", 20, (1, 2, 5, 4), {}, {}),
    ("Gelu", 20, (1, 2, 5, 4), {}, {"approximate": "tanh"}),
    ("LayerNormalization", 17, (1, 3, 4, 5), {"scale": ("r", (5,)), "bias": ("r", (5,))}, {"epsilon": 1e-5}),
    ("LayerNormalization", 17, (1, 3, 4, 5), {"scale": ("r", (3, 4, 5))}, {"axis": 1}),
    ("Slice", 9, (1, 3, 6, 7), {}, {"starts": [1, 0], "ends": [5, 4], "axes": [2, 3]}),
    # Opsets 22 and 23 gave these ops new types (bfloat16, 4-bit) and no new forms: each at the opset that did.
    ("Conv", 22, (1, 2, 6, 7), {"w": ("r", (3, 2, 3, 3))}, {"pads": [1, 1, 1, 1], "strides": [2, 1]}),
    ("MaxPool", 22, (1, 2, 9, 9), {}, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", 22, (1, 2, 9, 10), {}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("GlobalAveragePool", 22, (1, 3, 5, 4), {}, {}),
    ("GlobalMaxPool", 22, (1, 3, 5, 4), {}, {}),
    ("HardSigmoid", 22, (1, 2, 4, 4), {}, {"alpha": 0.25}),
    ("HardSwish", 22, (1, 2, 4, 4), {}, {}),
    ("Dropout", 22, (1, 2, 4, 4), {}, {}),
    ("Pad", 23, (1, 2, 4, 4), {"pads": ("i", [0, 0, 1, 2, 0, 0, 2, 1])}, {"mode": "reflect"}),
    ("Reshape", 23, (1, 3, 4, 4), {"shape": ("i", [1, -1, 8])}, {}),
    ("Squeeze", 23, (1, 3, 1, 5), {"axes": ("i", [2])}, {}),
    ("Unsqueeze", 23, (1, 3, 4), {"axes": ("i", [1])}, {}),
    ("Transpose", 23, (1, 3, 4, 5), {}, {"perm": [0, 2, 3, 1]}),
    ("Flatten", 23, (1, 3, 4, 4), {}, {"axis": 2}),
    ("Identity", 23, (1, 3, 4, 4), {}, {}),
    ("Cast", 23, (1, 3, 4, 4), {}, {"to": 1}),
    ("Mish", 18, (1, 2, 4, 5), {}, {}),
    ("Pad", 19, (1, 2, 4, 5), {"pads": ("i", [0, 0, 1, 2, 0, 0, 2, 3])}, {"mode": "wrap"}),
    ("Pad", 18, (1, 2, 4, 5), {"pads": ("i", [1, 2, 2, 1]), "value": ("c", 0.5), "axes": ("i", [3, 2])},
     {"mode": "constant"}),
    ("Pad", 18, (1, 2, 4, 5), {"pads": ("i", [2, -1]), "value": ("c", 0.0), "axes": ("i", [-1])}, {"mode": "reflect"}),
    ("ReduceSum", 11, (1, 3, 5, 6), {}, {"axes": [2]}),
    ("ReduceL2", 18, (1, 3, 5, 6), {"axes": ("i", [1])}, {}),
    ("ReduceMean", 18, (1, 3, 5, 6), {"axes": ("i", [])}, {"noop_with_empty_axes": 1}),
    ("GroupNormalization", 18, (1, 6, 4, 5), {"scale": ("r", (3,)), "bias": ("r", (3,))}, {"num_groups": 3}),
    ("GroupNormalization", 21, (1, 6, 4, 5), {"scale": ("r", (6,)), "bias": ("r", (6,))},
     {"num_groups": 2, "epsilon": 1e-3}),
    ("LogSoftmax", 11, (1, 3, 2, 5), {}, {"axis": 2}),
    ("LogSoftmax", 13, (1, 3, 2, 5), {}, {}),
]


@pytest.mark.parametrize("op, opset, shape, inputs, attributes", OPSET_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in OPSET_CASES])
def test_ops_in_the_forms_of_opsets_9_to_23(op, opset, shape, inputs, attributes):
    """Each op as an opset from 9 to 23 writes it gives ONNX Runtime's numbers."""
    rng = np.random.default_rng(opset)
    data = single_op_model(op, shape, {k: _value(kind, spec, rng) for k, (kind, spec) in inputs.items()}, attributes,
                           opset=opset)
    x = rng.standard_normal(shape).astype(np.float32)
    assert agree(np.asarray(ours(_graph_of(data, shape), x)["y"], np.float32), reference(data, x)["y"])


def _graph_of(data: bytes, shape):
    """Load a single-op model into the runner's structures, skipping the image-input checks of load_graph."""
    from cnnx.sources.graph import Graph, Node

    model = onnx.load_model_from_string(data)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [Node(n.op_type, n.name, list(n.input), list(n.output), n) for n in model.graph.node]
    return Graph(None, nodes, constants, "x", tuple(shape[1:]), "y", model.opset_import[0].version)


def test_batch_norm_is_folded_into_the_conv_before_it(tmp_path):
    """Conv then BatchNormalization becomes one Conv with scaled weights, and gives the same numbers."""
    rng = np.random.default_rng(3)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    norm = {k: rng.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("s", "b", "m", "v")}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cbn",
        [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", 1, [1, 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in {**weights, **norm}.items()],
    )
    path = tmp_path / "cbn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    loaded = load_graph(path)
    assert loaded.folded == 1 and [n.op for n in loaded.nodes] == ["Conv"]
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    assert agree(ours(loaded, x)["y"], reference(path, x)["y"])


def _saved(tmp_path, nodes, constants, out_shape, name="affine"):
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", 1, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_scales_and_shifts_per_channel_fold_into_the_conv_or_norm_before_them(tmp_path):
    """A model-zoo batch norm written as Mul and Add after a Conv, the constant on either side, Sub and Div, a
    scalar, and a Mul and Add after a batch norm that reads a Relu (a zero among the channels' shifts, as a bias
    often holds): all folded, quietly, ONNX Runtime's numbers kept."""
    rng = np.random.default_rng(5)
    c = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "b0": rng.standard_normal(4).astype(np.float32),
         **{k: rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32) for k in ("m1", "a1", "s1", "d1", "m2", "a2")},
         **{k: rng.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("s", "bb", "mm", "v")},
         "two": np.array(2.0, np.float32)}
    c["a2"][1] = 0
    nodes = [
        helper.make_node("Conv", ["x", "w", "b0"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "m1"], ["c1"]),
        helper.make_node("Add", ["a1", "c1"], ["c2"]),
        helper.make_node("Sub", ["c2", "s1"], ["c3"]),
        helper.make_node("Div", ["c3", "d1"], ["c4"]),
        helper.make_node("Mul", ["two", "c4"], ["c5"]),
        helper.make_node("Relu", ["c5"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "s", "bb", "mm", "v"], ["n"]),
        helper.make_node("Mul", ["n", "m2"], ["n1"]),
        helper.make_node("Add", ["n1", "a2"], ["y"]),
    ]
    path = _saved(tmp_path, nodes, c, [1, 4, 8, 8])
    loaded = load_graph(path)
    assert loaded.folded == 7 and [n.op for n in loaded.nodes] == ["Conv", "Relu", "BatchNormalization"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert agree(ours(loaded, x)["y"], reference(path, x)["y"])


@pytest.mark.parametrize("case", ["two readers", "varies along a row", "divides by zero", "infinite", "the output"])
def test_a_scale_that_is_not_one_per_channel_or_not_alone_stays_as_it_is(tmp_path, case):
    """Nothing folds where it would change a number: a Conv's output read twice, a constant that varies across the
    map, a Div by zero or a scale of infinity (whose NaNs and infinities must stay where they fall), or a Conv
    whose own output is the graph's."""
    rng = np.random.default_rng(6)
    scale = {"varies along a row": rng.uniform(0.5, 1.5, (1, 8)), "divides by zero": np.array([1, 0, 2, 3.0]),
             "infinite": np.array([1, np.inf, 2, 3.0])}.get(case, rng.uniform(0.5, 1.5, 4))
    scale = scale.reshape(scale.shape if scale.ndim == 2 else (4, 1, 1)).astype(np.float32)
    c = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "k": scale}
    op = "Div" if case == "divides by zero" else "Mul"
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node(op, ["c", "k"], ["m"])]
    nodes.append(helper.make_node("Add", ["m", "c"] if case == "two readers" else ["m", "m"],
                                  ["y" if case != "the output" else "z"]))
    path = _saved(tmp_path, nodes, c, [1, 4, 8, 8])
    if case == "the output":  # the Mul's input is what the graph gives
        model = onnx.load(str(path))
        model.graph.output[0].name = "c"
        model.graph.node[1].output[0] = "m"
        onnx.save(model, str(path))
    loaded = load_graph(path)
    assert loaded.folded == 0 and [n.op for n in loaded.nodes][:2] == ["Conv", op][: 1 if case == "the output" else 2]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = reference(path, x)[loaded.output_name]
    with np.errstate(all="ignore"):
        got = ours(loaded, x)[loaded.output_name]
    assert np.array_equal(np.isnan(got), np.isnan(want)) and agree(np.nan_to_num(got), np.nan_to_num(want))


def test_a_model_of_any_size_that_does_not_fit_the_photo_says_so_and_a_larger_size_runs(tmp_path):
    """A model of any size ending in a fixed 8x8 pool, on a 6x6 photo: one line naming the size and --size, exit
    non-zero, nothing written; with --size 16 it runs."""
    from PIL import Image

    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[8, 8])]
    graph = helper.make_graph(
        nodes, "tail", [helper.make_tensor_value_info("x", 1, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    model = tmp_path / "tail.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), np.uint8)).save(tmp_path / "p.png")
    result = invoke("pipeline", tmp_path / "p.png", "--model", model, "-o", tmp_path / "run")
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and "6x6" in lines[0] and "--size" in lines[0], result.output
    assert not (tmp_path / "run").exists()
    assert invoke("pipeline", tmp_path / "p.png", "--model", model, "-o", tmp_path / "run", "--size", "16",
                  "-q").exit_code == 0


@pytest.mark.slow
def test_pipeline_runs_a_model_and_answers_with_labels(tmp_path):
    """cnnx pipeline IMAGE --model net.onnx writes the input, the chosen layers and the output, and answers."""
    path = with_random_weights("squeezenet", tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {k}" for k in range(1000)))
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)).save(image)
    result = invoke(
        "pipeline",
        image,
        "--model",
        path,
        "--labels",
        labels,
        "-o",
        tmp_path / "out",
        "--preprocess",
        "imagenet",
        "--save-raw",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = manifest["stages"]
    assert stages[0]["shape"] == [3, 224, 224] and stages[-1]["operation"] == "softmax"
    assert "thing" in result.stdout and manifest["model"]["answer"]
    # What the model saw, saved, gives ONNX Runtime's output.
    seen = np.load(tmp_path / "out" / "00_input" / "stage.npy")
    final = np.load(tmp_path / "out" / f"{len(stages) - 1:02d}_softmax" / "stage.npy")
    assert agree(final.reshape(1, -1), reference(path, seen[None])[load_graph(path).output_name].reshape(1, -1))


def test_layers_chooses_what_is_written(tmp_path):
    """--layers takes op types, names and patterns; the output is always written last."""
    path = with_random_weights("squeezenet", tmp_path)
    for layers, ops in (("Concat", {"concat"}), ("MaxPool,GlobalAveragePool", {"maxpool", "globalaveragepool"})):
        graph = load_graph(path, layers=layers)
        planned = graph.plan(graph.input_shape_)
        assert {p.name for p in planned[:-1]} == ops and planned[-1].name == "softmax"
    with pytest.raises(CnnxError, match="names no node"):
        load_graph(path, layers="NoSuchThing")


@pytest.mark.parametrize(
    "content, message",
    [(b"", "no nodes|not an ONNX"), (b"\x00\x01garbage" * 50, "not an ONNX"), (None, "not an ONNX")],
)
@pytest.mark.slow
def test_bad_model_files_are_refused_in_one_line(tmp_path, content, message):
    """Empty, random and truncated model files are refused with one line and exit 2."""
    path = tmp_path / "bad.onnx"
    if content is None:  # truncated: the first half of a real model
        content = with_random_weights("bvlc_alexnet", tmp_path).read_bytes()[:1000]
    path.write_bytes(content)
    with pytest.raises(CnnxError, match=message):
        load_graph(path)


def test_unsupported_ops_and_non_image_inputs_are_refused_before_any_work(tmp_path):
    """An op cnnx does not run is named with its node and the list; a model of a 1-D input is refused."""
    node = helper.make_node("Einsum", ["x"], ["y"], name="the_einsum", equation="nchw->nchw")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", 1, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "einsum.onnx"))
    with pytest.raises(CnnxError, match="op Einsum .node the_einsum. is not supported; cnnx runs .*Conv"):
        load_graph(tmp_path / "einsum.onnx")
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", 1, [1, 16])], [helper.make_tensor_value_info("y", 1, [1, 16])]
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "flat.onnx"))
    with pytest.raises(CnnxError, match="image input"):
        load_graph(tmp_path / "flat.onnx")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [8, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [8, 3, 16, 16])])
    onnx.save(helper.make_model(graph), str(tmp_path / "batch.onnx"))
    with pytest.raises(CnnxError, match="takes a batch of 8 images; cnnx runs one image at a time: export the model "
                                        "with a batch of 1 or a dynamic batch"):
        load_graph(tmp_path / "batch.onnx")


def test_external_weights_are_read_only_from_the_models_folder(tmp_path):
    """Weights in a file beside the model are read; a model whose weights point outside its folder is refused."""
    from onnx.external_data_helper import convert_model_to_external_data

    rng = np.random.default_rng(4)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", 1, [1, 4, 6, 6])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    convert_model_to_external_data(model, location="w.bin", size_threshold=0)
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m" / "net.onnx"))
    loaded = load_graph(tmp_path / "m" / "net.onnx")
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    assert agree(ours(loaded, x)["y"], reference(tmp_path / "m" / "net.onnx", x)["y"])
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.bin"
    onnx.save(model, str(tmp_path / "m" / "escape.onnx"), save_as_external_data=False)
    with pytest.raises(CnnxError, match="outside the model's folder"):
        load_graph(tmp_path / "m" / "escape.onnx")


def test_without_the_onnx_package_the_message_says_what_to_install(tmp_path, monkeypatch):
    """--model x.onnx without onnx installed: one line saying pip install "cnnx[onnx]"."""
    import builtins

    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(CnnxError, match=r'pip install "cnnx\[onnx\]"'):
        load_graph(tmp_path / "x.onnx")


def test_explain_conv_of_a_real_layer_equals_onnx_runtime(tmp_path):
    """The sum over every input channel plus the bias, for one value of a real layer, is ONNX Runtime's value."""
    from cnnx.explain import explain_layer

    path = with_random_weights("squeezenet", tmp_path)
    graph = load_graph(path)
    x = np.random.default_rng(5).random(graph.input_shape_, dtype=np.float32)
    node = next(n for n in graph.nodes if n.op == "Conv" and n.name == "n3")
    want = reference(path, x[None], outputs={node.outputs[0]})[node.outputs[0]]
    for channel, row, col in ((2, 5, 7), (0, 0, 0), (15, 54, 54)):
        data = explain_layer(graph, x, "n3", channel, row, col)
        expected = float(want[0, channel, row, col])
        assert len(data.parts) == 64 and data.total == pytest.approx(expected, rel=1e-4, abs=1e-5)
        # The shown channels' products, added by hand, give their sums.
        for part in (p for p in data.parts if p.products is not None):
            assert np.sum(part.products) == pytest.approx(part.total)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), np.uint8)).save(image)
    result = invoke("explain", "conv", image, "--model", path, "--layer", "n3", "--at", "5,7", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["total"] == pytest.approx(shown["map_value"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_filters_of_an_onnx_model_draws_colour_filters(tmp_path):
    """cnnx filters --model net.onnx prints the first layer and draws its filters over RGB as colour pictures."""
    from PIL import Image

    path = with_random_weights("bvlc_alexnet", tmp_path)
    result = invoke("filters", "--model", path, "-o", tmp_path / "k.png")
    assert result.exit_code == 0, result.output
    assert "96 filters over 3 input channels, 11x11" in result.stdout
    with Image.open(tmp_path / "k.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    coloured = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    assert (coloured > 30).mean() > 0.1  # colour pictures, not grey ones


def test_preprocessing_resizes_crops_and_normalises_as_named(tmp_path):
    """imagenet: shorter side to 256, the middle 224 cropped, minus mean over std; caffe: BGR, 0..255 minus means."""
    path = with_random_weights("squeezenet", tmp_path)
    image = np.zeros((3, 100, 200), np.float32)
    image[:, :, 100:] = 1.0  # black left half, white right half
    prepared = load_graph(path, preprocess="imagenet").prepare(image)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    # 100x200 -> 256x512; the middle 224 columns are 144..367, so the edge at 256 falls at column 112.
    np.testing.assert_allclose(prepared[:, :, :110], np.broadcast_to((-mean / std)[:, None, None], (3, 224, 110)),
                               atol=1e-5)
    np.testing.assert_allclose(prepared[:, :, 114:], np.broadcast_to(((1 - mean) / std)[:, None, None], (3, 224, 110)),
                               atol=1e-5)
    caffe = load_graph(path, preprocess="caffe").prepare(np.full((3, 50, 50), 0.5, np.float32))
    np.testing.assert_allclose(caffe[:, 0, 0], 127.5 - np.array([103.939, 116.779, 123.68]), atol=1e-3)
    plain = load_graph(path).prepare(np.full((1, 30, 40), 0.25, np.float32))
    assert plain.shape == (3, 224, 224) and np.allclose(plain, 0.25)


@pytest.mark.slow
def test_the_input_is_prepared_as_the_options_say(tmp_path):
    """--size N, --mean, --std, --order bgr and --scale 255: the model's input (00_input/stage.npy) is the photo's
    shorter side resized to N by Pillow, the middle cut out, channels reversed, times 255, minus the mean, over the
    std, worked out here; the manifest says so in words.  --size stretch resizes to the model's size."""
    from PIL import Image

    path = with_random_weights("squeezenet", tmp_path)
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (90, 150, 3), np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    out = tmp_path / "run"
    result = invoke("pipeline", tmp_path / "p.png", "--model", path, "-o", out, "--save-raw", "--size", "240",
                    "--mean", "100,110,120", "--std", "50", "--order", "bgr", "--scale", "255", "--layers", "Conv")
    assert result.exit_code == 0, result.output
    planes = photo.transpose(2, 0, 1).astype(np.float32) / 255
    width = round(150 * 240 / 90)
    resized = np.stack([np.asarray(Image.fromarray(p).resize((width, 240), Image.Resampling.BILINEAR)) for p in planes])
    top, left = (240 - 224) // 2, (width - 224) // 2
    want = (resized[::-1, top : top + 224, left : left + 224] * 255 - np.array([100, 110, 120])[:, None, None]) / 50
    np.testing.assert_allclose(np.load(out / "00_input" / "stage.npy"), want, rtol=1e-5, atol=1e-4)
    told = json.loads((out / "manifest.json").read_text())["model"]["preparation"]
    assert "shorter side to 240 px" in told and "blue, green, red" in told and "0..255" in told
    page = (out / "index.html").read_text()
    assert "What the model saw" in page and "shorter side to 240 px" in page
    stretched = tmp_path / "stretched"
    assert invoke("pipeline", tmp_path / "p.png", "--model", path, "-o", stretched, "--save-raw", "--size", "stretch",
                  "--layers", "Conv").exit_code == 0
    plain = np.stack([np.asarray(Image.fromarray(p).resize((224, 224), Image.Resampling.BILINEAR)) for p in planes])
    np.testing.assert_allclose(np.load(stretched / "00_input" / "stage.npy"), plain, atol=1e-6)


@pytest.mark.parametrize("option, value", [("--size", "0"), ("--size", "big"), ("--mean", "a,b"), ("--std", "0"),
                                           ("--std", "1,2"), ("--order", "gbr"), ("--scale", "-1"),
                                           ("--mean", "nan")])
def test_a_bad_preparation_is_one_line(tmp_path, option, value):
    """Every bad value of the preparation options: one line naming the option, exit 1, nothing written."""
    from PIL import Image

    path = with_random_weights("squeezenet", tmp_path)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "p.png")
    result = invoke("pipeline", tmp_path / "p.png", "--model", path, "-o", tmp_path / "run", option, value)
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert option.lstrip("-") in result.output.lower() and not (tmp_path / "run").exists()


def test_exporters_blocks_agree_with_onnx_runtime_at_every_layer(tmp_path):
    """Residual, depthwise-separable with ReLU6, squeeze-and-excitation, fire and dense blocks, and the exporters'
    flatten chain, give ONNX Runtime's numbers at every layer; the batch norm is folded."""
    path = block_model(tmp_path / "blocks.onnx")
    graph = load_graph(path, layers="all")
    assert graph.folded == 1
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    want, got = reference(path, x), ours(graph, x)
    compared = [key for key in want if key in got]
    assert "y" in compared and len(compared) >= 25
    for key in compared:
        assert agree(np.asarray(got[key], np.float32), want[key].astype(np.float32)), key


@pytest.mark.slow
def test_a_model_over_the_memory_budget_is_refused_from_its_shapes(tmp_path):
    """--max-memory below what the model's weights and activations need: refused before it runs."""
    from PIL import Image

    path = with_random_weights("vgg19", tmp_path)
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    result = invoke("pipeline", image, "--model", path, "--max-memory", "64M", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "needs about" in result.stderr and not (tmp_path / "out").exists()


EXPLAINED = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sub", "Mul",
             "Div", "Sum", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
             "ReduceMax", "Flatten", "Gemm", "MatMul", "LRN", "Gelu", "LayerNormalization", "Elu", "Selu", "Celu",
             "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Max", "Min", "InstanceNormalization",
             "GroupNormalization", "Resize", "Upsample", "Shrink"}
EXPLAIN_CASES = [(c[0], 17, *c[1:]) for c in CASES if c[0] != "Conv" and c[1][0] == 1] + \
    [c for c in OPSET_CASES if c[0] in ("Gelu", "LayerNormalization", "Mish", "GroupNormalization")]


@pytest.mark.parametrize("op, opset, shape, inputs, attributes", EXPLAIN_CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(EXPLAIN_CASES)])
def test_each_op_explains_a_value_as_onnx_runtime_computes_it(op, opset, shape, inputs, attributes):
    """Any written node's value, clicked in serve: its arithmetic gives ONNX Runtime's value at that place, for
    every op it works out (activations, GELU, sums, pools, global pools, concatenation, Gemm and MatMul, flattening,
    LRN, layer normalisation); other ops say they show the value as computed."""
    from cnnx.explain import explain_node
    from cnnx.sources.graph import stage_shape

    rng = np.random.default_rng(len(op) + 1)
    values = {k: _value(kind, spec, rng) for k, (kind, spec) in inputs.items()}
    data = single_op_model(op, shape, values, attributes, opset)
    x = _image_for(op, shape, rng)
    want = np.asarray(reference(data, x)["y"], np.float64)
    graph = _graph_of(data, shape)
    stage = want.reshape(stage_shape(want.shape))
    for flat in rng.choice(stage.size, min(stage.size, 6), replace=False):
        place = np.unravel_index(flat, stage.shape)
        explained = explain_node(graph, x[0], "y", 1, *(int(p) for p in place))
        assert explained.total == pytest.approx(stage[place], rel=1e-4, abs=1e-5), (op, place, explained.rule)
        assert ("as computed" in explained.rule) == (op not in EXPLAINED), explained.rule


@pytest.mark.slow
def test_a_model_run_stays_within_its_memory_estimate(tmp_path):
    """ResNet-50 (100 MB of weights) on a photo, in a process of its own: its peak memory, less what the same
    process holds once its modules are imported, stays within the estimate --max-memory is checked against
    (with a quarter to spare for the allocator)."""
    import subprocess
    import sys

    from PIL import Image

    from cnnx.app.memory import estimate_memory
    from cnnx.render.draw import Style

    path = with_random_weights("resnet50", tmp_path)
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)).save(photo)
    estimate = estimate_memory(load_graph(path), (3, 300, 400), Style()).peak

    def peak(code: str) -> int:
        measure = f"import resource, sys\n{code}\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        done = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1]) * 1024

    modules = "import cnnx.app.cli, cnnx.sources.graph, cnnx.app.jobs, cnnx.render.maps, onnx"
    base = peak(modules)
    run = peak(f"{modules}\nfrom cnnx.app.cli import main\nsys.argv = ['cnnx', 'pipeline', {str(photo)!r}, '--model', "
               f"{str(path)!r}, '-o', {str(tmp_path / 'run')!r}, '-q']\ntry:\n    main()\nexcept SystemExit:\n    pass")
    assert (tmp_path / "run" / "manifest.json").exists()
    assert run - base <= 1.25 * estimate, (run - base, estimate)


@pytest.mark.slow
def test_each_written_layer_of_a_network_is_drawn_on_its_own_range(tmp_path):
    """A network's written layers are far apart, and their values grow by orders of magnitude with depth: each
    gets its own range (a chain's conv range is carried only to the ReLU and pooling right after it), so no layer
    has more than 1% of its values beyond its colour bar."""
    from PIL import Image

    path = with_random_weights("squeezenet", tmp_path)
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (80, 80, 3), np.uint8)).save(tmp_path / "p.png")
    out = tmp_path / "run"
    assert invoke("pipeline", tmp_path / "p.png", "--model", path, "-o", out).exit_code == 0
    stages = json.loads((out / "manifest.json").read_text())["stages"][1:]
    assert len({(s["maps"][0]["low"], s["maps"][0]["high"]) for s in stages}) == len(stages)
    for stage in stages:
        beyond = np.mean([m["clipped"]["below"] + m["clipped"]["above"] for m in stage["maps"]])
        assert beyond <= 0.01, (stage["description"], beyond)


def test_split_shuffle_and_shape_arithmetic_run_as_onnx_runtime_runs_them():
    """ShuffleNet's and exporters' plumbing: Split into two outputs, a channel shuffle (Reshape, Transpose,
    Reshape), and a branch chosen by Equal/Where on shapes computed with Shape, Cast and Range."""
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Concat", ["b", "a"], ["c"], axis=1),
        helper.make_node("Reshape", ["c", "grouped"], ["g"]),
        helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "flat"], ["s"]),
        helper.make_node("Shape", ["s"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=1),
        helper.make_node("Range", ["zero", "four", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["r_f"], to=1),
        helper.make_node("Equal", ["shape_f", "r_f"], ["same"]),
        helper.make_node("Where", ["same", "shape_f", "r_f"], ["w"]),
        helper.make_node("ReduceMax", ["w"], ["m"], keepdims=1, axes=[0]),
        helper.make_node("Mul", ["s", "m"], ["y"]),
    ]
    constants = {"sizes": np.array([2, 2], np.int64), "grouped": np.array([1, 2, 2, 5, 6], np.int64),
                 "flat": np.array([1, 4, 5, 6], np.int64), "zero": np.array(0, np.int64),
                 "four": np.array(4, np.int64), "one": np.array(1, np.int64)}
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", 1, [1, 4, 5, 6])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 5, 6])],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.random.default_rng(9).standard_normal((1, 4, 5, 6)).astype(np.float32)
    assert agree(np.asarray(ours(_graph_of(data, (1, 4, 5, 6)), x)["y"], np.float32), reference(data, x)["y"])



def _in_precision(source, path, kind: int, *, keep_io: bool = False):
    """``source``'s model with its float32 weights and constants held as ``kind`` (float16, bfloat16 or float64), its
    input and output too unless ``keep_io`` (then Casts to ``kind`` after the input and back before the output, as
    mixed-precision converters write it); and its float32 twin with the same weights rounded through ``kind``."""
    from onnx import TensorProto

    model, twin = onnx.load(str(source)), onnx.load(str(source))
    dtype = helper.tensor_dtype_to_np_dtype(kind)
    for tensor, rounded in zip(model.graph.initializer, twin.graph.initializer, strict=True):
        if tensor.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor).astype(dtype)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
            rounded.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
    graph = model.graph
    if keep_io:
        graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_low"], to=kind))
        for node in graph.node[1:]:
            node.input[:] = ["x_low" if name == "x" else name for name in node.input]
        graph.node[-1].output[0] = "y_low"
        graph.node.append(helper.make_node("Cast", ["y_low"], ["y"], to=TensorProto.FLOAT))
    else:
        for value in (*graph.input, *graph.output):
            value.type.tensor_type.elem_type = kind
    onnx.save(model, str(path))
    onnx.save(twin, str(path.with_suffix(".twin.onnx")))
    return path, path.with_suffix(".twin.onnx")


@pytest.mark.parametrize("kind, keep_io", [(10, False), (10, True), (16, False), (11, False)],
                         ids=["float16", "float16-inside", "bfloat16", "float64"])
def test_a_model_in_another_float_precision_runs_in_float32_and_says_so(tmp_path, kind, keep_io):
    """A model exported in half precision (or in float64) runs as cnnx runs everything, in float32: its values equal
    ONNX Runtime's on the float32 model of the same (rounded) weights, and a note says what was done."""
    path, twin = _in_precision(block_model(tmp_path / "blocks.onnx"), tmp_path / "low.onnx", kind, keep_io=keep_io)
    graph = load_graph(path)
    x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    assert agree(np.asarray(ours(graph, x)["y"], np.float32), reference(twin, x)["y"])
    name = {10: "float16", 16: "bfloat16", 11: "float64"}[kind]
    assert any(f"its {name} values are computed in float32" in note for note in graph.notes)
    result = invoke("pipeline", _photo(tmp_path), "--model", path, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert f"{name} values are computed in float32" in result.output


def _photo(tmp_path):
    from PIL import Image

    Image.fromarray((np.random.default_rng(4).random((20, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    return tmp_path / "p.png"


def test_a_model_that_ends_in_a_map_gives_no_answer_and_why_asks_for_a_stage(tmp_path):
    """A backbone's output is a map, not a row of class scores: no class is named for it, and ``why`` asks for a
    stage to start from rather than calling a pixel of the map a class."""
    w = numpy_helper.from_array(np.random.default_rng(5).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "backbone",
                              [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 16, 16])], [w])
    path = tmp_path / "backbone.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    photo = _photo(tmp_path)
    result = invoke("pipeline", photo, "--model", path, "-o", tmp_path / "o")
    assert result.exit_code == 0 and "class" not in result.output and "probability" not in result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "model" in manifest and "answer" not in manifest["model"]
    result = invoke("why", photo, "--model", path, "-o", tmp_path / "w")
    assert result.exit_code != 0 and "classifies nothing" in result.output and "--stage" in result.output
    assert invoke("why", photo, "--model", path, "--stage", 1, "--channel", 2, "-o", tmp_path / "w").exit_code == 0


def _channels_last_model(path, height, width, *, twin: bool = False):
    """A network taking its image channels last (N, H, W, 3) with a Transpose to channels first, as TensorFlow's
    exporter writes it; or its ``twin`` taking channels first, without the Transpose."""
    rng = np.random.default_rng(6)
    init = [numpy_helper.from_array((rng.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "fc")]
    n = helper.make_node
    nodes = [n("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
             n("GlobalAveragePool", ["r"], ["g"]), n("Flatten", ["g"], ["f"]), n("Gemm", ["f", "fc"], ["l"], transB=1),
             n("Softmax", ["l"], ["y"])]
    if twin:
        image = helper.make_tensor_value_info("t", 1, ["unk__1", 3, height, width])
    else:
        nodes.insert(0, n("Transpose", ["input_1:0"], ["t"], perm=[0, 3, 1, 2]))
        image = helper.make_tensor_value_info("input_1:0", 1, ["unk__1", height, width, 3])
    graph = helper.make_graph(nodes, "channels_last", [image], [helper.make_tensor_value_info("y", 1, ["unk__1", 4])],
                              init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("height, width", [(20, 24), ("h", "w")], ids=["fixed size", "any size"])
def test_a_model_taking_its_image_channels_last_runs_as_onnx_runtime_runs_it(tmp_path, height, width):
    """A model of input (N, H, W, 3), as TensorFlow's exports take it, is given the image channels last: its values
    are ONNX Runtime's on the image so laid out, its input gradient is its channels-first twin's, and the command
    runs it at a fixed size or at the photo's own size."""
    from cnnx.sources.reverse import Target

    path = _channels_last_model(tmp_path / "last.onnx", height, width)
    graph = load_graph(path, layers="all")
    x = np.random.default_rng(7).random((1, 3, 20, 24), dtype=np.float32)
    if graph.any_size:
        graph.any_size((3, 20, 24))
    assert graph.input_shape_ == (3, 20, 24)
    got, want = ours(graph, x), reference(path, x.transpose(0, 2, 3, 1))
    assert agree(np.asarray(got["y"], np.float32), want["y"])
    twin = load_graph(_channels_last_model(tmp_path / "twin.onnx", 20, 24, twin=True))
    gradient = graph.reverse(x[0], Target(label=2)).gradient
    np.testing.assert_allclose(gradient, twin.reverse(x[0], Target(label=2)).gradient, rtol=1e-5, atol=1e-7)
    result = invoke("pipeline", _photo(tmp_path), "--model", path, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["model"]["input"] == [3, 20, 24]  # the photo's own size, for the model of any size


def test_a_class_score_is_read_before_a_final_log_softmax(tmp_path):
    """A classifier ending in LogSoftmax (as PyTorch's MNIST example does): its answer's probabilities are the
    exponentials of its output, and a class's score for ``why`` is the value before the log-softmax, its logit."""
    from cnnx.sources.reverse import Target

    rng = np.random.default_rng(8)
    fc = rng.standard_normal((5, 3 * 8 * 8)).astype(np.float32) * 0.1
    n = helper.make_node
    graph = helper.make_graph(
        [n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "fc"], ["logits"], transB=1), n("LogSoftmax", ["logits"], ["y"])],
        "mnist_like", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", 1, [1, 5])], [numpy_helper.from_array(fc, "fc")])
    path = tmp_path / "log_softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model = load_graph(path)
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    logits = fc.astype(np.float64) @ x.reshape(-1)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    answer = model.answer(reference(path, x)["y"][0])
    assert answer[0] == (f"class {int(np.argmax(logits))}", pytest.approx(probabilities.max(), rel=1e-5))
    back = model.reverse(x[0], Target(label=3))
    assert back.score == pytest.approx(logits[3], rel=1e-5)
    np.testing.assert_allclose(back.gradient.reshape(-1), fc[3], rtol=1e-5)


# Resize in the forms exporters write: (opset, op, attributes, scales, sizes); Upsample before opset 10.
RESIZE_CASES = [
    (13, "Resize", {"mode": "nearest"}, [1, 1, 2, 2], None),
    (13, "Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     [1, 1, 1.7, 0.6], None),
    (13, "Resize", {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, [1, 1, 1.5, 2.5], None),
    (13, "Resize", {"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "align_corners"},
     None, [1, 2, 9, 4]),
    (13, "Resize", {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}, [1, 1, 2, 0.5],
     None),
    (13, "Resize", {"mode": "linear"}, [1, 1, 2, 3], None),
    (13, "Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 9, 7]),
    (13, "Resize", {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [1, 2, 1, 7]),
    (13, "Resize", {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 0.5, 1.7], None),
    (13, "Resize", {"mode": "cubic"}, [1, 1, 1.5, 2], None),
    (13, "Resize", {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1,
                    "coordinate_transformation_mode": "asymmetric"}, [1, 1, 2, 2], None),
    (13, "Resize", {"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 3, 11]),
    (11, "Resize", {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 2, 2], None),
    (11, "Resize", {"mode": "nearest"}, None, [1, 2, 10, 3]),
    (10, "Resize", {"mode": "nearest"}, [1, 1, 1.6, 2], None),
    (10, "Resize", {"mode": "linear"}, [1, 1, 1.5, 1.5], None),
    (9, "Upsample", {"mode": "nearest"}, [1, 1, 2, 2], None),
    (9, "Upsample", {"mode": "linear"}, [1, 1, 2, 3], None),
    (18, "Resize", {"mode": "linear", "axes": [2, 3]}, [2, 1.5], None),
    (19, "Resize", {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, [1, 1, 1.7, 1.7],
     None),
]


def _resize_model(opset, op, attributes, scales, sizes, shape=(1, 2, 5, 6)) -> bytes:
    """One Resize (or Upsample) node in the form its opset writes: scales as its second input before opset 11,
    then (roi, scales, sizes) with the unused ones named '' (or an empty roi and scales at opset 11)."""
    constants = {}
    if opset < 11:
        names = ["x", "scales"]
        constants["scales"] = np.array(scales, np.float32)
    else:
        names = ["x", "roi" if opset == 11 else "", "scales" if scales is not None or opset == 11 else ""]
        constants["roi"] = np.array([], np.float32)
        constants["scales"] = np.array(scales if scales is not None else [], np.float32)
        if sizes is not None:
            names.append("sizes")
            constants["sizes"] = np.array(sizes, np.int64)
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attributes)], "resize",
                              [helper.make_tensor_value_info("x", 1, list(shape))],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(v, k) for k, v in constants.items() if k in names])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


@pytest.mark.parametrize("opset, op, attributes, scales, sizes", RESIZE_CASES,
                         ids=[f"{c[1]}{c[0]}-{c[2].get('mode')}-{k}" for k, c in enumerate(RESIZE_CASES)])
def test_resize_in_every_form_runs_as_onnx_runtime_runs_it_and_goes_back_as_its_transpose(
        opset, op, attributes, scales, sizes):
    """Nearest (each rounding), linear and cubic (its coefficient, with and without the outside), on every
    coordinate transformation, from scales or sizes, in the forms of opsets 9 to 19: ONNX Runtime's numbers; and
    the reverse pass is the forward's transpose (<R v, g> = <v, R'g>, a linear op's exact test)."""
    from cnnx.sources.onnx_grads import GRADS

    data = _resize_model(opset, op, attributes, scales, sizes)
    rng = np.random.default_rng(len(RESIZE_CASES) + opset)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    graph = _graph_of(data, x.shape)
    got = ours(graph, x)["y"]
    want = reference(data, x)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    node = graph.nodes[0]
    given = [x if name == "x" else graph.constants.get(name) if name else None for name in node.inputs]
    g = rng.standard_normal(want.shape).astype(np.float32)
    back = GRADS[node.op](node, given, [got], [g], graph.opset)[0]
    v = rng.standard_normal(x.shape).astype(np.float32)
    forward_v = ours(graph, v)["y"]
    assert float(np.sum(forward_v * g, dtype=np.float64)) == pytest.approx(float(np.sum(v * back, dtype=np.float64)),
                                                                           rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("opset, op, attributes, scales, sizes", RESIZE_CASES,
                         ids=[f"{c[1]}{c[0]}-{c[2].get('mode')}-{k}" for k, c in enumerate(RESIZE_CASES)])
def test_a_resized_value_is_explained_by_the_input_values_it_weighs(opset, op, attributes, scales, sizes):
    """A clicked value of a Resize: the input values around where it lands and their weights, adding up to ONNX
    Runtime's value, every one a value of the input; nearest takes one, with weight 1."""
    from cnnx.explain import explain_node

    data = _resize_model(opset, op, attributes, scales, sizes)
    rng = np.random.default_rng(opset + 5)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    want = reference(data, x)["y"]
    graph = _graph_of(data, x.shape)
    for flat in rng.choice(want.size, 6, replace=False):
        _, c, i, j = (int(k) for k in np.unravel_index(flat, want.shape))
        explained = explain_node(graph, x[0], "y", 1, c, i, j)
        assert explained.total == pytest.approx(float(want[0, c, i, j]), rel=1e-4, abs=1e-5)
        assert all(value in x[0, c] for value in explained.inputs)
        if attributes.get("mode") == "nearest":
            assert len(explained.inputs) == 1 and "weight 1)" in explained.names[0]


@pytest.mark.parametrize("opset, attributes, scales, message", [
    (18, {"mode": "linear", "antialias": 1}, [1, 1, 0.5, 0.5], "without antialiasing"),
    (13, {"mode": "nearest"}, [1, 2, 1, 1], "height and width"),
    (13, {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, [1, 1, 2, 2], "tf_crop_and"),
])
def test_a_resize_cnnx_does_not_run_is_refused_when_the_model_is_read(tmp_path, opset, attributes, scales, message):
    """Antialiasing, resizing the channels and cropping are refused in one line naming the node, before any work."""
    model = onnx.load_model_from_string(_resize_model(opset, "Resize", attributes, scales, None, (1, 3, 5, 6)))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, None))
    onnx.save(model, str(tmp_path / "resize.onnx"))
    with pytest.raises(CnnxError, match=message):
        load_graph(tmp_path / "resize.onnx")


def test_comparisons_choose_as_onnx_runtime_chooses(tmp_path):
    """Greater, Less, GreaterOrEqual, LessOrEqual, Not, And, Or and Xor, as exporters write them to pick between values
    (PyTorch's softplus above its threshold is x itself, its hard shrink outside a band): each choice ONNX
    Runtime's."""
    n = helper.make_node
    constants = {"hi": np.float32(0.3), "lo": np.float32(-0.2), "mid": np.float32(0.1), "two": np.float32(2.0)}
    graph = helper.make_graph(
        [n("Greater", ["x", "hi"], ["above"]), n("LessOrEqual", ["x", "lo"], ["below"]),
         n("Less", ["x", "mid"], ["under_mid"]), n("Not", ["under_mid"], ["over_mid"]),
         n("GreaterOrEqual", ["x", "lo"], ["not_below"]), n("Mul", ["x", "two"], ["double"]), n("Neg", ["x"], ["neg"]),
         n("Where", ["over_mid", "double", "x"], ["a"]), n("Where", ["below", "neg", "a"], ["b"]),
         n("Where", ["above", "x", "b"], ["c"]), n("Or", ["above", "below"], ["outer"]), n("And", ["outer", "over_mid"],
                                                                                        ["high"]),
         n("Xor", ["high", "not_below"], ["flip"]), n("Where", ["flip", "neg", "c"], ["d"]),
         n("Where", ["not_below", "d", "neg"], ["y"])],
        "choices", [helper.make_tensor_value_info("x", 1, [1, 2, 6, 6])], [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    path = tmp_path / "choices.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.random.default_rng(9).uniform(-1, 1, (1, 2, 6, 6)).astype(np.float32)
    graph_ = _graph_of(path.read_bytes(), x.shape)
    np.testing.assert_array_equal(ours(graph_, x)["y"], reference(path, x)["y"])


def test_a_model_quantised_by_onnx_runtime_runs_as_its_quantise_and_dequantise_steps_say(tmp_path):
    """A network quantised by ONNX Runtime's tools (QDQ format: int8 weights per channel, uint8 maps) runs every
    QuantizeLinear and DequantizeLinear as written: ONNX Runtime's values with its graph left as written (its
    fused integer kernels may differ by a step), the weights dequantised once at load; a class's score is the
    logit before the softmax and the quantisation steps after it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.seen = 0

        def get_next(self):
            self.seen += 1
            return {"x": np.random.default_rng(self.seen).random((1, 3, 16, 16), dtype=np.float32)} \
                if self.seen <= 4 else None

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice to pre-process is for its users
    path = tmp_path / "quantised.onnx"
    quantize_static(str(block_model(tmp_path / "blocks.onnx")), str(path), Photos(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    graph = load_graph(path, layers="all")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op for n in graph.nodes}
    assert all(n.inputs[0] not in graph.constants for n in graph.nodes if n.op == "DequantizeLinear")  # weights
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    model = onnx.load(str(path))  # the softmax's input given too: a class's score, its logit
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(helper.make_tensor_value_info(softmax.input[0], 1, None))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(9).random((1, 3, 16, 16), dtype=np.float32)
    answer, logits = session.run(None, {"x": x})
    np.testing.assert_array_equal(ours(graph, x)[graph.output_name], answer)
    from cnnx.sources.reverse import Target

    assert graph.reverse(x[0], Target(label=2), gradient=False).score == pytest.approx(float(logits[0, 2]), abs=1e-6)


def test_quantising_goes_back_straight_through_within_the_integer_range():
    """DequantizeLinear(QuantizeLinear(x)) goes back as PyTorch's fake quantisation does: the gradient passes where
    x fell within the integer range and stops where it was clipped (worked out here from the scale and range)."""
    from cnnx.sources.onnx_grads import GRADS
    from cnnx.sources.onnx_ops import run_node

    scale, point = np.float32(0.05), np.uint8(10)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear",
                                                                                       ["q", "s", "z"], ["y"])],
        "fake_quantise", [helper.make_tensor_value_info("x", 1, [1, 1, 4, 5])],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(point), "z")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    loaded = _graph_of(data, (1, 1, 4, 5))
    x = np.linspace(-1, 13, 20, dtype=np.float32).reshape(1, 1, 4, 5)
    quantise, dequantise = loaded.nodes
    q = run_node(quantise, [x, scale, point], 13)[0]
    g = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    back = GRADS["DequantizeLinear"](dequantise, [q, scale, point], [None], [g], 13)[0]
    back = GRADS["QuantizeLinear"](quantise, [x, scale, point], [q], [back], 13)[0]
    inside = (x / scale + 10 > 0) & (x / scale + 10 < 255)
    np.testing.assert_allclose(back, np.where(inside, g, 0), rtol=1e-6)
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(ours(loaded, x)["y"], reference(data, x)["y"])


def test_the_models_page_names_every_op_cnnx_runs():
    """docs/models.md lists the ops: each one the op table runs is named there."""
    import re
    from pathlib import Path

    from cnnx.sources.onnx_ops import OPS

    page = (Path(__file__).parent.parent / "docs" / "models.md").read_text()
    assert [op for op in OPS if not re.search(rf"\b{op}\b", page)] == []


def test_the_oldest_forms_cnnx_runs_opset_7_run_as_onnx_runtime_runs_them():
    """Opset 7's forms, as the first model-zoo exports wrote them: a batch norm with its ``spatial`` attribute, Clip's
    bounds and Upsample's scales as attributes (nearest and linear): ONNX Runtime's numbers."""
    rng = np.random.default_rng(0)
    constants = {k: rng.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("s", "b", "m", "v")}
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"], spatial=1, epsilon=1e-3),
             helper.make_node("Upsample", ["n"], ["u"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest"),
             helper.make_node("Clip", ["u"], ["c"], min=0.0, max=1.5),
             helper.make_node("Upsample", ["c"], ["y"], scales=[1.0, 1.0, 1.5, 2.0], mode="linear")]
    graph = helper.make_graph(nodes, "opset_7", [helper.make_tensor_value_info("x", 1, [1, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    data = model.SerializeToString()
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    want, got = reference(data, x), ours(_graph_of(data, x.shape), x)
    assert got["y"].shape == (1, 3, 12, 20)
    for key in ("n", "u", "c", "y"):
        assert agree(np.asarray(got[key], np.float32), want[key]), key


@pytest.mark.parametrize("shape, k, attributes", [((1, 2, 4, 5), 3, {}), ((1, 2, 4, 5), 2, {"axis": 1, "largest": 0}),
                                                  ((1, 10), 5, {})])
def test_top_k_chooses_as_onnx_runtime_chooses_and_goes_back_to_the_chosen(shape, k, attributes):
    """TopK's values and indices (the largest or smallest ``k`` along an axis), ONNX Runtime's; its reverse step
    sends each chosen value's gradient to where it was taken from, nowhere else (worked out here from the indices)."""
    from cnnx.sources.onnx_grads import GRADS
    from cnnx.sources.onnx_ops import run_node

    graph = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["y", "i"], **attributes)], "top_k",
                              [helper.make_tensor_value_info("x", 1, list(shape))],
                              [helper.make_tensor_value_info("y", 1, None),
                               helper.make_tensor_value_info("i", 7, None)],
                              [numpy_helper.from_array(np.array([k], np.int64), "k")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    rng = np.random.default_rng(k)
    x = rng.standard_normal(shape).astype(np.float32)
    want, loaded = reference(data, x), _graph_of(data, shape)
    got = ours(loaded, x)
    np.testing.assert_array_equal(got["y"], want["y"])
    np.testing.assert_array_equal(got["i"], want["i"])
    node = loaded.nodes[0]
    g = rng.standard_normal(want["y"].shape).astype(np.float32)
    back = GRADS["TopK"](node, [x, np.array([k])], run_node(node, [x, np.array([k])], 13), [g, None], 13)[0]
    expected = np.zeros_like(x)
    np.put_along_axis(expected, want["i"], g, axis=attributes.get("axis", -1))
    np.testing.assert_array_equal(back, expected)
