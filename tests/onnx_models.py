"""ONNX models for the tests, and how their values are compared: ONNX Runtime's (``reference``) against cnnx's
(``ours``), to float32 agreement (``agree``).

The light model-zoo graphs ship inside the onnx package; the light models
hold their weights as ConstantOfShape nodes (every weight 0.02), so every
channel of a layer is alike; here each of those becomes an initializer of
seeded random numbers scaled as He et al. scale them, so the layers differ and
the numbers stay in range, as in a trained network.
``block_model`` builds a network of the blocks CNN exporters emit.
"""

from pathlib import Path

import numpy as np

onnx = __import__("pytest").importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402  (after the skip)

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))


def with_random_weights(name: str, folder: Path, seed: int = 0) -> Path:
    """The light model ``name`` with its constant weights replaced by seeded random ones, written into ``folder``."""
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            kept.append(node)
            continue
        shape = [int(s) for s in shapes[node.input[0]]]
        output = node.output[0]
        if len(shape) == 4:  # conv weights
            values = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif len(shape) == 2:  # fully connected weights
            values = rng.standard_normal(shape) * np.sqrt(1.0 / shape[1])
        elif (
            "riv" in output or "var" in output or output.endswith(("_s_0", "scale")) or "bn_s" in output
        ):  # batch norm: variances
            values = rng.uniform(0.5, 1.5, shape)
        else:  # biases and means
            values = rng.normal(0, 0.1, shape)
        model.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), output))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def single_op_model(op: str, input_shape, inputs: dict, attributes: dict, opset: int = 17) -> bytes:
    """A model of one node: the image input ``x`` and named constant inputs, for checking one op."""
    names = ["x", *inputs]
    node = helper.make_node(op, names, ["y"], **attributes)
    graph = helper.make_graph(
        [node],
        f"one_{op}",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def reference(path_or_bytes, x: np.ndarray, outputs=None) -> dict:
    """ONNX Runtime's values for every named output (all of them by default)."""
    model = (
        onnx.load_model_from_string(path_or_bytes)
        if isinstance(path_or_bytes, bytes)
        else onnx.load(str(path_or_bytes))
    )
    inferred = onnx.shape_inference.infer_shapes(model)
    produced = {o for n in model.graph.node for o in n.output}
    have = {o.name for o in model.graph.output}
    for info in inferred.graph.value_info:
        if info.name in produced and info.name not in have and (outputs is None or info.name in outputs):
            model.graph.output.append(info)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {name: x}), strict=True))


def ours(graph, x: np.ndarray) -> dict:
    """cnnx's value of every node output, running the graph as the stream does."""
    from cnnx.sources.onnx_ops import run_node

    values = {graph.input_name: x}
    for node in graph.nodes:
        inputs = [values.get(name, graph.constants.get(name)) if name else None for name in node.inputs]
        values.update(zip(node.outputs, run_node(node, inputs, graph.opset), strict=False))
    return values


def agree(got: np.ndarray, want: np.ndarray) -> bool:
    """float32 agreement: rtol 1e-3, atol 1e-4 of the largest magnitude."""
    scale = max(float(np.abs(want).max()), 1e-12)
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-4 * scale)


def block_model(path):
    """A network of the blocks CNN exporters emit: a residual block (conv, batch norm, ReLU, add), a
    depthwise-separable block with ReLU6 (Clip 0..6), squeeze-and-excitation (global pool, 1x1 convs, sigmoid,
    multiply), a fire module (squeeze 1x1, expand 1x1 and 3x3, concat) and a dense block (concat of features),
    then the flatten chain exporters write (Shape, Gather, Unsqueeze, Concat, Reshape) and a classifier."""
    rng = np.random.default_rng(11)
    init = {}

    def weight(name, *shape):
        init[name] = (rng.standard_normal(shape) * np.sqrt(2 / max(1, np.prod(shape[1:])))).astype(np.float32)
        return name

    def const(name, value, dtype=np.float32):
        init[name] = np.asarray(value, dtype)
        return name

    n = helper.make_node
    nodes = [
        n("Conv", ["x", weight("w0", 8, 3, 3, 3), weight("b0", 8)], ["c0"], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c0", const("s0", rng.uniform(0.5, 1.5, 8)), const("t0", rng.normal(0, 0.1, 8)),
                                 const("m0", rng.normal(0, 0.1, 8)), const("v0", rng.uniform(0.5, 1.5, 8))], ["bn0"]),
        n("Relu", ["bn0"], ["r0"]),
        n("Conv", ["r0", weight("w1", 8, 8, 3, 3)], ["c1"], pads=[1, 1, 1, 1]),
        n("Add", ["c1", "r0"], ["res"]),
        n("Relu", ["res"], ["r1"]),
        n("Conv", ["r1", weight("dw", 8, 1, 3, 3)], ["d0"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Clip", ["d0", const("lo", 0.0), const("hi", 6.0)], ["d1"]),
        n("Conv", ["d1", weight("pw", 16, 8, 1, 1)], ["p0"]),
        n("GlobalAveragePool", ["p0"], ["g0"]),
        n("Conv", ["g0", weight("se1", 4, 16, 1, 1)], ["g1"]),
        n("Relu", ["g1"], ["g2"]),
        n("Conv", ["g2", weight("se2", 16, 4, 1, 1)], ["g3"]),
        n("Sigmoid", ["g3"], ["g4"]),
        n("Mul", ["p0", "g4"], ["se"]),
        n("Conv", ["se", weight("sq", 4, 16, 1, 1)], ["f0"]),
        n("Relu", ["f0"], ["f1"]),
        n("Conv", ["f1", weight("e1", 8, 4, 1, 1)], ["f2"]),
        n("Conv", ["f1", weight("e3", 8, 4, 3, 3)], ["f3"], pads=[1, 1, 1, 1]),
        n("Concat", ["f2", "f3"], ["fire"], axis=1),
        n("Relu", ["fire"], ["f4"]),
        n("Conv", ["f4", weight("dn", 8, 16, 3, 3)], ["dn0"], pads=[1, 1, 1, 1]),
        n("Concat", ["f4", "dn0"], ["dense"], axis=1),
        n("MaxPool", ["dense"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Shape", ["mp"], ["sh"]),
        n("Gather", ["sh", const("zero", 0, np.int64)], ["batch"], axis=0),
        n("Unsqueeze", ["batch", const("ax", [0], np.int64)], ["b1"]),
        n("Concat", ["b1", const("minus", [-1], np.int64)], ["flat_shape"], axis=0),
        n("Reshape", ["mp", "flat_shape"], ["flat"]),
        n("Gemm", ["flat", weight("fc", 5, 24 * 4 * 4), weight("fb", 5)], ["logits"], transB=1),
        n("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, 5])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
