"""Stages, the default pipeline, shapes and receptive fields."""

import numpy as np
import pytest
from reference import conv2d_loops

from cnnx.base.errors import CnnxError
from cnnx.compute import ops
from cnnx.sources.kernels import parse_kernel
from cnnx.sources.pipeline import check, run, stream
from cnnx.sources.source import Stats
from cnnx.sources.stages import LESSON, Activation, Conv, Pool


def stripes(height=32, width=32, period=8, vertical=True):
    """Square-wave stripes: vertical ones change along columns, horizontal ones along rows."""
    axis = np.arange(width if vertical else height)
    wave = ((axis // (period // 2)) % 2).astype(np.float32)
    return np.broadcast_to(wave[None, :] if vertical else wave[:, None], (height, width))[None].copy()


def test_lesson_pipeline_shapes_and_order():
    """The default pipeline gives conv, relu, maxpool twice, four channels, halving twice."""
    results = run(np.random.default_rng(0).random((1, 40, 30), dtype=np.float32))
    assert [r.name for r in results] == ["input", "conv", "relu", "maxpool", "conv", "relu", "maxpool"]
    assert [r.shape for r in results] == [(1, 40, 30)] + [(4, 40, 30)] * 2 + [(4, 20, 15)] * 3 + [(4, 10, 7)]
    assert results[1].labels == ("vertical_edge", "horizontal_edge", "diagonal_edge", "antidiagonal_edge")


def test_lesson_first_stage_equals_loop_reference():
    """Stage 1 of the default pipeline is the four edge kernels correlated with a replicated border."""
    image = np.random.default_rng(1).random((1, 12, 9), dtype=np.float32)
    weights = np.stack([parse_kernel(name).weights for name in LESSON[0].filters])[:, None]
    want = conv2d_loops(image[None], weights, pads=((1, 1), (1, 1)), mode="replicate")[0]
    np.testing.assert_allclose(run(image)[1].array, want, atol=1e-5)


def test_relu_stage_statistics_count_zeros():
    """The relu stage's zero fraction equals the fraction of non-positive values it received."""
    results = run(np.random.default_rng(2).random((1, 50, 50), dtype=np.float32))
    conv, relu = results[1], results[2]
    assert relu.stats.zeros == pytest.approx(np.mean(conv.array <= 0))
    assert relu.stats.min == 0 and relu.stats.max == pytest.approx(conv.stats.max)


def test_vertical_stripes_light_the_vertical_edge_map_only():
    """On vertical stripes the vertical-edge map is strong and the horizontal-edge map is zero inside."""
    results = run(stripes(vertical=True))
    vertical, horizontal = results[1].array[0], results[1].array[1]
    assert np.abs(vertical).max() == 3
    assert not horizontal[1:-1, 1:-1].any()


def test_receptive_fields_hand_computed():
    """conv3 -> pool2 -> conv3 -> pool2 sees 3, 4, 8, 10 pixels, with jumps 1, 2, 2, 4."""
    stages = (Conv.of("sobel_x"), Pool("max", 2), Conv.of("sobel_x"), Pool("max", 2))
    results = run(np.zeros((1, 32, 32), np.float32), stages)
    assert [r.receptive_field[0] for r in results] == [1, 3, 4, 8, 10]
    assert [r.jump[0] for r in results] == [1, 1, 2, 2, 4]


def test_receptive_field_of_lesson_default():
    """The default grows from 3 (one 3x3 edge) to 26 pixels (after the 11x11 centre-surround at jump 2)."""
    results = run(np.zeros((1, 64, 64), np.float32))
    assert [r.receptive_field for r in results] == [(1, 1), (3, 3), (3, 3), (4, 4), (24, 24), (24, 24), (26, 26)]


def test_strided_dilated_receptive_field():
    """A 3x3 conv with dilation 2 sees 5 pixels; with stride 2 after it, the next 3x3 sees 5 + 2*2*... = 13."""
    stages = (Conv.of("box", dilation=2, padding=0, stride=2), Conv.of("box", padding=0))
    results = run(np.zeros((1, 40, 40), np.float32), stages)
    assert [r.receptive_field[0] for r in results] == [1, 5, 9]
    assert [r.jump[0] for r in results] == [1, 2, 2]


def test_depthwise_and_average_channel_counts():
    """On RGB, averaged conv gives one map per kernel; depthwise gives one per channel and kernel."""
    image = np.random.default_rng(3).random((3, 16, 16), dtype=np.float32)
    averaged = Conv.of("sobel_x", "sobel_y").apply(image)
    depthwise = Conv.of("sobel_x", "sobel_y", combine="depthwise").apply(image)
    assert averaged.shape == (2, 16, 16) and depthwise.shape == (6, 16, 16)
    sobel_x = parse_kernel("sobel_x").weights[None, None]
    stage = Conv.of("sobel_x", "sobel_y", combine="depthwise")
    labels = stage.labels(("red", "green", "blue"))
    assert labels[:4] == ("sobel_x of red", "sobel_x of green", "sobel_x of blue", "sobel_y of red")
    np.testing.assert_allclose(depthwise[1], ops.conv2d(image[1:2], sobel_x, padding="same")[0], atol=1e-6)
    mean_of_channels = np.mean([ops.conv2d(image[c : c + 1], sobel_x, padding="same")[0] for c in range(3)], axis=0)
    np.testing.assert_allclose(averaged[0], mean_of_channels, atol=1e-6)


def test_check_names_the_stage_that_cannot_run():
    """A pipeline too deep for a small image is refused up front, naming the stage and the sizes."""
    with pytest.raises(CnnxError, match=r"stage 6, maxpool\(2\): the 1x1 input is smaller than the 2x2 window"):
        check(LESSON, (1, 3, 3))
    with pytest.raises(CnnxError, match=r"stage 1, conv\(sobel_x; padding=valid\): a filter spans 3x3"):
        check((Conv.of("sobel_x", padding="valid"),), (1, 2, 2))


@pytest.mark.parametrize("function", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_stage_leaves_its_input(function):
    """An activation stage returns a new array; the previous stage's output (still to be written) is intact."""
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(1, 3, 4)
    before = x.copy()
    Activation(function).apply(x)
    np.testing.assert_array_equal(x, before)


def test_reuse_overwrites_the_stage_before_an_activation_and_nothing_else():
    """With reuse, each result equals the plain run's; the activation takes the conv's memory, never the image's."""
    image = np.random.default_rng(5).standard_normal((1, 20, 24)).astype(np.float32)
    stages = (Activation("relu"), Conv.of("sobel_x", "sobel_y"), Activation("tanh"), Pool("max", 2), Activation("abs"))
    plain = run(image, stages)
    before = image.copy()
    arrays = []
    for result, want in zip(stream(image, stages, reuse=True), plain, strict=True):
        np.testing.assert_array_equal(result.array, want.array)
        assert result.stats == want.stats
        arrays.append(result.array)
    np.testing.assert_array_equal(image, before)
    assert arrays[1] is not arrays[0]  # the first stage reads the image: it gets memory of its own
    assert arrays[3] is arrays[2] and arrays[5] is arrays[4]


def test_stats_against_numpy():
    """min, max and the share of exact zeros equal numpy's whole-array answers; the mean is float32-close."""
    values = np.random.default_rng(6).standard_normal((3, 700, 900)).astype(np.float32)
    values[values < -0.5] = 0
    stats = Stats.of(values)
    assert (stats.min, stats.max) == (values.min(), values.max())
    # float32 pairwise sums of each band: good to far better than a millionth of the values' size
    assert abs(stats.mean - values.mean(dtype=np.float64)) <= 1e-6 * np.abs(values).mean(dtype=np.float64)
    assert stats.zeros == np.mean(values == 0)
    values[1, 500, 3], values[2, 1, 1], values[0, 0, 0] = np.nan, np.inf, -np.inf
    finite = values[np.isfinite(values)]
    stats = Stats.of(values)
    assert (stats.min, stats.max) == (finite.min(), finite.max()) and stats.nonfinite == 3 / values.size
    assert abs(stats.mean - finite.mean(dtype=np.float64)) <= 1e-6 * np.abs(finite).mean(dtype=np.float64)
    assert Stats.of(np.full((1, 2, 2), np.nan, np.float32)) == Stats(None, None, None, 0.0, 1.0)
