"""Model files from strangers: nothing outside the model's folder is read, and a malformed graph is one line.

Each case is a small ONNX graph built here with a flaw an attacker or a
broken exporter could give it.  Through the real command line, every one
ends in a one-line error naming what is wrong (exit 2) or in a run that says
what it met, never a traceback, and never with another file's bytes.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnx.app.cli import app

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SECRET = b"secret-key-material-0123456789ab"  # 32 bytes: eight float32 values, if anything ever read it


def _model(nodes, initializers=(), *, output=("y", [1, 4, 6, 6]), opset=13, inputs=None, **graph_kw):
    graph = helper.make_graph(
        nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])] if output else [],
        list(initializers), **graph_kw,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _external(tensor, location: str, offset: int | None = None, length: int | None = None):
    """``tensor`` with its bytes said to live in ``location``."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return tensor


def _constant_model(location: str, **where):
    """The attack as found: a Constant whose value is 'stored' in another file, added to the image."""
    value = _external(numpy_helper.from_array(np.zeros((1, 1, 1, 8), np.float32), "c"), location, **where)
    nodes = [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["x", "c"], ["y"])]
    return _model(nodes, output=("y", [1, 3, 8, 8]))


def _conv_weights(location: str, **where):
    weights = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_external(weights, location, **where)])


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """A working folder holding a secret and an image, and a folder for models beside it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(SECRET)
    (home / "models").mkdir()
    from PIL import Image

    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).convert("RGB").save(home / "photo.png")
    monkeypatch.chdir(home)
    return home


def _run(args):
    return CliRunner().invoke(app, args)


def _refused(result, *words):
    """A one-line error (exit 2) with every word in it, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnx: error:"), result.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in result.output


EXTERNAL_CASES = {
    "constant from the working folder": lambda home: _constant_model(".ssh/id_ed25519"),
    "constant by absolute path": lambda home: _constant_model(str(home / ".ssh" / "id_ed25519")),
    "weights up and out": lambda home: _conv_weights("../.ssh/id_ed25519"),
    "weights by a Windows path": lambda home: _conv_weights("..\\.ssh\\id_ed25519"),
    "weights through a link out": lambda home: _conv_weights("link/id_ed25519"),
    "weights past the file's end": lambda home: _conv_weights("w.bin", offset=100, length=432),
    "weights longer than the file": lambda home: _conv_weights("w.bin", length=1 << 20),
    "weights from a folder": lambda home: _conv_weights("sub"),
    "weights from a pipe": lambda home: _conv_weights("fifo"),
    "weights with no file named": lambda home: _conv_weights(""),
    "a tensor attribute of another op": lambda home: _model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("ConstantOfShape", ["s"], ["c"], value=_external(
             numpy_helper.from_array(np.zeros(1, np.float32), "v"), "../.ssh/id_ed25519")),
         helper.make_node("Add", ["x", "c"], ["y"])], output=("y", [1, 3, 8, 8])),
}


@pytest.mark.parametrize("case", sorted(EXTERNAL_CASES))
def test_a_model_reads_nothing_outside_its_folder(scene, case):
    """Every tensor stored 'elsewhere' is read only from a regular file inside the model's folder, within its end."""
    models = scene / "models"
    (models / "w.bin").write_bytes(np.ones(108, np.float32).tobytes())
    (models / "sub").mkdir(exist_ok=True)
    if not (models / "link").exists():
        (models / "link").symlink_to(scene / ".ssh")
    if not (models / "fifo").exists():
        os.mkfifo(models / "fifo")
    path = models / "m.onnx"
    onnx.save(EXTERNAL_CASES[case](scene), str(path))
    for command in (["pipeline", "photo.png", "--model", str(path), "-o", "out", "--save-raw"],
                    ["filters", "--model", str(path)]):
        result = _run(command)
        _refused(result, "m.onnx")
        assert not Path("out").exists()
    for written in scene.rglob("*.npy"):
        assert SECRET not in written.read_bytes()


