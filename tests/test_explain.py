"""cnnx explain: the lesson's arithmetic, right where the lesson went wrong; patches, ReLU, pooling, shifts, fields."""

import json

import numpy as np
import pytest
from PIL import Image
from reference import conv2d_loops
from typer.testing import CliRunner

from cnnx import explain
from cnnx.app.cli import app
from cnnx.io.images import load_image
from cnnx.sources.kernels import parse_kernel
from cnnx.sources.pipeline import Chain
from cnnx.sources.spec import parse_spec
from cnnx.sources.stages import Pipeline

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# Each window of the lesson's example, worked by hand: input rows r..r+2, columns c..c+2, times [[1,0,-1]]*3.
LESSON_WINDOWS = {
    (0, 0): ([[1, 2, 1], [0, 1, 3], [2, 1, 0]], [[1, 0, -1], [0, 0, -3], [2, 0, 0]], -1),
    (0, 1): ([[2, 1, 0], [1, 3, 2], [1, 0, 1]], [[2, 0, 0], [1, 0, -2], [1, 0, -1]], 1),
    (1, 0): ([[0, 1, 3], [2, 1, 0], [1, 0, 1]], [[0, 0, -3], [2, 0, 0], [1, 0, -1]], -1),
    (1, 1): ([[1, 3, 2], [1, 0, 1], [0, 1, 2]], [[1, 0, -2], [1, 0, -1], [0, 0, -2]], -3),
}


def test_lesson_windows_products_and_sums():
    """Every window of the lesson's example: its nine values, nine products and their sum, as worked by hand."""
    e = explain.explain_conv(np.array(explain.LESSON_INPUT), parse_kernel("vertical_edge"))
    assert len(e.windows) == 4
    for w in e.windows:
        values, products, total = LESSON_WINDOWS[(w.row, w.col)]
        assert w.values == values and w.products == products and w.total == total
    assert e.result == [[-1, 1], [-1, -3]]
    assert e.convolution == [[1, -1], [1, 3]]
    assert e.relu == [[0, 1], [0, 0]]


def test_lesson_correction_says_where_it_went_wrong():
    """The explanation quotes the lesson's [[3,1],[2,0]] and its first sum, and says the products add to -1."""
    e = explain.explain_conv(np.array(explain.LESSON_INPUT), parse_kernel("vertical_edge"))
    assert e.lesson["stated_result"] == [[3, 1], [2, 0]]
    assert e.lesson["first_sum_adds_to"] == -1
    assert "add to -1, not 3" in e.lesson["correction"]
    assert e.windows[0].written == explain.LESSON_STATED_SUM.replace("= 3", "= -1")


def test_cli_replays_the_lesson_by_default():
    """cnnx explain conv with no arguments shows the four windows, the result and the correction."""
    result = invoke("explain", "conv")
    assert result.exit_code == 0
    text = result.stdout
    assert "window 4 of 4" in text and "= -3" in text
    assert "[[3, 1], [2, 0]]" in text and "add to -1, not 3" in text.replace("\n", " ")
    assert "[1]" in text  # the highlighted window is marked even without colour


def test_json_carries_the_same_numbers_as_the_text():
    """--json parses and holds the windows, sums and result that the text shows."""
    data = json.loads(invoke("explain", "conv", "--json").stdout)
    assert data["result"] == [[-1, 1], [-1, -3]]
    assert [w["total"] for w in data["windows"]] == [-1, 1, -1, -3]
    text = invoke("explain", "conv").stdout
    for w in data["windows"]:
        assert w["written"] in text.replace("\n", "") or w["written"][:40] in text


def test_other_matrix_kernel_stride_and_padding_match_loops():
    """A matrix, kernel, stride and padding of the user's: the result equals the plain loop."""
    matrix = np.arange(30, dtype=np.float64).reshape(5, 6) % 7 - 3
    e = explain.explain_conv(matrix, parse_kernel("sobel_y"), stride=2, padding=1)
    want = conv2d_loops(matrix[None, None], parse_kernel("sobel_y").weights[None, None], None, (2, 2), ((1, 1), (1, 1)))
    np.testing.assert_allclose(e.result, want[0, 0])
    result = invoke("explain", "conv", "--input", "[[1,2,3],[4,5,6],[7,8,9]]", "--kernel", "[[1,0],[0,-1]]")
    assert result.exit_code == 0 and "= -4" in result.stdout


