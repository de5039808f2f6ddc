"""Networks built in PyTorch and exported with torch.onnx.export run in cnnx as PyTorch and ONNX Runtime run them.

``tools/torch_goldens.py`` builds, with seeded weights, a network of every
block CNNs are made of (residual, depthwise-separable with ReLU6, fire,
squeeze-and-excitation, dense, pools with their options) and AlexNet's first
layers with LocalResponseNorm, exports each with the TorchScript exporter and
PyTorch's default torch.export-based one, and stores the ONNX files with
PyTorch's answers in ``tests/goldens/``.  cnnx's values are checked against
PyTorch's answers and against ONNX Runtime at every node; PyTorch itself is
needed only to make the files again (CI checks them where it is installed).
"""

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_models import agree, ours, reference  # noqa: E402

from cnnx.sources.onnx_file import load_graph  # noqa: E402

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="module")
def answers() -> dict[str, np.ndarray]:
    """PyTorch's answers, as tools/torch_goldens.py stored them."""
    return dict(np.load(GOLDENS / "answers.npz"))


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
@pytest.mark.slow
def test_a_pytorch_network_runs_as_pytorch_and_onnx_runtime_run_it(answers, exporter):
    """The exported network's answer is PyTorch's, and every node's value is ONNX Runtime's."""
    path = GOLDENS / f"network-{exporter}.onnx"
    graph = load_graph(path, layers="all")
    x = answers["network_x"]
    got = ours(graph, x)
    assert agree(got[graph.output_name].astype(np.float32), answers["network_y"])
    runtime = reference(path, x)
    compared = [key for key in runtime if key in got]
    assert len(compared) > len(graph.nodes) // 2
    for key in compared:
        assert agree(np.asarray(got[key], np.float32), runtime[key]), key


FAMILY_OPS = {"Split", "Transpose", "HardSwish", "HardSigmoid", "Sigmoid", "LayerNormalization", "MatMul", "Gelu",
              "ReduceMean"}


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_the_newer_families_run_as_pytorch_runs_them(answers, exporter):
    """ShuffleNetV2's split and channel shuffle, MobileNetV3's and EfficientNet's inverted residuals, RegNet's grouped
    convolutions and ConvNeXt's block (7x7 depthwise, channels last, LayerNorm, GELU, layer scale), as either
    exporter writes them: PyTorch's answer, and ONNX Runtime's value at every node."""
    path = GOLDENS / f"families-{exporter}.onnx"
    graph = load_graph(path, layers="all")
    written = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert len(written & FAMILY_OPS) >= 5, written
    got = ours(graph, answers["families_x"])
    assert agree(np.asarray(got[graph.output_name], np.float32), answers["families_y"])
    runtime = reference(path, answers["families_x"])
    for key in [key for key in runtime if key in got]:
        assert agree(np.asarray(got[key], np.float32), runtime[key]), key