def test_weights_beside_the_model_are_read_from_anywhere(scene, tmp_path):
    """The model's own weight file is read whatever the working folder: against the model's folder, not the cwd."""
    models = scene / "models"
    (models / "w.bin").write_bytes(np.full(108, 0.5, np.float32).tobytes())
    onnx.save(_conv_weights("w.bin"), str(models / "m.onnx"))
    os.chdir(tmp_path)
    result = _run(["pipeline", str(scene / "photo.png"), "--model", str(models / "m.onnx"), "-o", "out",
                   "--save-raw", "--layers", "all"])
    assert result.exit_code == 0, result.output
    conv = np.load(next(Path("out").glob("01_*/stage.npy")))
    assert conv.shape == (4, 6, 6) and np.all(conv > 0)


def _tensor(name, dtype, dims, *, raw=b"", floats=()):
    """A tensor as a file may hold it, past onnx.helper's own checks."""
    tensor = TensorProto(name=name, data_type=dtype, dims=dims, raw_data=raw)
    tensor.float_data.extend(floats)
    return tensor


def _flatten(axis):
    return _model([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], output=("y", [1, 192]))


def _untyped(model):
    """The first attribute's kind left unset, as a file may hold it."""
    model.graph.node[0].attribute[0].type = 0
    return model


def _twice(model):
    """The first attribute given again, as a file may hold it."""
    node = model.graph.node[0]
    node.attribute.append(node.attribute[0])
    return model


def _branch(**attributes):
    """An If branch: a 1x1 max pool of the image, with ``attributes`` on it."""
    pool = helper.make_node("MaxPool", ["x"], ["z"], **{"kernel_shape": [1, 1], **attributes})
    return helper.make_graph([pool], "branch", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])