def test_image_patch_agrees_with_the_feature_map(tmp_path):
    """An image patch's sum equals the pipeline's feature map at that place and an independent loop there."""
    path = tmp_path / "img.png"
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30), np.uint8)
    Image.fromarray(pixels).save(path)
    image = load_image(path).array
    for row, col in [(0, 0), (7, 12), (19, 29)]:
        e = explain.explain_patch(image, str(path), parse_kernel("sobel_x"), row, col)
        assert e.window.total == pytest.approx(e.map_value, abs=1e-5)
        pads = ((1, 1), (1, 1))
        loops = conv2d_loops(
            image[None], parse_kernel("sobel_x").weights[None, None], None, (1, 1), pads, mode="replicate"
        )
        assert e.window.total == pytest.approx(loops[0, 0, row, col], abs=1e-5)
    result = invoke("explain", "conv", path, "--at", "7,12", "--kernel", "sobel_x")
    assert result.exit_code == 0 and "row 7, column 12" in result.stdout
    assert invoke("explain", "conv", path, "--at", "70,12").exit_code == 2


def test_relu_on_the_lesson_range():
    """ReLU on -10..10: negatives become 0, positives stay."""
    e = explain.explain_relu()
    assert e.values == list(range(-10, 11)) and e.outputs == [0] * 10 + list(range(11))
    assert invoke("explain", "relu").exit_code == 0


def test_relu_histogram_on_an_image(tmp_path):
    """On an image, the share ReLU zeroed equals the share of non-positive values before it."""
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40), np.uint8)).save(path)
    image = load_image(path).array
    pipeline = Pipeline(parse_spec("conv(sobel_x) -> relu"))
    e = explain.explain_relu_image(image, Chain(pipeline), 2)
    from cnnx.sources.pipeline import run

    conv = run(image, pipeline)[1].array
    assert e.zeroed == pytest.approx(np.mean(conv <= 0))
    assert sum(e.histogram["before"]) == sum(e.histogram["after"]) == conv.size
    result = invoke("explain", "relu", path, "--stage", "2", "--spec", "conv(sobel_x) -> relu")
    assert result.exit_code == 0 and "set" in result.stdout
    assert invoke("explain", "relu", path, "--stage", "1").exit_code == 2


def test_pool_windows_hand_computed():
    """2x2 max pooling of the lesson's input: windows' maxima 2, 3, 2, 2 and means 1, 1.5, 1, 1."""
    e = explain.explain_pool(np.array(explain.LESSON_INPUT))
    assert [w.max for w in e.windows] == [2, 3, 2, 2]
    assert [w.mean for w in e.windows] == [1, 1.5, 1, 1]
    assert invoke("explain", "pool").exit_code == 0


@pytest.fixture
def texture(tmp_path):
    """Random blobs: a picture whose fine detail a shift of one pixel disturbs."""
    rng = np.random.default_rng(3)
    pixels = (rng.random((64, 96)) > 0.7).astype(np.uint8) * 255
    path = tmp_path / "texture.png"
    Image.fromarray(pixels).save(path)
    return path


def test_zero_shift_is_identical(texture):
    """Shifting by nothing leaves every stage exactly as it was."""
    image = load_image(texture).array
    e = explain.shift_tolerance(image, "t", Chain(Pipeline(parse_spec("conv(sobel_x) -> relu -> maxpool(2)"))), [0])
    assert all(row.similarity == [1.0] for row in e.rows)


