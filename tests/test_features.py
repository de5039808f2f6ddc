"""cnnx features: the image that excites a unit most, found by gradient ascent through exact adjoints of its
parameterisation and transformations, and each unit's top patches among photos."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.base.choices import SAMPLES
from cnnx.compute import grad, ops
from cnnx.explain.features import FeatureSettings, _Image, visualise
from cnnx.sources.reverse import Target

runner = CliRunner()


def _adjoint_holds(forward, backward, x, rng, rel=1e-4):
    """<forward(x + h v) - forward(x - h v), g> / 2h = <backward(g), v>: the gradient is the derivative's adjoint."""
    g = rng.standard_normal(forward(x).shape)
    v = rng.standard_normal(x.shape)
    h = 1e-3
    numeric = (np.sum(forward(x + h * v) * g, dtype=np.float64) - np.sum(forward(x - h * v) * g, dtype=np.float64))
    assert numeric / (2 * h) == pytest.approx(float(np.sum(backward(g.astype(np.float32)) * v)), rel=rel, abs=1e-4)


def test_resampling_and_its_gradient_are_adjoint():
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(-2, 9, (7, 8)), rng.uniform(-2, 10, (7, 8))
    x = rng.random((2, 8, 9))
    _adjoint_holds(lambda v: ops.resample(v, rows, cols).astype(np.float64),
                   lambda g: grad.resample_backward(g, x.shape, rows, cols), x, rng)


@pytest.mark.parametrize("shape, fourier", [((3, 17, 20), True), ((1, 16, 15), True), ((3, 9, 9), False)])
def test_the_parameterisation_takes_its_gradient_back_exactly(shape, fourier):
    """Fourier spectrum (odd and even widths), decorrelated colour and sigmoid: pixels(params) and its backward."""
    rng = np.random.default_rng(1)
    image = _Image(shape, FeatureSettings(fourier=fourier, decorrelate=fourier), rng)
    start = rng.standard_normal(image.params.shape).astype(np.float32)

    def pixels(params):
        image.params = params.astype(np.float32)
        return image.pixels().astype(np.float64)

    def backward(g):
        pixels(start)
        return image.backward(g)

    _adjoint_holds(pixels, backward, start, rng, rel=2e-3)


@pytest.mark.parametrize("name", ["imagenet", "caffe"])
def test_a_preparations_values_take_their_gradient_back(name):
    from cnnx.sources.prepare import preparation

    prepared = preparation(name)
    rng = np.random.default_rng(2)
    _adjoint_holds(lambda v: prepared.values(v.astype(np.float32)).astype(np.float64), prepared.values_backward,
                   rng.random((3, 5, 6)), rng)


@pytest.fixture(scope="module")
def shapes():
    from cnnx.sources.model import load_model

    return load_model("shapes")


def test_each_shapes_class_drawn_from_noise_is_that_class(shapes):
    """Activation maximisation of each class's logit from noise: the model gives the image found that class
    with probability at least 0.99."""
    for label, name in enumerate(shapes.classes):
        feature = visualise(shapes, Target(label=label), (1, 32, 32), FeatureSettings(steps=128, seed=label))
        probabilities = list(shapes.stream(feature.image))[-1].array.ravel()
        assert probabilities[label] >= 0.99, name
        assert feature.reached > feature.history[0]


def test_a_channels_image_excites_it_more_than_any_sample_photo(shapes):
    """For each of the second convolution's first four channels: the image found excites the channel (its map's
    sum) more than any shipped sample does, prepared as the model prepares a photo."""
    from cnnx.io.images import load_image

    photos = [shapes.prepare(load_image(path, color=False).array) for path in sorted(SAMPLES.glob("*.png"))]
    for channel in range(4):
        target = Target(stage=4, channel=channel)
        feature = visualise(shapes, target, (1, 32, 32), FeatureSettings(seed=channel))  # the default 256 steps
        best_photo = max(shapes.reverse(photo, target, gradient=False).score for photo in photos)
        assert feature.reached > best_photo