MALFORMED = {
    "an output no node makes": (lambda: _model([helper.make_node("Relu", ["x"], ["r"])]), ["'y'", "no node"]),
    "no outputs": (lambda: _model([helper.make_node("Relu", ["x"], ["y"])], output=None), ["no output"]),
    "a node reading nothing": (lambda: _model([helper.make_node("Add", ["x", "ghost"], ["y"])]), ["'ghost'"]),
    "dims beyond the bytes": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_tensor("w", TensorProto.FLOAT, [100000, 100000, 3, 3], raw=np.ones(9, np.float32).tobytes())]),
        ["'w'", "holds 9"]),
    "typed values short of the dims": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], floats=[1.0] * 10)]), ["'w'", "holds 10"]),
    "a negative dimension": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_tensor("w", TensorProto.FLOAT, [-4, 3, 3, 3])]), ["'w'", "negative"]),
    "strings for weights": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [helper.make_tensor("w", TensorProto.STRING, [1], [b"a"])]), ["'w'", "STRING"]),
    "Flatten axis 9": (lambda: _flatten(9), ["Flatten"]),
    "Flatten axis -9": (lambda: _flatten(-9), ["Flatten"]),
    "Concat axis 7": (lambda: _model([helper.make_node("Concat", ["x", "x"], ["y"], axis=7)]), ["Concat"]),
    "Softmax axis 5": (lambda: _model([helper.make_node("Softmax", ["x"], ["y"], axis=5)]), ["Softmax"]),
    "Transpose with a bad perm": (lambda: _model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 0, 1, 2])]),
                                  ["Transpose"]),
    "Reshape to a shape of another size": (lambda: _model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], [numpy_helper.from_array(np.array([5, 7], np.int64), "s")]),
        ["Reshape"]),
    "Gather past the end": (lambda: _model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [numpy_helper.from_array(np.array([9], np.int64),
                                                                                          "i")]), ["Gather"]),
    "a conv of wrong channels": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])], [numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32),
                                                                               "w")]), ["Conv"]),
    "a group given as a string": (lambda: _model([helper.make_node("Conv", ["x", "w"], ["y"], group="3")],
                                                 [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")]),
                                  ["Conv", "group", "string", "int"]),
    "an attribute the op does not take": (lambda: _model([helper.make_node("Relu", ["x"], ["y"], axis=1)]),
                                          ["Relu", "no attribute 'axis'"]),
    "an attribute of no kind": (lambda: _untyped(_model([helper.make_node("Flatten", ["x"], ["y"], axis=1)],
                                                        output=("y", [1, 192]))), ["Flatten", "axis", "undefined"]),
    "a wrong kind in a branch": (lambda: _model([helper.make_node(
        "If", ["c"], ["y"], then_branch=_branch(kernel_shape="3"), else_branch=_branch())],
        [numpy_helper.from_array(np.array(True), "c")]), ["MaxPool", "kernel_shape", "string"]),
    "a batch norm with one input": (lambda: _model([helper.make_node("BatchNormalization", ["x"], ["y"])]),
                                    ["BatchNormalization", "has 1 inputs", "takes 5"]),
    "an attribute given twice": (lambda: _twice(_model([helper.make_node("Flatten", ["x"], ["y"], axis=1)],
                                                       output=("y", [1, 192]))), ["axis", "given 2 times"]),
    "a max pool without its window": (lambda: _model([helper.make_node("MaxPool", ["x"], ["y"])]),
                                      ["MaxPool", "lacks its kernel_shape"]),
    "a split into fewer parts than outputs": (lambda: _model(
        [helper.make_node("Split", ["x"], ["y", "z"], axis=1, num_outputs=1)], opset=18),
        ["Split", "1 parts", "2 outputs"]),
    "an op cnnx does not run, in a branch": (lambda: _model([helper.make_node(
        "If", ["c"], ["y"], then_branch=helper.make_graph(
            [helper.make_node("Unique", ["x"], ["z"])], "branch", [],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]), else_branch=_branch())],
        [numpy_helper.from_array(np.array(True), "c")]), ["Unique", "not supported"]),
    "a dilation that leaves a negative width": (lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], dilations=[1, 10**9])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")], output=("y", None)),
        ["'y'", "comes out of size", "does not fit"]),
    "a resize by zero, an empty map": (lambda: _model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")],
        [numpy_helper.from_array(np.array([1, 1, 0, 2], np.float32), "s")], output=("y", None)),
        ["'y'", "comes out of size", "0"]),
    "a slice past the end, an empty map": (lambda: _model(
        [helper.make_node("Slice", ["x", "b", "e", "a"], ["y"])],
        [numpy_helper.from_array(np.array([500], np.int64), k) for k in ("b", "e")] +
        [numpy_helper.from_array(np.array([3], np.int64), "a")], output=("y", None)), ["'y'", "comes out of size"]),
    "a resize by a negative or infinite scale": (lambda: _model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")],
        [numpy_helper.from_array(np.array([1, 1, np.inf, 2], np.float32), "s")], output=("y", None)),
        ["'y'", "size"]),
    "an opset from the future": (lambda: _model([helper.make_node("Relu", ["x"], ["y"])], opset=99),
                                 ["opset 99", "7 to 23"]),
    "an opset from the past": (lambda: _model([helper.make_node("Relu", ["x"], ["y"])], opset=1), ["opset 1"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_graph_is_one_line_naming_the_fault(scene, case):
    """Each flaw is refused on load or on its node with one line that names it; nothing is written."""
    make, words = MALFORMED[case]
    path = scene / "models" / "bad.onnx"
    path.write_bytes(make().SerializeToString())
    result = _run(["pipeline", "photo.png", "--model", str(path), "-o", "out", "--layers", "all"])
    _refused(result, "bad.onnx", *words)
    assert not Path("out").exists()
    dry = _run(["pipeline", "photo.png", "--model", str(path), "--dry-run"])
    assert dry.exit_code == 2 and "Traceback" not in dry.output


def test_a_node_that_makes_a_negative_size_is_refused_at_load(scene):
    """A 3x3 max pool over a map one pixel wide: shape inference gives it width -1, and the load says so (before,
    it passed and failed when it ran)."""
    path = scene / "models" / "thin.onnx"
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[3, 3])]
    thin = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 1])]
    onnx.save(_model(nodes, inputs=thin, output=("y", None)), str(path))
    _refused(_run(["pipeline", "photo.png", "--model", str(path), "-o", "out"]), "thin.onnx", "[1, 3, 6, -1]")
    assert not Path("out").exists()


