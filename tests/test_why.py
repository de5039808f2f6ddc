"""cnnx why: each method's map, tested as the field tests saliency (CAM's identity, integrated gradients'
completeness, the pointing game, deletion), and the command's files read back."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from cnnx.app.cli import app
from cnnx.explain.why import METHODS, WhySettings, explain_why
from cnnx.sources.reverse import Target

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes():
    from cnnx.sources.model import load_model
    from cnnx.sources.shapes import dataset

    images, labels = dataset(40, 11)
    return load_model("shapes"), images, labels


def _pooled_network(tmp_path, classes: int, seed: int, size: tuple[int, int]):
    """conv(6 random kernels) -> relu -> global average pool -> flatten -> dense of ``classes`` seeded rows: the
    chain, the dense layer's weights, an image of ``size`` and the ReLU's maps on it (float64)."""
    from cnnx.sources.pipeline import Chain
    from cnnx.sources.spec import load_pipeline

    weights = np.random.default_rng(seed).standard_normal((classes, 6)).astype(np.float32)
    np.savez(tmp_path / "head.npz", weights=weights, bias=np.zeros(classes, np.float32))
    chain = Chain(load_pipeline(spec=f"conv(random:6, seed=2) -> relu -> global_avgpool -> flatten -> "
                                     f"dense({tmp_path / 'head.npz'})"))
    image = np.random.default_rng(seed + 2).random((1, *size), dtype=np.float32)
    return chain, weights, image, list(chain.stream(image))[2].array.astype(np.float64)


def test_grad_cam_is_cam_for_a_network_ending_in_global_pooling_and_one_linear_layer(tmp_path):
    """For conv -> relu -> global average pool -> dense, Grad-CAM's map at the ReLU is the class activation map
    (Zhou et al. 2016): the maps weighed by the dense layer's row for the class, kept where positive, over the
    map's size."""
    chain, weights, image, maps = _pooled_network(tmp_path, classes=3, seed=1, size=(20, 24))
    for k in range(3):
        why = explain_why(chain, image, Target(stage=5, channel=0, place=(0, k)), WhySettings("gradcam", stage=2), "")
        cam = np.maximum(np.tensordot(weights[k], maps, axes=1), 0) / (20 * 24)
        np.testing.assert_allclose(why.map, cam, rtol=1e-4, atol=1e-7)


def test_grad_cam_says_how_much_of_the_weighed_maps_its_map_shows(tmp_path):
    """Grad-CAM's ReLU drops the weighed maps' part below zero; the words say what the maps summed to and the share
    of their magnitude the map shows, computed here from CAM's weights, and call a sliver of them too little."""
    import re

    chain, weights, image, maps = _pooled_network(tmp_path, classes=4, seed=5, size=(12, 10))
    told = 0
    for k in range(4):
        weighed = np.tensordot(weights[k], maps, axes=1) / maps[0].size
        why = explain_why(chain, image, Target(stage=5, channel=0, place=(0, k)), WhySettings("gradcam", stage=2), "")
        if weighed.min() >= 0:
            assert why.check == ""
            continue
        told += 1
        said = re.fullmatch(r"the weighed maps sum to (\S+); the map shows their part above zero, (\S+)% of their "
                            r"magnitude(: too little to say much.*)?", why.check)
        share = np.maximum(weighed, 0).sum() / np.abs(weighed).sum()
        assert float(said[1]) == pytest.approx(weighed.sum(), rel=1e-3)
        assert float(said[2]) == pytest.approx(100 * share, abs=0.051)
        assert bool(said[3]) == (share < 0.05)
    assert told


def test_grad_cam_on_the_shapes_model_says_its_map_shows_a_sliver(shapes):
    """The shapes model's dense layer weighs each place on its own: for a star, Grad-CAM's weighed maps lie almost
    all below zero (measured: under 0.1% above), and the words under its map say so."""
    model, images, labels = shapes
    stars = [image for image, label in zip(images, labels, strict=True) if label == 4]
    for image in stars[:3]:
        why = explain_why(model, image, Target(label=4), WhySettings("gradcam"), "")
        assert "too little to say much about this answer" in why.check


def test_integrated_gradients_sum_to_the_scores_change(shapes):
    """Completeness: the attributions add up to the class score less the baseline's, to 1% with 128 steps."""
    model, images, labels = shapes
    for image, label in zip(images[:5], labels[:5], strict=True):
        why = explain_why(model, image, Target(label=int(label)), WhySettings("integrated-gradients", steps=128), "")
        baseline = model.reverse(np.zeros_like(image), Target(label=int(label)), gradient=False).score
        assert float(why.map.sum()) == pytest.approx(why.score - baseline, rel=1e-2)