def test_features_through_the_command_draws_every_class(tmp_path):
    """cnnx features --model shapes: a sheet and one PNG per class, the manifest with each setting and the value
    reached, the same for the same seed."""
    out = tmp_path / "f"
    result = runner.invoke(app, ["features", "--model", "shapes", "--steps", "64", "-o", str(out), "--save-raw"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["features"]
    assert [u["unit"] for u in record["units"]] == ["circle", "square", "triangle", "cross", "star"]
    assert record["settings"]["steps"] == 64 and record["settings"]["seed"] == 0
    with Image.open(out / "sheet.png") as sheet, Image.open(out / "04_star.png") as star:
        assert sheet.width > 4 * 144 and star.size[0] >= 144
    first = np.load(out / "04_star.npy")
    again = runner.invoke(app, ["features", "--model", "shapes", "--steps", "64", "-o", str(out), "--save-raw"])
    assert again.exit_code == 0 and np.array_equal(np.load(out / "04_star.npy"), first)


def test_top_patches_of_a_chain_stage_over_the_samples(tmp_path):
    """With photos: each channel's top patches, cut to its receptive field, the boxes inside the photos."""
    out = tmp_path / "p"
    result = runner.invoke(app, ["features", str(SAMPLES), "--stage", "3", "--channels", "0-3", "--top", "2", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["features"]
    assert [u["channel"] for u in record["units"]] == [0, 1, 2, 3] and record["images"] == 3
    for unit in record["units"]:
        values = [entry["value"] for entry in unit["top"]]
        assert len(values) == 2 and values == sorted(values, reverse=True)
        for entry in unit["top"]:
            top, left, bottom, right = entry["box"]
            assert 0 <= top < bottom and 0 <= left < right and bottom - top <= 4
    assert (out / "sheet.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--channels", "a-b"], "--channels takes"),
    (["--channels", "1-"], "--channels takes"),
    (["--channels", "0,3-1"], "--channels takes"),
    (["--channels", "-2"], "--channels takes"),
    (["--channels", "0-99999999999999"], "more than 100,000 units"),
    (["--stage", "99", "--model", "shapes"], "--stage takes 1 to 9"),
    ([], "classifies nothing"),
    (["--stage", "1", "--channels", "40"], "channels 0 to 3"),
    (["--steps", "0"], "--steps"),
])
def test_bad_requests_are_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["features", "-o", str(tmp_path / "f"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "f").exists()


def test_a_stage_of_fewer_than_eight_channels_shows_them_all_and_a_bad_request_is_said_once(tmp_path):
    """Top patches of the default pipeline's stage 3 (four channels) show its four, not a refusal per image; a stage
    or channel it does not have is one line, whatever the number of images."""
    photos = [SAMPLES / name for name in ("chelsea.png", "star.png", "stripes.png")]
    result = runner.invoke(app, ["features", *map(str, photos), "--stage", "3", "-o", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    units = json.loads((tmp_path / "f" / "manifest.json").read_text())["features"]["units"]
    assert [unit["channel"] for unit in units] == [0, 1, 2, 3]
    for wrong, words in ((["--stage", "9"], "--stage takes 1 to 6"), (["--stage", "2", "--channels", "5"],
                                                                       "channels 0 to 3")):
        result = runner.invoke(app, ["features", *map(str, photos), *wrong, "-o", str(tmp_path / "g")])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.output


@pytest.mark.slow
def test_top_patches_on_worker_processes_are_the_same_as_in_one(tmp_path):
    """-j 2 finds the same patches, in the same order, as -j 1; a broken file is listed, the rest go on, and the
    exit code says one failed."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(SAMPLES.glob("*.png")):
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "broken.png").write_text("not a picture")
    records = []
    for jobs in ("1", "2"):
        out = tmp_path / f"p{jobs}"
        result = runner.invoke(app, ["features", str(photos), "--stage", "3", "--channels", "0-3", "--top", "3",
                                     "-o", str(out), "-j", jobs])
        assert result.exit_code == 1 and "broken.png" in result.stderr, result.output  # as any batch with a failure
        assert "1 of 4 images failed" in result.stderr
        records.append(json.loads((out / "manifest.json").read_text())["features"]["units"])
    assert records[0] == records[1]