@pytest.mark.parametrize("command, way", [
    (["pipeline", "photo.png", "-o", "out"], "forward"),
    (["why", "photo.png", "--stage", "2", "--method", "gradient", "-o", "out"], "forward"),
    (["why", "photo.png", "--stage", "2", "--method", "gradient", "-o", "out"], "backward"),
    (["features", "--stage", "2", "--steps", "2", "-o", "out"], "backward"),
])
def test_a_node_that_cannot_run_is_one_line_forward_or_backward(scene, monkeypatch, command, way):
    """An op that fails as it runs (here Relu, made to), on the way to a stage, or back through it in a reverse
    pass (why, features): one line names the node, nothing is written."""
    from cnnx.sources import onnx_grads, onnx_ops

    def fails(*arguments):
        raise ValueError("operands could not be broadcast together")

    if way == "forward":
        monkeypatch.setitem(onnx_ops.OPS, "Relu", onnx_ops.Op(fails))
    else:
        monkeypatch.setitem(onnx_grads.GRADS, "Relu", fails)
    path = scene / "models" / "m.onnx"
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[3, 3])]
    onnx.save(_model(nodes, output=("y", None)), str(path))
    _refused(_run([*command, "--model", str(path), "--layers", "all"]), "m.onnx", "node relu (Relu) cannot run",
             "could not be broadcast")
    assert not Path("out").exists()


def test_a_value_of_a_batch_of_two_is_written_with_its_batch_folded_into_its_maps(scene):
    """A stranger's graph may stack the image with itself (a batch of two): its layer is written as 2 x 3 maps
    (it was a ValueError traceback), and explained."""
    path = scene / "models" / "two.onnx"
    nodes = [helper.make_node("Concat", ["x", "x"], ["pair"], name="pair", axis=0),
             helper.make_node("Relu", ["pair"], ["y"], name="relu")]
    onnx.save(_model(nodes, output=("y", [2, 3, 8, 8])), str(path))
    result = _run(["pipeline", "photo.png", "--model", str(path), "-o", "out", "--layers", "relu"])
    assert result.exit_code == 0, result.output
    assert len(list(Path("out").glob("01_*/ch*.png"))) == 6
    explained = _run(["explain", "value", "photo.png", "--model", str(path), "--layers", "relu", "--stage", "1",
                      "--channel", "4", "--at", "2,3"])
    assert explained.exit_code == 0, explained.output


def test_a_conv_with_no_channels_is_refused_by_filters(scene):
    """cnnx filters --model on a conv of 0 output channels: one line, not a crash."""
    path = scene / "models" / "empty.onnx"
    weights = numpy_helper.from_array(np.ones((0, 3, 3, 3), np.float32), "w")
    onnx.save(_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c0")], [weights],
                     output=("y", [1, 0, 6, 6])), str(path))
    result = _run(["filters", "--model", str(path)])
    _refused(result, "empty.onnx")


def _nan_model(path: Path) -> None:
    weights = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    weights[1, 0, 1, 1] = np.nan
    weights[2, 2, 0, 0] = np.inf
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"), helper.make_node("Relu", ["c"], ["y"],
                                                                                            name="relu1")]
    onnx.save(_model(nodes, [numpy_helper.from_array(weights, "w")]), str(path))


