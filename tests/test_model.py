"""The lesson's whole flow: linear and softmax, the backward passes, training, and the shipped shapes model."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.io.weights import model_path, read_model
from cnnx.sources import train
from cnnx.sources.model import load_model
from cnnx.sources.pipeline import run
from cnnx.sources.shapes import CLASSES, dataset, draw_shape, prepare
from cnnx.sources.spec import parse_spec
from cnnx.sources.stages import Pipeline

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_linear_against_loops():
    """linear is x @ W.T + b, checked element by element in float64."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    want = np.array([[sum(x[n, i] * w[o, i] for i in range(7)) + b[o] for o in range(3)] for n in range(4)])
    np.testing.assert_allclose(ops.linear(x, w, b), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must end in 7 features"):
        ops.linear(x[:, :5], w)


def test_softmax_is_stable_and_sums_to_one():
    """softmax matches exp(x)/sum(exp(x)), sums to 1, and survives values that would overflow exp."""
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1001.0, 1002.0]])
    p = ops.softmax(x)
    expected = np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()
    np.testing.assert_allclose(p[0], expected, rtol=1e-6)
    np.testing.assert_allclose(p[1], expected, rtol=1e-6)  # softmax ignores a constant shift
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(ops.log_softmax(x), np.log(p), rtol=1e-5)