# The pointing game on the shapes model, measured: input x gradient and integrated gradients 100%, occlusion 88%,
# Grad-CAM 20% (its channel weights average the gradient over the map, which suits networks that end in global
# average pooling; the shapes model ends in a dense layer over every place).
@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients"])
def test_the_pointing_game(shapes, method):
    """The map's peak lies on the shape's ink in at least 90% of freshly drawn shapes."""
    model, images, labels = shapes
    hits = 0
    for image, label in zip(images, labels, strict=True):
        why = explain_why(model, image, Target(label=int(label)), WhySettings(method, steps=16), "")
        hits += bool(image[0][np.unravel_index(np.argmax(why.map), why.map.shape)] > 0.3)
    assert hits >= 0.9 * len(images)


@pytest.mark.parametrize("method", ["gradient", "input-x-gradient", "integrated-gradients",
                                    pytest.param("occlusion", marks=pytest.mark.slow)])
def test_deleting_pixels_in_the_maps_order_lowers_the_score_faster_than_at_random(shapes, method):
    """The fifth of the pixels the map ranks highest, set to zero, lower the class score more than a random fifth:
    on average, and for at least 85% of the shapes (measured: 100% for each)."""
    model, images, labels = shapes
    faster, falls = 0, []
    rng = np.random.default_rng(0)
    for image, label in zip(images, labels, strict=True):
        target = Target(label=int(label))
        why = explain_why(model, image, target, WhySettings(method, steps=16, patch=4), "")
        count = image.size // 5
        by_map, at_random = image.copy().reshape(-1), image.copy().reshape(-1)
        by_map[np.argsort(-why.map.ravel())[:count]] = 0
        at_random[rng.permutation(image.size)[:count]] = 0
        scores = [model.reverse(v.reshape(image.shape), target, gradient=False).score for v in (by_map, at_random)]
        faster += scores[0] < scores[1]
        falls.append(scores[1] - scores[0])
    assert faster >= 0.85 * len(images) and np.mean(falls) > 0


