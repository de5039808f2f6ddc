"""ONNX models for the tests: the light model-zoo graphs that ship inside the onnx package, with real weights.

The light models hold their weights as ConstantOfShape nodes (every weight
0.02), so every channel of a layer is alike; here each of those becomes an
initializer of seeded random numbers scaled as He et al. scale them, so the
layers differ and the numbers stay in range, as in a trained network.
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