def test_weights_that_are_not_finite_run_and_are_named(scene):
    """NaN or infinite weights: every command runs, says which weights are not finite, and never crashes."""
    path = scene / "models" / "nan.onnx"
    _nan_model(path)
    model = ["--model", str(path)]
    runs = [
        ["pipeline", "photo.png", *model, "-o", "out", "--save-raw", "--layers", "all"],
        ["pipeline", "photo.png", *model, "--dry-run"],
        ["explain", "conv", "photo.png", *model, "--layer", "conv1", "--channel", "1", "--at", "2,2"],
        ["explain", "value", "photo.png", *model, "--stage", "1", "--channel", "1", "--at", "2,2", "--layers", "all"],
        ["filters", *model],
    ]
    for args in runs:
        result = _run(args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output and "RuntimeWarning" not in result.output
        assert "not finite" in result.stderr and "'w'" in result.stderr, (args, result.stderr)


@pytest.mark.parametrize("labels", ["a\x1b[31mred,b\x07,c\r,d", '["a\\u001b[31mred", "b\\u0007", "c\\r", "d"]'])
def test_names_from_a_model_reach_the_terminal_and_page_as_text(scene, labels):
    """Node names, labels (separated by commas, or a JSON list as cnnx train writes) and metadata holding ESC, BEL
    and CR are printed escaped, never raw."""
    hostile = "conv\x1b[2J\x07\rX\u202e"
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=hostile),
             helper.make_node("Relu", ["c"], ["r"], name="relu\x1b]0;owned\x07"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    model = _model(nodes, [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")], output=("y", [1, 4]))
    model.metadata_props.add(key="labels", value=labels)
    path = scene / "models" / "names.onnx"
    onnx.save(model, str(path))
    result = _run(["pipeline", "photo.png", "--model", str(path), "-o", "out", "--layers", "all"])
    assert result.exit_code == 0, result.output
    page = (Path("out") / "index.html").read_text() + (Path("out") / "manifest.json").read_text()
    for text in (result.stdout, result.stderr, page):
        assert not any(c in text for c in "\x1b\x07\r\u202e"), repr(text[:400])
    assert "\\x1b" in result.stdout


def _sized_at_run_time(path: Path, factor=(1, 24, 4, 4)) -> int:
    """A map sized by Shape -> Mul -> ConstantOfShape, as exporters write one; returns the bytes of that map."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Mul", ["s", "k"], ["s2"]),
             helper.make_node("ConstantOfShape", ["s2"], ["c"], value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("ReduceMean", ["c"], ["m"], axes=[1], keepdims=1),
             helper.make_node("MaxPool", ["m"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Add", ["x", "p"], ["y"])]
    model = _model(nodes, [numpy_helper.from_array(np.array(factor, np.int64), "k")],
                   inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                   output=("y", [1, 3, 224, 224]))
    onnx.save(model, str(path))
    return 4 * 3 * 224 * 224 * int(np.prod(factor))


def test_a_map_sized_at_run_time_is_counted_before_anything_runs(scene, monkeypatch):
    """Shapes follow from the input's size without running the graph: --dry-run computes nothing and counts the
    map ConstantOfShape makes, and --max-memory refuses the run before it starts."""
    from cnnx.sources import graph

    path = scene / "models" / "sized.onnx"
    big = _sized_at_run_time(path)

    def no_running(*args, **kwargs):
        raise AssertionError("the graph was run")

    monkeypatch.setattr(graph.Graph, "evaluate", no_running)
    dry = _run(["pipeline", "photo.png", "--model", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    needed = float(dry.stdout.split("memory needed at most about ")[1].split()[0])
    assert needed * (1 << 20) >= big
    refused = _run(["pipeline", "photo.png", "--model", str(path), "--max-memory", "200M", "-o", "out"])
    _refused(refused, "memory", "200")
    assert not Path("out").exists()