def numeric_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar f at x, element by element (float64)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        up = f(x)
        x[index] = saved - eps
        down = f(x)
        x[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


@pytest.mark.slow
def test_short_training_lowers_the_loss():
    """Three epochs on 600 generated shapes: the last epoch's loss is well below the first's and below chance."""
    _, history = train.train(samples=600, epochs=3, log=lambda _: None)
    losses = [epoch.loss for epoch in history]
    assert losses[2] < losses[1] < losses[0]
    assert losses[2] < 0.8 * losses[0] and losses[2] < np.log(len(CLASSES))


def test_shapes_dataset_is_reproducible_and_balanced():
    """The same seed draws the same shapes; classes come in equal numbers; inputs are 1x32x32 in [0, 1]."""
    a, la = dataset(50, 5)
    b, lb = dataset(50, 5)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.bincount(la).tolist() == [10] * 5
    assert a.shape == (50, 1, 32, 32) and a.min() >= 0 and a.max() <= 1


@pytest.mark.slow
def test_shipped_model_accuracy_on_fresh_shapes():
    """The shipped model classifies at least 97% of 1500 shapes drawn from a seed it never saw."""
    model = load_model("shapes")
    params, _ = read_model("shapes")
    assert model.meta["training"]["seed"] != 31337 and model.meta["test"]["seed"] != 31337
    x, y = dataset(1500, 31337)
    assert train.accuracy(params, x, y) >= 0.97
    assert model_path("shapes").stat().st_size < 1_000_000


@pytest.mark.slow
def test_pen_drawings_of_every_class_are_recognised_and_confidence_is_honest():
    """Pen drawings made apart from the training data: 98% right in every class, X and + crosses alike.

    The probabilities are calibrated: no wrong answer claims 99%, and the mean confidence is within five
    points of the share right (the expected calibration error, over ten bins, is under 0.05).
    """
    from drawings import drawings

    model = load_model("shapes")
    right, confidence, wrong_claims = {name: [] for name in CLASSES}, [], []
    for name, picture in drawings(60, seed=11):
        probabilities = list(model.stream(model.prepare(picture[None])))[-1].array.ravel()
        answer = int(probabilities.argmax())
        right[name].append(model.classes[answer] == name)
        confidence.append((float(probabilities.max()), model.classes[answer] == name))
        if model.classes[answer] != name:
            wrong_claims.append(float(probabilities.max()))
    assert {name: np.mean(r) for name, r in right.items()} == pytest.approx({n: 1 for n in CLASSES}, abs=0.02)
    assert max(wrong_claims, default=0) < 0.99
    claimed, hits = np.array([c for c, _ in confidence]), np.array([h for _, h in confidence], float)
    bins = np.minimum((claimed * 10).astype(int), 9)
    gap = sum(abs(claimed[bins == b].mean() - hits[bins == b].mean()) * np.mean(bins == b) for b in np.unique(bins))
    assert gap < 0.05, gap


def test_model_metadata():
    """The weights file says what the model is: classes, input, preprocessing, seeds, accuracy, its pipeline."""
    meta = load_model("shapes").meta
    assert meta["classes"] == list(CLASSES)
    assert meta["test"]["accuracy"] >= 0.97
    assert "32x32" in meta["input"] and "inverted" in meta["preprocessing"]
    assert meta["spec"].endswith("-> flatten -> dense(model:shapes:fc) -> softmax")


def test_model_pipeline_uses_the_same_ops_as_training():
    """Running the model's pipeline gives the probabilities training's forward pass gives."""
    model = load_model("shapes")
    params, _ = read_model("shapes")
    x, _ = dataset(5, 99)
    for image in x:
        stages = run(image, model.pipeline)
        expected = train.predict(params, image[None])[0]
        np.testing.assert_allclose(stages[-1].array.ravel(), expected, rtol=1e-4, atol=1e-6)


def drawing(tmp_path, name: str):
    """A dark-on-light drawing, off-centre and larger than the model's input, like one made in a paint program."""
    rng = np.random.default_rng(CLASSES.index(name) + 100)
    shape = 1 - draw_shape(name, rng, size=96)  # black ink on white paper
    canvas = np.ones((150, 220), np.float32)
    canvas[20:116, 90:186] = shape
    path = tmp_path / f"{name}.png"
    Image.fromarray((canvas * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", CLASSES)
def test_pipeline_with_the_model_answers_right(tmp_path, name):
    """cnnx pipeline --model shapes on a drawing writes every map, probabilities that sum to 1, and the right class."""
    out = tmp_path / "out"
    result = invoke("pipeline", drawing(tmp_path, name), "-o", out, "--model", "shapes")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    answer = manifest["model"]["answer"]
    assert sum(answer.values()) == pytest.approx(1, abs=1e-5)
    assert max(answer, key=answer.get) == name
    assert f"model shapes: {name}" in result.stdout
    assert sorted(p.name for p in out.iterdir() if p.is_dir())[-3:] == ["07_flatten", "08_dense", "09_softmax"]
    assert "answer: " in (out / "index.html").read_text()


def test_hand_drawn_strokes():
    """Shapes drawn as a person would, with a pen line, off-centre, outlined or filled, are recognised."""
    model = load_model("shapes")
    params, _ = read_model("shapes")
    pictures = {}
    size = (200, 160)
    for name, points in {
        "triangle": [(30, 140), (100, 20), (170, 138), (32, 141)],
        "square": [(40, 30), (150, 34), (147, 140), (42, 137), (40, 31)],
        "cross": None,
        "circle": None,
        "star": None,
    }.items():
        image = Image.new("L", size, 255)
        pen = ImageDraw.Draw(image)
        if name == "circle":
            pen.ellipse((50, 30, 150, 128), outline=0, width=6)
        elif name == "cross":
            pen.line([(100, 20), (102, 140)], fill=0, width=9)
            pen.line([(40, 78), (160, 82)], fill=0, width=9)
        elif name == "star":
            import math

            pts = [
                (
                    100 + (60 if k % 2 == 0 else 24) * math.cos(-math.pi / 2 + k * math.pi / 5),
                    80 + (60 if k % 2 == 0 else 24) * math.sin(-math.pi / 2 + k * math.pi / 5),
                )
                for k in range(10)
            ]
            pen.polygon(pts, fill=0)
        else:
            pen.line(points, fill=0, width=5, joint="curve")
        pictures[name] = prepare(np.asarray(image, np.float32) / 255)
    for name, x in pictures.items():
        assert model.classes[int(train.predict(params, x[None])[0].argmax())] == name, name


def test_filters_model_shows_learned_kernels(tmp_path):
    """cnnx filters --model shapes prints the first layer's 8 kernels and draws every layer into a PNG."""
    picture = tmp_path / "kernels.png"
    result = invoke("filters", "--model", "shapes", "-o", picture)
    assert result.exit_code == 0, result.output
    assert "filter 7" in result.stdout and "test accuracy" in result.stdout
    with Image.open(picture) as drawn:
        assert drawn.size[0] > 100


def test_dense_stage_in_specs_and_toml(tmp_path):
    """flatten, dense and softmax work in any spec and round-trip through TOML; a size mismatch is refused up front."""
    weights = tmp_path / "fc.npz"
    np.savez(weights, weight=np.ones((3, 4 * 4 * 2), np.float32), bias=np.zeros(3, np.float32))
    stages = parse_spec(f"conv(sobel_x, sobel_y) -> maxpool(2) -> flatten -> dense({weights}) -> softmax")
    results = run(np.random.default_rng(0).random((1, 8, 8), dtype=np.float32), Pipeline(stages))
    assert results[-1].shape == (1, 1, 3) and results[-1].array.sum() == pytest.approx(1)
    from cnnx.sources.spec import from_toml, to_toml

    assert from_toml(to_toml(Pipeline(stages))) == Pipeline(stages)
    from cnnx.sources.pipeline import check

    with pytest.raises(CnnxError, match="takes 32 inputs; the stage before gives 128"):
        check(stages, (1, 16, 16))


def test_the_answer_says_what_the_model_was_trained_on_and_its_title_stays_one_line(tmp_path):
    """The shapes model's answer is followed by what it was trained on (drawings, not photos); a model's title
    line is never wrapped into the narrow table under it."""
    from rich.console import Console

    from cnnx.base.choices import SAMPLES
    from cnnx.render.report import answer_table

    result = CliRunner().invoke(app, ["pipeline", str(SAMPLES / "chelsea.png"), "--model", "shapes", "-o",
                                      str(tmp_path / "p")])
    assert result.exit_code == 0 and "trained on drawings of one shape" in " ".join(result.stdout.split())
    console = Console(width=150, record=True)
    console.print(answer_table([("class 6", 0.4), ("class 1", 0.3)], "small_legacy.onnx"))
    assert "model small_legacy.onnx: class 6" in console.export_text().splitlines()[0]