@pytest.mark.parametrize("name, exporter", [("network", "torch.export"), ("families", "torchscript")])
def test_a_pytorch_network_declared_at_opset_23_runs_as_pytorch_runs_it(tmp_path, answers, name, exporter):
    """PyTorch writes up to opset 23, whose ops take the forms of opset 20 (only new types came): the stored exports
    declared at 23 give PyTorch's answer and ONNX Runtime's value at every node."""
    model = onnx.load(str(GOLDENS / f"{name}-{exporter}.onnx"))
    model.opset_import[0].version = 23
    path = tmp_path / "at-23.onnx"
    onnx.save(model, str(path))
    graph = load_graph(path, layers="all")
    assert graph.opset == 23
    x = answers[f"{name}_x"]
    got = ours(graph, x)
    assert agree(np.asarray(got[graph.output_name], np.float32), answers[f"{name}_y"])
    runtime = reference(path, x)
    for key in [key for key in runtime if key in got]:
        assert agree(np.asarray(got[key], np.float32), runtime[key]), key


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_a_network_exported_for_any_size_runs_at_the_size_it_is_given(answers, exporter):
    """Exported with dynamic height and width (and batch), the network is made ready at each size it is given and
    answers as PyTorch does at its own size and at another, odd one."""
    graph = load_graph(GOLDENS / f"families-any-size-{exporter}.onnx")
    assert graph.any_size is not None
    for x, y in (("families_x", "families_y"), ("families_other_x", "families_other_y"), ("families_x", "families_y")):
        image = answers[x][0]
        assert graph.input_shape(image.shape) == image.shape
        assert agree(np.asarray(ours(graph, image[None])[graph.output_name], np.float32), answers[y])
    assert "the image's own size: the model takes any size" in graph.preparation_text()
    import pickle

    copy = pickle.loads(pickle.dumps(graph))  # as a batch sends it to its worker processes
    image = answers["families_other_x"][0]
    copy.input_shape(image.shape)
    assert agree(np.asarray(ours(copy, image[None])[copy.output_name], np.float32), answers["families_other_y"])


@pytest.mark.slow
def test_a_network_of_any_size_through_the_command_keeps_the_photo_size_or_takes_size(tmp_path):
    """cnnx pipeline on a model of any size: the input is the photo's own size, or its shorter side at --size; the
    manifest says which and why, and --dry-run's plan agrees with the run."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from cnnx.app.cli import app

    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 130, 3), np.uint8)).save(photo)
    model = str(GOLDENS / "families-any-size-torchscript.onnx")
    for extra, size, why in (([], [90, 130], "the image's own size"), (["--size", "64"], [64, 92], "--size")):
        out = tmp_path / f"run{len(extra)}"
        result = CliRunner().invoke(app, ["pipeline", str(photo), "--model", model, "-o", str(out), "-q",
                                          "--save-raw", *extra])
        assert result.exit_code == 0, result.output
        source = json.loads((out / "manifest.json").read_text())["model"]
        assert source["input"] == [3, *size] and why in source["input_size"]
        assert np.load(out / "00_input" / "stage.npy").shape == (3, *size)
        assert not any("/blocks.5/one/" in layer for layer in source["written"])  # channels last: no map


@pytest.mark.slow
def test_a_pytorch_network_through_the_command(tmp_path, answers):
    """cnnx pipeline on the exported network: every layer written, the answer the model's top class."""
    from PIL import Image
    from typer.testing import CliRunner

    from cnnx.app.cli import app

    photo = tmp_path / "p.png"
    Image.fromarray(answers["photo"]).save(photo)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pipeline", str(photo), "--model", str(GOLDENS / "network-torchscript.onnx"),
                                      "-o", str(out), "--save-raw", "--layers", "all"])
    assert result.exit_code == 0, result.output
    first = np.load(out / "00_input" / "stage.npy")
    assert np.array_equal(first, answers["photo"].transpose(2, 0, 1) / np.float32(255))  # the input PyTorch saw
    want = answers["photo_y"].ravel()
    last = sorted(p for p in out.iterdir() if p.is_dir())[-1]
    assert agree(np.load(last / "stage.npy").ravel(), want)
    assert f"class {int(want.argmax())}" in result.output


def test_a_pytorch_local_response_norm_written_as_its_arithmetic_runs_as_pytorch_runs_it(answers):
    """AlexNet's first layers with PyTorch's LocalResponseNorm, which its default exporter writes as its arithmetic
    (the squares pooled over neighbouring channels as a 3-D average pool, a power, a division): PyTorch's values."""
    graph = load_graph(GOLDENS / "lrn-torch.export.onnx", layers="all")
    assert "AveragePool" in {n.op for n in graph.nodes} and "Pow" in {n.op for n in graph.nodes}
    assert agree(np.asarray(ours(graph, answers["stem_x"])[graph.output_name], np.float32), answers["stem_y"])


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_a_pytorch_local_response_norm_runs_as_pytorch_runs_it_from_either_exporter(answers, exporter):
    """The TorchScript exporter writes LocalResponseNorm with an If on the input's rank and pads computed from
    shapes (ConstantOfShape, Slice, Cast): the If is decided when the model is read and replaced by its branch,
    and the layers give PyTorch's values, as the default exporter's do."""
    graph = load_graph(GOLDENS / f"lrn-{exporter}.onnx", layers="all")
    assert "If" not in {n.op for n in graph.nodes}
    assert agree(np.asarray(ours(graph, answers["stem_x"])[graph.output_name], np.float32), answers["stem_y"])