def test_pattern_periodic_with_the_shift_stays_the_same(tmp_path):
    """Stripes with a period of 4 moved by 4 pixels look the same: similarity 1 at every stage."""
    columns = (np.arange(96) // 2 % 2 * 255).astype(np.uint8)
    image = np.tile(columns, (40, 1))[None].astype(np.float32) / 255
    e = explain.shift_tolerance(
        image, "stripes", Chain(Pipeline(parse_spec("conv(sobel_x) -> relu -> maxpool(2)"))), [4]
    )
    for row in e.rows:
        assert row.similarity[0] == pytest.approx(1.0)


def test_max_pooling_is_more_tolerant_than_no_pooling(texture):
    """On random texture, a one-pixel shift changes the max-pooled map less than the map before pooling."""
    image = load_image(texture).array
    e = explain.shift_tolerance(image, "t", Chain(Pipeline(parse_spec("conv(box) -> relu -> maxpool(4)"))), [1, 2])
    before, after = e.rows[1].similarity, e.rows[2].similarity
    assert after[0] > before[0]
    result = invoke("explain", "pool", texture, "--shifts", "2", "--json")
    data = json.loads(result.stdout)
    assert data["shifts"] == [1, 2] and len(data["rows"]) == 6


def test_field_grows_stage_by_stage():
    """The lesson pipeline's receptive field: 3, 3, 4, 24, 24, 26."""
    rows = explain.explain_field(Chain(Pipeline(parse_spec("conv(sobel_x) -> relu"))), (1, 32, 32))
    assert [r.receptive_field[0] for r in rows] == [3, 3]
    data = json.loads(invoke("explain", "field", "--json").stdout)
    assert [r["receptive_field"][0] for r in data] == [3, 3, 4, 24, 24, 26]


def test_no_colour_when_piped():
    """Piped output (as under CliRunner) carries no escape codes."""
    assert "\x1b[" not in invoke("explain", "conv").stdout


@pytest.mark.parametrize(
    "spec, color, convention",
    [
        (None, False, "correlation"),
        ("conv(sobel_x, laplacian; combine=depthwise, padding_mode=reflect) -> leaky_relu(0.1)"
         " -> avgpool(3, stride=2, padding=1)", True, "convolution"),
        ("conv(box:size=3, emboss; stride=2, padding=2, dilation=2) -> abs -> maxpool(2, padding=1)", True,
         "correlation"),
    ],
)
def test_every_value_of_a_chain_is_worked_out_from_the_stage_before(spec, color, convention):
    """At random places of every stage, the arithmetic shown (windows, weights, products, sums, bias, pooling
    windows, activations) gives the stored value: a loop over the numbers, not the stage's own code."""
    from cnnx.explain import explain_value
    from cnnx.sources.pipeline import run
    from cnnx.sources.spec import load_pipeline

    pipeline = load_pipeline(spec=spec, color=color, convention=convention)
    rng = np.random.default_rng(7)
    image = rng.random((3 if color else 1, 37, 41), dtype=np.float32)
    results = run(image, pipeline)
    for stage, before, after in zip(pipeline.stages, results, results[1:], strict=False):
        for _ in range(12):
            c, r, q = (int(rng.integers(n)) for n in after.array.shape)
            shown = explain_value(stage, before.array, after.array, after.index, c, r, q,
                                  flip=convention == "convolution")
            by_hand = sum(np.nansum(np.asarray(p.products, float)) for p in shown.parts if p.products) + shown.bias
            if stage.name == "conv":
                assert by_hand == pytest.approx(after.array[c, r, q], rel=1e-4, abs=1e-5)
            assert shown.total == pytest.approx(float(after.array[c, r, q]), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("source", ["lesson", "shapes", "blocks.onnx"])
@pytest.mark.slow
def test_explain_value_gives_every_stage_value_as_the_pipeline_stored_it(tmp_path, source):
    """cnnx explain value, for every stage of a chain, the shipped model and an ONNX network: its arithmetic adds
    up to the value `cnnx pipeline --save-raw` stored at that place, and it says so."""
    options = []
    if source == "shapes":
        options = ["--model", "shapes"]
    elif source == "blocks.onnx":
        pytest.importorskip("onnx")
        from onnx_models import block_model

        options = ["--model", str(block_model(tmp_path / source)), "--layers", "all"]
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (40, 48, 3), np.uint8)).save(image)
    run = tmp_path / "run"
    done = CliRunner().invoke(app, ["pipeline", str(image), "-o", str(run), "--save-raw", *options])
    assert done.exit_code == 0, done.output
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    for number in range(1, len(stages)):
        raw = np.load(run / stages[number]["raw"])
        place = (raw.shape[0] - 1, raw.shape[1] // 2, raw.shape[2] // 3)
        asked = ["explain", "value", str(image), "--stage", str(number), "--channel", str(place[0]),
                 "--at", f"{place[1]},{place[2]}", *options]
        data = json.loads(CliRunner().invoke(app, [*asked, "--json"]).stdout)
        assert data["total"] == pytest.approx(float(raw[place]), rel=1e-4, abs=1e-5), stages[number]["description"]
        shown = CliRunner().invoke(app, asked)
        assert shown.exit_code == 0 and "holds" in shown.stdout
    beyond = CliRunner().invoke(app, ["explain", "value", str(image), "--stage", str(len(stages)), "--at", "0,0",
                                      *options])
    assert beyond.exit_code != 0 and len(beyond.output.strip().splitlines()) == 1


def test_a_values_11x11_window_prints_its_arithmetic_at_80_columns():
    """cnnx explain value of the lesson's second conv (an 11x11 difference of Gaussians): the window, the kernel
    and the products print as grids that fit 80 columns, not only a pointer to --json."""
    from typer.testing import CliRunner

    from cnnx.app.cli import app
    from cnnx.base.choices import SAMPLES

    result = CliRunner().invoke(app, ["explain", "value", str(SAMPLES / "chelsea.png"), "--stage", "4", "--channel",
                                      "0", "--at", "20,30"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "--json" not in result.stdout
    for title in ("window", "kernel", "products"):
        assert title in result.stdout
    assert "…" not in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 80


def _maxpool2(maps: np.ndarray) -> np.ndarray:
    C, H, W = maps.shape
    return maps[:, : H // 2 * 2, : W // 2 * 2].reshape(C, H // 2, 2, W // 2, 2).max(axis=(2, 4))


def test_the_lesson_tour_works_its_steps_out_on_the_image():
    """The six steps on a real photo through conv -> relu -> maxpool: the worked example's sums are the hand-worked
    ones, the window to work out is the strongest of map 0 (a loop's), ReLU's zero share and pooling's measured
    shift likeness are computed again here with loops and numpy's correlation."""
    from scipy.signal import correlate2d

    from cnnx.explain.lesson import lesson_tour

    image = load_image("samples/chelsea.png").array[:, 100:164, 150:230]
    chain = Chain(Pipeline(parse_spec("conv(sobel_x; padding=0) -> relu -> maxpool(2)")))
    steps = lesson_tour(chain, image)
    assert [s["title"][0] for s in steps] == list("123456") and [s["stage"] for s in steps[:4]] == [0, 1, 2, 3]
    example = steps[1]["example"]
    assert example["result"] == [[LESSON_WINDOWS[(r, c)][2] for c in range(2)] for r in range(2)]
    assert example["stated"] == [[3, 1], [2, 0]] and "not 3" in example["correction"]
    weights = parse_kernel("sobel_x").weights.astype(np.float64)

    def stages(x):
        conv = correlate2d(x[0].astype(np.float64), weights, mode="valid")[None]
        return conv, np.maximum(conv, 0), _maxpool2(np.maximum(conv, 0))

    conv, relu, pooled = stages(image)
    window = steps[1]["window"]
    assert (window["row"], window["col"]) == np.unravel_index(np.argmax(conv[0]), conv[0].shape)
    assert f"{np.mean(relu == 0):.0%}" in steps[2]["text"][1]
    shifted = np.concatenate([image[..., :1], image[..., :-1]], axis=-1)
    _, relu_moved, pooled_moved = stages(shifted)
    likeness = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in ((relu, relu_moved), (pooled, pooled_moved))]
    assert f"correlation of {likeness[1]:.2f}" in steps[3]["text"][1] and f"{likeness[0]:.2f}." in steps[3]["text"][1]
    assert steps[5]["stage"] is None and "--model shapes" in steps[5]["text"][1]


def test_the_lesson_tour_of_the_shapes_model_ends_in_its_answer():
    from cnnx.explain.lesson import lesson_tour
    from cnnx.sources.model import load_model

    model = load_model("shapes")
    image = load_image("samples/star.png").array
    steps = lesson_tour(model, image)
    answer = model.answer(list(model.stream(model.prepare(image)))[-1].array)
    assert steps[5]["answer"][0][0] == answer[0][0] == "star" and steps[5]["stage"] == 8
    assert steps[4]["stage"] == 6  # the last stage with a map: the second pool