def test_occlusion_of_a_chain_value_is_zero_where_no_square_meets_its_field():
    """Hiding pixels outside a value's receptive field cannot change it: occlusion's map is zero wherever every
    square covering the pixel lies outside the field."""
    from cnnx.sources.pipeline import Chain
    from cnnx.sources.spec import load_pipeline

    chain = Chain(load_pipeline())
    image = np.random.default_rng(4).random((1, 48, 48), dtype=np.float32)
    planned = chain.plan(image.shape)
    C, H, W = planned[-1].shape
    why = explain_why(chain, image, Target(stage=len(planned), channel=0, place=(H // 2, W // 2)),
                      WhySettings("occlusion", patch=4), "")
    rows, cols = np.nonzero(why.map)
    reach = planned[-1].receptive_field[0] + 2 * 4
    assert rows.size and rows.max() - rows.min() < reach and cols.max() - cols.min() < reach


def _star(path: Path) -> Path:
    image = Image.new("RGB", (120, 100), "white")
    points = [(60 + r * np.sin(k * np.pi / 5), 50 - r * np.cos(k * np.pi / 5))
              for k, r in zip(range(10), [40, 16] * 5, strict=True)]
    ImageDraw.Draw(image).polygon(points, fill="black")
    image.save(path)
    return path


def test_why_through_the_command_writes_each_methods_pictures_and_numbers(tmp_path):
    """cnnx why --model shapes --method all --save-raw: an overlay (with colour) and a map for each method, the
    maps and the gradient as .npy at the model's input size, a manifest naming the class and each method; a
    second run replaces the folder, and a pipeline run of the same image may replace the folder that holds it."""
    star = _star(tmp_path / "star.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["why", str(star), "--model", "shapes", "--method", "all", "--save-raw", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    assert "class star" in result.stdout
    folder = out / "why"
    record = json.loads((folder / "manifest.json").read_text())
    assert [m["method"] for m in record["why"]["methods"]] == list(METHODS)
    assert "star" in record["why"]["target"]
    for method in METHODS:
        name = "saliency" if method == "gradient" else method
        with Image.open(folder / f"{name}-overlay.png") as picture:
            overlay = np.asarray(picture.convert("RGB")).astype(int)
        assert (np.abs(overlay[..., 0] - overlay[..., 2]) > 60).any()  # coloured, not only grey
        assert np.load(folder / f"{name}.npy").shape == (32, 32)
        with Image.open(folder / f"{name}.png") as picture:
            assert picture.size == (32, 32)
    assert np.load(folder / "gradient.npy").shape == (1, 32, 32)
    again = runner.invoke(app, ["why", str(star), "--model", "shapes", "--method", "occlusion", "-o", str(out)])
    assert again.exit_code == 0 and sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "occlusion-overlay.png", "occlusion.png"]
    piped = runner.invoke(app, ["pipeline", str(star), "--model", "shapes", "-o", str(out.parent / "run")])
    assert piped.exit_code == 0
    inside = runner.invoke(app, ["why", str(star), "--model", "shapes", "-o", str(out.parent / "run")])
    assert inside.exit_code == 0 and (out.parent / "run" / "why" / "integrated-gradients.png").exists()
    rerun = runner.invoke(app, ["pipeline", str(star), "--model", "shapes", "-o", str(out.parent / "run")])
    assert rerun.exit_code == 0, rerun.output


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "--method takes"),
    (["--class", "hexagon"], "--class 'hexagon' names no class"),
    (["--class", "9"], "--class takes 0 to 4"),
    (["--at", "3,4"], "--channel and --at go with --stage"),
    (["--stage", "2", "--class", "star"], "give --class or --stage, not both"),
    (["--stage", "99"], "--stage takes 1 to 9"),
    (["--stage", "1", "--channel", "50"], "channels 0 to 7"),
])
def test_bad_requests_are_one_line(tmp_path, args, message):
    star = _star(tmp_path / "star.png")
    result = runner.invoke(app, ["why", str(star), "--model", "shapes", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_a_chain_has_no_class_to_explain(tmp_path):
    star = _star(tmp_path / "star.png")
    result = runner.invoke(app, ["why", str(star), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and "classifies nothing" in result.output, result.output


def test_serve_draws_why_for_a_models_answer_and_a_chain_value(tmp_path):
    """The live page's why: /api/why for the shapes model's answer (any method, any class) and for a clicked
    value of the lesson's chain (its effective receptive field), drawn into the run; a bad method is a 400."""
    import threading

    from served import request

    from cnnx.app.serve import make_server
    from cnnx.app.session import Session
    from cnnx.app.shell import source_from
    from cnnx.render.draw import Style

    star = _star(tmp_path / "star.png")
    for model in ("shapes", None):
        session = Session(star, lambda text, model=model: source_from(text, None, None, model, None, None),
                          Style(), folder=tmp_path / f"session-{model}")
        session.recompute()
        server, url = make_server(session)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, token = server.server_address[1], url.partition("token=")[2]
        try:
            if model:
                status, _, body = request(port, "/api/why?method=integrated-gradients&class=circle", token=token)
                data = json.loads(body)
                assert status == 200 and "class circle" in data["lines"][0]
            else:
                status, _, body = request(port, "/api/why?method=input-x-gradient&stage=6&channel=1&row=10&col=12",
                                          token=token)
                data = json.loads(body)
                assert status == 200 and "stage 6, channel 1 at row 10, column 12" in data["lines"][0]
            status, _, picture = request(port, f"/run/{data['image']}", token=token)
            assert status == 200 and picture.startswith(b"\x89PNG")
            status, _, body = request(port, "/api/why?method=magic", token=token)
            assert status == 400 and "method takes" in json.loads(body)["error"]
            for _ in range(200):  # found in the background: asked again until it is there
                status, _, body = request(port, "/api/looks-for?stage=4&channel=2", token=token)
                looked = json.loads(body)
                if status != 200 or not looked["busy"]:
                    break
                assert 0 <= looked["done"] <= looked["steps"]
                time.sleep(0.05)
            assert status == 200 and looked["reached"] > looked["start"], looked
            assert looked["seen"] == 1 and request(port, f"/run/{looked['patches']}", token=token)[0] == 200
            assert request(port, f"/run/{looked['image']}", token=token)[2].startswith(b"\x89PNG")
            status, _, body = request(port, "/api/looks-for?stage=4&channel=99", token=token)
            assert status == 400 and "no channel 99" in json.loads(body)["error"]
        finally:
            server.shutdown()
            server.server_close()
            session.close()


def _randomised(model, layers: int, rng):
    """The model with its last ``layers`` learned layers (from the top down) given random weights of the same
    spread: the cascading randomisation of Adebayo et al. (2018)."""
    import copy
    from dataclasses import replace

    from cnnx.sources.model import Model
    from cnnx.sources.stages import Pipeline

    def shuffled(bank):
        return replace(bank, weights=(rng.standard_normal(bank.weights.shape) * bank.weights.std()).astype(np.float32))

    stages = list(model.pipeline.stages)
    for k in [k for k, s in enumerate(stages) if s.name in ("conv", "dense")][::-1][:layers]:
        stage = copy.copy(stages[k])
        if stage.name == "dense":
            object.__setattr__(stage, "source", shuffled(stage.source))
        else:
            object.__setattr__(stage, "sources", (shuffled(stage.sources[0]),))
        stages[k] = stage
    return Model(model.name, model.classes, model.meta, Pipeline(tuple(stages)))


# Measured on 20 shapes, the mean rank correlation of the map's magnitude with the trained model's after the top
# one, two and three layers are randomised: saliency 0.36, 0.34, 0.28; SmoothGrad 0.27, 0.23, 0.25; Grad-CAM 0.11,
# 0.20, -0.26 (these pass); input x gradient 0.97, 0.96, 0.96, integrated gradients 0.97, 0.97, 0.96 and
# occlusion 0.88, 0.87, 0.87 (these fail: their maps follow the input's edges whatever the weights).
@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "gradcam"])
def test_maps_change_when_the_models_layers_are_randomised(shapes, method):
    """Sanity check by randomisation: with the top layers' weights random, the map is another (mean rank
    correlation of its magnitude with the trained model's below 0.5), as a map that explains the model must."""
    from scipy.stats import spearmanr

    model, images, labels = shapes
    for layers in (1, 2, 3):
        random = _randomised(model, layers, np.random.default_rng(layers))
        correlations = []
        for image, label in zip(images[:20], labels[:20], strict=True):
            settings = WhySettings(method, samples=8)
            trained = explain_why(model, image, Target(label=int(label)), settings, "").map.ravel()
            other = explain_why(random, image, Target(label=int(label)), settings, "").map.ravel()
            correlation = spearmanr(np.abs(trained), np.abs(other)).correlation if other.any() and trained.any() else 0
            correlations.append(correlation)
        assert np.mean(correlations) < 0.5, layers


@pytest.mark.slow
def test_why_on_a_folder_runs_as_a_batch_on_worker_processes(tmp_path):
    """A folder: one why/ per image, on two worker processes, a table of them, and a broken file listed."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _star(photos / "a.png")
    _star(photos / "b.png")
    (photos / "broken.png").write_text("not a picture")
    result = runner.invoke(app, ["why", str(photos), "--model", "shapes", "--method", "gradient,occlusion",
                                 "-o", str(tmp_path / "out"), "-j", "2"])
    assert result.exit_code == 1 and "2 of 3 images done" in result.stdout, result.output
    for name in ("a", "b"):
        record = json.loads((tmp_path / "out" / name / "why" / "manifest.json").read_text())
        assert [m["method"] for m in record["why"]["methods"]] == ["gradient", "occlusion"]
    assert "broken.png" in result.stderr


def test_a_request_every_image_of_a_batch_fails_the_same_way_is_said_once(tmp_path):
    """--stage 99 over three images is one error line (not one per image), then the count; different failures are
    each listed with their image."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        _star(photos / f"{name}.png")
    result = runner.invoke(app, ["why", str(photos), "--stage", "99", "-o", str(tmp_path / "out"), "-j", "1"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnx: error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "--stage takes 1 to 6" in errors[0] and "each of the 3 images" in errors[0]
    assert "3 of 3 images failed" in result.stderr
    (photos / "broken.png").write_text("not a picture")
    result = runner.invoke(app, ["why", str(photos), "--stage", "99", "-o", str(tmp_path / "out"), "-j", "1"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnx: error:")]
    assert len(errors) == 4 and any("broken.png" in line for line in errors), result.output


def test_the_default_method_suits_the_network():
    """Grad-CAM for a network that pools its maps globally (as it assumes), integrated gradients for the shapes
    model's dense head and for a chain."""
    from pathlib import Path

    from cnnx.explain.why import default_method
    from cnnx.sources.choose import make_source

    goldens = Path(__file__).parent / "goldens"
    assert default_method(make_source(model="shapes")) == "integrated-gradients"
    assert default_method(make_source()) == "integrated-gradients"
    assert default_method(make_source(model=str(goldens / "network-torchscript.onnx"))) == "gradcam"