def test_an_if_on_the_images_values_is_refused_naming_the_node(tmp_path):
    """An If whose condition only the image's values give cannot be decided before the image: one line naming it."""
    from onnx import TensorProto, helper

    from cnnx.base.errors import CnnxError

    branch = {name: helper.make_graph([helper.make_node(op, ["x"], [f"{name}_out"])], name, [],
                                      [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
              for name, op in (("then", "Relu"), ("else", "Identity"))}
    nodes = [helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
             helper.make_node("Equal", ["top", "one"], ["same"]),
             helper.make_node("If", ["same"], ["y"], name="on_values", then_branch=branch["then"],
                              else_branch=branch["else"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    path = tmp_path / "branch.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(CnnxError, match=r"node on_values \(If\) branches on values only the image gives"):
        load_graph(path)


@pytest.mark.slow
def test_the_goldens_tool_checks_what_it_wrote():
    """Where PyTorch is installed, exporting again gives the stored answers (tools/torch_goldens.py --check)."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    tool = Path(__file__).parent.parent / "tools" / "torch_goldens.py"
    done = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _runs_as_pytorch(answers, name: str, exporter: str):
    """The golden network ``name`` as ``exporter`` wrote it: PyTorch's answer, ONNX Runtime's value at every node,
    and torch.autograd's input gradient of class 3's logit; the graph, made ready."""
    from cnnx.sources.reverse import Target

    path = GOLDENS / f"{name}-{exporter}.onnx"
    graph = load_graph(path, layers="all")
    x = answers[f"{name}_x"]
    got = ours(graph, x)
    assert agree(np.asarray(got[graph.output_name], np.float32), answers[f"{name}_y"])
    runtime = reference(path, x)
    for key in [key for key in runtime if key in got]:
        assert agree(np.asarray(got[key], np.float32), np.asarray(runtime[key], np.float32)), key
    assert agree(graph.reverse(x[0], Target(label=3)).gradient, answers[f"{name}_logit_grad"][0])
    return graph


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_an_encoder_decoder_and_the_rarer_activations_run_as_pytorch_runs_them(answers, exporter):
    """Upsampling to a skip connection's size (bilinear), by a factor (nearest) and bicubic with aligned corners;
    ELU, SELU, CELU, Mish, Softplus (with the threshold torch.export writes as a comparison), Softsign, an
    elementwise maximum and a final log-softmax: PyTorch's answer, ONNX Runtime's value at every node, and
    torch.autograd's input gradient of the logit before the log-softmax."""
    graph = _runs_as_pytorch(answers, "decoder", exporter)
    assert {"Resize", "LogSoftmax", "Selu", "Celu"} <= {n.op for n in graph.nodes}


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_the_rarer_blocks_run_as_pytorch_runs_them(answers, exporter):
    """Circular and reflected padding, pixel unshuffle and shuffle, hard and soft shrink, power-average pooling,
    rolls and flips, a gated linear unit, a per-map standardisation and a maximum over channels, as either exporter
    writes them: PyTorch's answer and input gradient, and ONNX Runtime's value at every node."""
    graph = _runs_as_pytorch(answers, "rarer", exporter)
    assert {"Pad", "DepthToSpace", "Sign"} <= {n.op for n in graph.nodes}
