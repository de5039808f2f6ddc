"""cnnx train: a chain learned from a folder of drawings by the reverse pass, written as an ONNX model that ONNX
Runtime and cnnx run alike, with its report; and bad folders refused in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.sources.learn import Network
from cnnx.sources.shapes import CLASSES, dataset
from cnnx.sources.spec import load_pipeline

runner = CliRunner()
SPEC = "conv(random:6, padding=1) -> relu -> maxpool(2) -> conv(random:8; padding_mode=reflect) -> leaky_relu -> " \
       "avgpool(2)"


def _drawings(folder: Path, count: int, seed: int) -> Path:
    """Generated drawings of the five shapes, dark ink on white, one subfolder per class."""
    images, labels = dataset(count, seed)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        place = folder / CLASSES[label]
        place.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - image[0] * 255).astype(np.uint8)).save(place / f"{k}.png")
    return folder


def test_every_parameters_gradient_is_its_central_difference():
    """The loss's gradient with respect to each convolution's weights and bias and the dense layer, at a few
    entries of each, by central differences (one entry moved at a time, too little for a ReLU or a max to change
    its mind)."""
    images, labels = dataset(6, 3)
    network = Network.of(load_pipeline(spec=SPEC), (1, 32, 32), CLASSES, seed=1, images=images)
    loss, grads, _ = network.gradients(images, labels)
    rng = np.random.default_rng(0)
    for name, value in network.params.items():
        for flat in rng.choice(value.size, 3, replace=False):
            h = 1e-3
            moved = value.copy()
            moved.flat[flat] += h
            network.params[name] = moved
            up = network.gradients(images, labels)[0]
            moved.flat[flat] -= 2 * h
            down = network.gradients(images, labels)[0]
            network.params[name] = value
            assert (up - down) / (2 * h) == pytest.approx(float(grads[name].flat[flat]), rel=2e-2, abs=2e-3), name


def test_train_writes_a_model_onnx_runtime_and_cnnx_run_alike(tmp_path):
    """Five epochs on 1,000 drawings: the model learns (above 85% on drawings it never saw), ONNX Runtime's
    probabilities equal cnnx's own run of the file to 1e-5, the labels are the class names, and the report holds
    the curves, the kernels at every epoch and a confusion matrix of the validation set."""
    ort = pytest.importorskip("onnxruntime")
    from cnnx.sources.onnx_file import load_graph

    folder = _drawings(tmp_path / "drawings", 1000, 7)
    model = tmp_path / "shapes.onnx"
    result = runner.invoke(app, ["train", str(folder), "--spec", SPEC, "--epochs", "5", "--no-augment", "-o",
                                 str(model)])
    assert result.exit_code == 0, result.output
    assert "epoch 5:" in result.stdout and "validation accuracy" in result.stdout
    graph = load_graph(model)
    assert graph.labels == tuple(sorted(CLASSES))
    images, labels = dataset(200, 99)
    fresh = 1 - images  # dark ink on white, as the folder's
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    right = 0
    for image, label in zip(fresh, labels, strict=True):
        want = session.run(None, {"image": image[None]})[0][0]
        got = [o for *_, o, _ in graph.evaluate(image)][-1][0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        right += graph.labels[int(np.argmax(got))] == CLASSES[label]
    assert right >= 0.85 * len(labels)
    report = json.loads((tmp_path / "shapes-report" / "manifest.json").read_text())["training"]
    assert len(report["epochs"]) == 5 and np.sum(report["confusion"]) == 200  # a fifth held out
    with Image.open(tmp_path / "shapes-report" / "kernels.png") as kernels:
        assert kernels.height > 4 * 18
    with Image.open(tmp_path / "shapes-report" / "kernels.gif") as animation:
        assert animation.n_frames == 5  # an epoch a frame
    sheets = [f"kernels/epoch-{k}.png" for k in range(1, 6)]  # every convolution after each epoch
    listed = json.loads((tmp_path / "shapes-report" / "manifest.json").read_text())["files"]
    assert all(name in listed for name in sheets)
    first, last = (np.asarray(Image.open(tmp_path / "shapes-report" / name)) for name in (sheets[0], sheets[-1]))
    assert first.shape == last.shape and not np.array_equal(first, last)  # learned between them
    if report["misclassified"]:
        assert (tmp_path / "shapes-report" / "misclassified.png").is_file()
    again = runner.invoke(app, ["train", str(folder), "--spec", SPEC, "--epochs", "1", "-o", str(model)])
    assert again.exit_code == 2 and "use --force" in again.output


def test_class_names_with_commas_survive_the_model_file(tmp_path):
    """A class folder named "red, warm" is one class in the written model, read back by cnnx and named in the
    answer of a run."""
    from cnnx.sources.onnx_file import load_graph

    rng = np.random.default_rng(0)
    for name, tint in (("red, warm", [255, 60, 60]), ("blue", [60, 60, 255])):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for k in range(6):
            Image.fromarray((rng.random((16, 16, 3)) * tint).astype(np.uint8)).save(folder / f"{k}.png")
    model = tmp_path / "tint.onnx"
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "--color", "--size", "16", "--epochs", "1", "-q",
                                 "-o", str(model)])
    assert result.exit_code == 0, result.output
    assert load_graph(model).labels == ("blue", "red, warm")


def test_an_epochs_sheet_draws_each_kernel_of_each_layer_in_its_place():
    """A layer reading several channels: a column per kernel, a row per channel read; the weight at the range's top
    is drawn red, at its bottom blue, each in the cell of its kernel and channel, and zero white."""
    from cnnx.render.training import epoch_sheet

    weights = np.zeros((3, 4, 3, 3), np.float32)
    weights[2, 1] = 0.5  # kernel 2, channel 1: the top of the range
    weights[0, 3] = -0.5  # kernel 0, channel 3: the bottom
    sheet = epoch_sheet({"conv": weights}, {"conv": 0.5}, 1, 1).astype(int)
    red = np.argwhere((sheet[..., 0] - sheet[..., 2] > 50) & (sheet[..., 1] < 60))  # the dark red end
    blue = np.argwhere((sheet[..., 2] - sheet[..., 0] > 50) & (sheet[..., 1] < 60))  # the dark blue end
    assert len(red) and len(blue)
    assert red[:, 1].min() > blue[:, 1].max()  # kernel 2's column right of kernel 0's
    assert red[:, 0].max() < blue[:, 0].min()  # channel 1's row above channel 3's
    assert np.ptp(red[:, 0]) == np.ptp(blue[:, 0]) and np.ptp(red[:, 1]) == np.ptp(blue[:, 1])  # one cell each
    top, left = red.min(axis=0)
    assert (sheet[top - 2 * np.ptp(red[:, 0]) + 4 : top - 4, left + 2] > 230).all()  # channel 0 of kernel 2: zero


@pytest.mark.parametrize("layout, message", [
    ({"a": 2}, "two classes at least"),
    ({"a": 2, "b": 0}, "holds no image cnnx can read"),
    ({"a": 2, "b": 2, "b/bad.png": "text"}, "--strict"),
])
def test_bad_folders_are_one_line(tmp_path, layout, message):
    folder = tmp_path / "data"
    for name, content in layout.items():
        path = folder / name
        if content == "text":
            path.write_text("not an image")
            continue
        path.mkdir(parents=True)
        for k in range(content):
            Image.new("L", (20, 20), 255 * (k % 2)).save(path / f"{k}.png")
    result = runner.invoke(app, ["train", str(folder), "--strict", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "m.onnx").exists()


def _two_shades(folder: Path, count: int) -> Path:
    """A folder of two classes, dark and light squares, ``count`` of each."""
    for name, shade in (("dark", 40), ("light", 220)):
        (folder / name).mkdir(parents=True)
        for k in range(count):
            Image.new("L", (12, 12), shade + k).save(folder / name / f"{k}.png")
    return folder


def test_a_report_folder_of_the_users_is_refused_before_training_and_an_earlier_report_replaced(tmp_path):
    """NAME-report/ holding a file of the user's stops cnnx train before it trains (the file kept, no model); a
    report cnnx wrote is replaced by the next run's (--force for the model)."""
    folder = _two_shades(tmp_path / "data", 5)
    (tmp_path / "m-report").mkdir()
    (tmp_path / "m-report" / "notes.txt").write_text("mine")
    command = ["train", str(folder), "--epochs", "1", "-o", str(tmp_path / "m.onnx")]
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and "notes.txt, which cnnx did not write" in result.output, result.output
    assert "epoch" not in result.output and not (tmp_path / "m.onnx").exists()
    assert (tmp_path / "m-report" / "notes.txt").read_text() == "mine"
    (tmp_path / "m-report" / "notes.txt").unlink()
    assert runner.invoke(app, command).exit_code == 0
    (tmp_path / "m-report" / "curves.png").unlink()  # the next run's report must bring it back
    result = runner.invoke(app, [*command, "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m-report" / "curves.png").is_file()


def test_a_file_where_the_checkpoint_goes_is_not_replaced_without_resume_or_force(tmp_path):
    folder = _two_shades(tmp_path / "data", 3)
    (tmp_path / "m.onnx.checkpoint.npz").write_text("mine")
    result = runner.invoke(app, ["train", str(folder), "--epochs", "1", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--resume goes on from it" in result.output, result.output
    assert (tmp_path / "m.onnx.checkpoint.npz").read_text() == "mine" and not (tmp_path / "m.onnx").exists()


def test_no_validation_images_is_said_in_words(tmp_path):
    """--val 0 trains on every image and says there is no validation, rather than printing nan."""
    folder = _two_shades(tmp_path / "data", 3)
    result = runner.invoke(app, ["train", str(folder), "--val", "0", "--epochs", "2", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0 and "nan" not in result.output, result.output
    assert "0 to validate" in result.output and "no validation images: the last epoch kept" in result.output


@pytest.mark.parametrize("make, message", [(lambda p: None, "no such folder"),
                                           (lambda p: p.write_bytes(b"x"), "is a file, not a folder")])
def test_a_folder_that_is_not_there_or_not_a_folder_is_named_so(tmp_path, make, message):
    make(tmp_path / "data")
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and f"data: {message}" in result.output, result.output


def test_an_unreadable_image_is_skipped_and_counted_and_a_spec_too_deep_is_refused(tmp_path):
    folder = tmp_path / "data"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for k in range(4):
            Image.new("L", (12, 12), 60 * k).save(folder / name / f"{k}.png")
    (folder / "a" / "broken.png").write_text("not an image")
    deep = "conv(random:2, padding=1) -> maxpool(2) -> maxpool(2) -> maxpool(2) -> maxpool(2)"
    result = runner.invoke(app, ["train", str(folder), "--size", "8", "--spec", deep, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "1 files could not be read" in result.stderr
    assert "smaller than the 2x2 window" in result.output or "input is smaller" in result.output, result.output
    ok = runner.invoke(app, ["train", str(folder), "--size", "8", "--epochs", "1", "-o", str(tmp_path / "m.onnx"),
                             "-q"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.slow
def test_the_default_network_learns_the_shapes_to_98_percent_of_fresh_drawings(tmp_path):
    """The default stages, with augmentation, 15 epochs on 5,000 generated drawings (about 70 s here): at least 98%
    of 1,000 drawings it never saw are named right by the model file it writes (measured: 98.2%)."""
    from cnnx.sources.onnx_file import load_graph

    folder = _drawings(tmp_path / "drawings", 5000, 17)
    model = tmp_path / "shapes.onnx"
    result = runner.invoke(app, ["train", str(folder), "--epochs", "15", "-o", str(model), "-q"])
    assert result.exit_code == 0, result.output
    graph = load_graph(model)
    images, labels = dataset(1000, 1234)
    named = [graph.labels[int(np.argmax([o for *_, o, _ in graph.evaluate(1 - image)][-1]))] for image in images]
    assert np.mean([n == CLASSES[k] for n, k in zip(named, labels, strict=True)]) >= 0.98


PHOTO_SPEC = "conv(random:16:size=5, padding=2) -> relu -> maxpool(2) -> conv(random:16, padding=1) -> relu -> " \
             "maxpool(2)"


def _blobs_and_edges(kernels: np.ndarray) -> np.ndarray:
    """Each kernel's share of its energy in a constant and the two linear ramps, per input channel: a colour blob
    is all constant, an oriented edge mostly ramp; a random kernel spreads its energy over every pattern."""
    rows, cols = np.mgrid[:kernels.shape[2], :kernels.shape[3]].astype(float)
    patterns = [np.ones_like(rows), cols - cols.mean(), rows - rows.mean()]
    along = sum(np.einsum("ocij,ij->oc", kernels, p / np.linalg.norm(p)) ** 2 for p in patterns)
    return along.sum(1) / (kernels ** 2).sum((1, 2, 3))


@pytest.mark.slow
def test_real_photos_of_two_kinds_are_learned_and_the_first_kernels_become_edges_and_blobs(tmp_path):
    """Crops of eight public-domain photos, natural things against things people built, validated on the part of
    each photo it never saw: ONNX Runtime runs the written model above chance (measured: 85.9%), and the first
    layer's 5x5 kernels, random to begin with, become colour blobs and oriented edges: at least three hold more
    than half their energy in a constant and a ramp, which no random kernel of 10,000 drawn here comes near."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from photos import photo_folder

    folder = photo_folder(tmp_path / "photos")
    model = tmp_path / "photos.onnx"
    result = runner.invoke(app, ["train", str(folder), "--color", "--spec", PHOTO_SPEC, "--rate", "0.01",
                                 "--epochs", "30", "--patience", "30", "-o", str(model), "-q"])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    written = onnx.load(model)
    classes = json.loads(next(prop.value for prop in written.metadata_props if prop.key == "labels"))
    right = []
    for kind_folder in sorted((folder / "val").iterdir()):
        for path in sorted(kind_folder.glob("*.png")):
            with Image.open(path) as crop:
                pixels = np.asarray(crop.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
            scores = session.run(None, {"image": pixels.transpose(2, 0, 1)[None] / 255})[0][0]
            right.append(classes[int(np.argmax(scores))] == kind_folder.name)
    assert sorted(classes) == ["built", "natural"] and np.mean(right) >= 0.7, np.mean(right)
    kernels = next(numpy_helper.to_array(t) for t in written.graph.initializer if t.name == "conv0.weight")
    drawn = _blobs_and_edges(np.random.default_rng(0).normal(size=(10000, *kernels.shape[1:])))
    assert drawn.max() < 0.45
    assert np.sum(_blobs_and_edges(kernels) > 0.5) >= 3, np.sort(_blobs_and_edges(kernels))


def test_a_stop_while_learning_keeps_the_best_model_so_far_written_whole(tmp_path, monkeypatch):
    """Ctrl-C in the second epoch: the best model of the first is written whole (cnnx runs it), the command says
    so and exits 130."""
    from cnnx.sources import learn
    from cnnx.sources.onnx_file import load_graph

    folder = _drawings(tmp_path / "drawings", 60, 5)
    calls = {"n": 0}
    original = learn.Network.gradients

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # the second epoch's first batch
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(learn.Network, "gradients", interrupted)
    model = tmp_path / "m.onnx"
    result = runner.invoke(app, ["train", str(folder), "--batch", "32", "--epochs", "5", "-o", str(model)])
    assert result.exit_code == 130, result.output
    assert "best model of the 1 epochs done was written whole" in result.stderr
    assert load_graph(model).labels == tuple(sorted(CLASSES))


def test_resume_after_a_stop_learns_exactly_what_one_run_learns(tmp_path, monkeypatch):
    """Stopped in the third epoch, then --resume: the same weights, to the bit, as four epochs in one run (the
    checkpoint holds the parameters, the optimizer's and the random generator's state); and SGD is a choice."""
    from onnx import load, numpy_helper

    from cnnx.sources import learn

    folder = _drawings(tmp_path / "drawings", 80, 5)
    straight, resumed = tmp_path / "straight.onnx", tmp_path / "resumed.onnx"
    common = ["--epochs", "4", "--patience", "10", "-q", "--spec", SPEC]
    assert runner.invoke(app, ["train", str(folder), *common, "-o", str(straight)]).exit_code == 0
    calls, original = {"n": 0}, learn.Network.gradients

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 2 * 2 + 1:  # two batches an epoch: the third epoch's first
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(learn.Network, "gradients", interrupted)
    assert runner.invoke(app, ["train", str(folder), *common, "-o", str(resumed)]).exit_code == 130
    assert (tmp_path / "resumed.onnx.checkpoint.npz").is_file()
    monkeypatch.setattr(learn.Network, "gradients", original)
    again = runner.invoke(app, ["train", str(folder), *common, "-o", str(resumed), "--resume"])
    assert again.exit_code == 0, again.output
    assert not (tmp_path / "resumed.onnx.checkpoint.npz").exists()
    weights = [{t.name: numpy_helper.to_array(t) for t in load(str(p)).graph.initializer} for p in (straight, resumed)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
    sgd = runner.invoke(app, ["train", str(folder), "--epochs", "1", "--optimizer", "sgd", "-q", "-o",
                              str(tmp_path / "sgd.onnx")])
    assert sgd.exit_code == 0, sgd.output


def test_a_relu_before_a_max_pool_is_computed_after_it_with_the_same_numbers():
    """The network computes relu -> maxpool as maxpool -> relu (a quarter of the values): its last maps equal the
    stages applied in their written order, exactly, and its gradients are checked against central differences
    above."""
    pipeline = load_pipeline(spec="conv(random:4, padding=1) -> relu -> maxpool(2) -> conv(random:6, padding=1) -> "
                                  "leaky_relu(0.1) -> maxpool(2)")
    images = np.random.default_rng(3).standard_normal((5, 1, 16, 16)).astype(np.float32)
    network = Network.of(pipeline, (1, 16, 16), ("a", "b"), seed=1)
    assert network.run_order() == [0, 2, 1, 3, 5, 4]
    _, saved = network.logits(images)
    x = (images - network.mean[:, None, None]) / network.std[:, None, None]
    for k, stage in enumerate(network.stages):
        x = network._apply(k, stage, x)
    np.testing.assert_array_equal(saved[-1], x)
