"""A learned network (``learn.Network``) written as an ONNX model: the ops ONNX Runtime, PyTorch's loaders and cnnx
itself run, its class names in the ``labels`` metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.base.files import written_whole
from cnnx.compute import ops
from cnnx.sources.stages import Activation, Conv, GlobalAvgPool, Pool

OPSET = 13
_ACTIVATIONS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "sigmoid": "Sigmoid", "tanh": "Tanh", "abs": "Abs"}
_PAD_MODES = {"reflect": "reflect", "replicate": "edge"}


def write_onnx(network, path: Path) -> None:
    """The network as ``path`` (written whole, or not at all): input ``image`` (1, C, H, W), output
    ``probabilities`` (1, classes)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise CnnxError('writing the model needs the onnx package: pip install "cnnx[onnx]"') from None
    weights = [numpy_helper.from_array(network.mean.reshape(1, -1, 1, 1), "input.mean"),
               numpy_helper.from_array(network.std.reshape(1, -1, 1, 1), "input.std")]
    nodes = [helper.make_node("Sub", ["image", "input.mean"], ["centred"], name="centre"),
             helper.make_node("Div", ["centred", "input.std"], ["standardised"], name="standardise")]
    value = "standardised"
    for k, stage in enumerate(network.stages):
        made = f"stage{k + 1}_{stage.name}"
        if isinstance(stage, Conv):
            value = _conv(k, stage, network, value, made, nodes, weights, helper, numpy_helper)
            continue
        if isinstance(stage, Activation):
            extra = {"alpha": float(stage.slope)} if stage.function == "leaky_relu" else {}
            nodes.append(helper.make_node(_ACTIVATIONS[stage.function], [value], [made], name=made, **extra))
        elif isinstance(stage, GlobalAvgPool):
            nodes.append(helper.make_node("GlobalAveragePool", [value], [made], name=made))
        elif isinstance(stage, Pool):
            options = {"kernel_shape": [stage.size] * 2, "strides": [stage.step] * 2, "pads": [stage.padding] * 4}
            if stage.kind == "avg":
                options["count_include_pad"] = 1  # as ops.avg_pool2d counts the padding
            nodes.append(helper.make_node("MaxPool" if stage.kind == "max" else "AveragePool", [value], [made],
                                          name=made, **options))
        value = made
    weights += [numpy_helper.from_array(network.params["fc.weight"], "fc.weight"),
                numpy_helper.from_array(network.params["fc.bias"], "fc.bias")]
    nodes += [helper.make_node("Flatten", [value], ["features"], name="flatten", axis=1),
              helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["scores"], name="dense", transB=1),
              helper.make_node("Softmax", ["scores"], ["probabilities"], name="softmax", axis=1)]
    C, H, W = network.input_shape
    graph = helper.make_graph(nodes, "cnnx-trained", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                    [1, C, H, W])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                             [1, len(network.classes)])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnnx")
    # A JSON list, so that a class named with a comma ("red, warm") stays one name.
    helper.set_model_props(model, {"labels": json.dumps(list(network.classes))})
    onnx.checker.check_model(model)
    with written_whole(path) as stream:
        stream.write(model.SerializeToString())


def _conv(k, stage, network, value, made, nodes, weights, helper, numpy_helper) -> str:
    weight, bias = network.params[f"conv{k}.weight"], network.params[f"conv{k}.bias"]
    kh, kw = weight.shape[2:]
    (top, bottom), (left, right) = ops.conv_padding(stage.padding, (kh, kw), (stage.dilation,) * 2,
                                                    (stage.stride,) * 2)
    if stage.padding_mode == "circular":
        raise CnnxError(f"stage {k + 1}: ONNX has no circular padding before opset 19; train with another "
                        "padding_mode")
    if stage.padding_mode != "zeros" and (top or bottom or left or right):
        pads = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
        weights.append(numpy_helper.from_array(pads, f"conv{k}.pads"))
        nodes.append(helper.make_node("Pad", [value, f"conv{k}.pads"], [f"{made}_padded"], name=f"{made}_pad",
                                      mode=_PAD_MODES[stage.padding_mode]))
        value, (top, bottom, left, right) = f"{made}_padded", (0, 0, 0, 0)
    weights += [numpy_helper.from_array(weight, f"conv{k}.weight"), numpy_helper.from_array(bias, f"conv{k}.bias")]
    nodes.append(helper.make_node("Conv", [value, f"conv{k}.weight", f"conv{k}.bias"], [made], name=made,
                                  kernel_shape=[kh, kw], strides=[stage.stride] * 2, dilations=[stage.dilation] * 2,
                                  pads=[top, left, bottom, right]))
    return made


