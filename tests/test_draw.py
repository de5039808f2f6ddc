"""Drawing maps: value ranges, colour maps, enlargement, montages."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnx.base.errors import CnnxError
from cnnx.render import draw


def pixels(values, method, **options):
    values = np.array(values, np.float32)
    low, high = draw.value_range(values, method, **options)
    return draw.to_index(values, low, high).tolist(), (low, high)


def test_symmetric_puts_zero_in_the_middle():
    """symmetric: [-2, 0, 1] spans -2..2, so 0 is level 128 and 1 is 191 (255 * 3/4, rounded)."""
    assert pixels([-2, 0, 1], "symmetric") == ([0, 128, 191], (-2.0, 2.0))


def test_minmax_stretches_to_the_ends():
    """minmax: [1, 2, 5] spans 1..5, so 2 is 255/4 = 63.75 -> 64."""
    assert pixels([1, 2, 5], "minmax") == ([0, 64, 255], (1.0, 5.0))


def test_all_negative_map():
    """An all-negative map: symmetric keeps 0 at 128 (the largest value is 127.5 -> 128 below it); minmax spans it."""
    assert pixels([-4, -2, -1], "symmetric") == ([0, 64, 96], (-4.0, 4.0))
    assert pixels([-4, -2, -1], "minmax") == ([0, 170, 255], (-4.0, -1.0))


def test_constant_maps_use_the_middle_colour():
    """A constant map (all zeros after ReLU) is drawn with the middle colour, range widened by 1, no warning."""
    assert pixels([0, 0, 0], "symmetric") == ([128, 128, 128], (-1.0, 1.0))
    assert pixels([3, 3], "minmax") == ([128, 128], (2.0, 4.0))


def test_percentile_clips_outliers():
    """percentile: the median of |x| over 999 ones, 1000 minus ones and one 100 is 1: the outlier is clipped."""
    values = [1.0] * 999 + [-1.0] * 1000 + [100.0]
    index, span = pixels(values, "percentile", percentile=50)
    assert span == (-1.0, 1.0) and index[-1] == 255 and index[0] == 255 and index[999] == 0
    counted = draw.indexed(np.array(values, np.float32), *span, count=True)
    assert (counted.below, counted.above) == (0, 1) and counted.clipped == (0.0, 1 / 2000)


def test_percentile_of_a_few_values_is_their_own_range():
    """Too few values to speak of outliers (a row of class scores): percentile draws them all, as symmetric does."""
    assert pixels([1, 1, -1, 100], "percentile", percentile=50) == (
        [129, 129, 126, 255],
        (-100.0, 100.0),
    )  # 101/200*255


def test_values_never_below_zero_get_all_the_colours():
    """A blur or a ReLU (no value below zero) is drawn from 0 to its largest value, not from minus that."""
    assert pixels([0, 1, 2], "symmetric") == ([0, 128, 255], (0.0, 2.0))


def test_fixed_range_clips_and_needs_a_range():
    """fixed: the given range, values outside clipped."""
    assert pixels([-3, 0, 0.5, 3], "fixed", fixed=(-1, 1)) == ([0, 128, 191, 255], (-1.0, 1.0))
    with pytest.raises(CnnxError, match="needs a range"):
        draw.value_range(np.zeros(2), "fixed")


def test_non_finite_values_are_ignored_for_the_range():
    """NaN and infinities do not set the range; NaN is drawn at index 0."""
    assert pixels([np.nan, -1, 2, np.inf], "minmax") == ([0, 0, 255, 255], (-1.0, 2.0))


@pytest.mark.parametrize("method", ["symmetric", "minmax", "percentile"])
def test_recorded_range_inverts_within_one_level(method):
    """value = low + index/255 * (high - low) recovers every value to within one grey level."""
    values = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    low, high = draw.value_range(values, method, percentile=100)
    index = draw.to_index(values, low, high)
    back = low + index / 255 * (high - low)
    assert np.abs(back - values).max() <= (high - low) / 255


def test_sqrt_stretch_by_hand():
    """sqrt on -4..4: 1 is a quarter of the end, so it is drawn half way from the middle (127.5 + 63.75 -> 191);
    -4, 0 and 4 stay where linear puts them.  On 0..4 (values never below zero), 1 is half way: 127.5 -> 128."""
    values = np.array([-4, -1, 0, 1, 4], np.float32)
    assert draw.to_index(values, -4, 4, "sqrt").tolist() == [0, 64, 128, 191, 255]
    assert draw.to_index(np.array([0, 1, 4], np.float32), 0, 4, "sqrt").tolist() == [0, 128, 255]


@settings(max_examples=60, deadline=None)
@given(
    low=st.floats(-1e3, 0), width=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16), shift=st.floats(-2, 2)
)
def test_sqrt_stretch_is_monotone_and_inverts(low, width, seed, shift):
    """Any range (zero inside it or not): indices never fall as values rise, and to_value gives each value back
    to within half the colour step where it lies (at most twice the linear step, at the flat end), and the values'
    own float32 rounding."""
    low, high = low + shift * width, low + shift * width + width
    values = np.sort(np.random.default_rng(seed).uniform(low, high, 500)).astype(np.float32)
    index = draw.to_index(values, low, high, "sqrt")
    assert np.all(np.diff(index.astype(int)) >= 0)
    back = draw.to_value(index, low, high, "sqrt")
    rounding = 2 * float(np.spacing(np.float32(max(abs(low), abs(high)))))
    assert np.abs(back - values).max() <= (high - low) / 255 + rounding


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB colours (D65), from the sRGB and CIELAB definitions."""
    c = rgb / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def test_gray_and_viridis_rise_in_lightness():
    """gray runs black to white; viridis (perceptually uniform) rises in lightness from dark purple to yellow."""
    assert draw.colormap("gray") is None
    viridis = draw.colormap("viridis")
    assert viridis.shape == (256, 3)
    assert tuple(viridis[0]) == (68, 1, 84) and tuple(viridis[-1]) == (253, 231, 37)
    light = lightness(viridis.astype(float))
    assert np.all(np.diff(light) > -0.25)  # rising, to within the rounding of 8-bit colours
    assert light[-1] - light[0] > 70


def test_diverging_is_lightest_in_the_middle_blue_below_red_above():
    """diverging: blue at the low end, red at the high end, lightness rising to the centre then falling."""
    table = draw.colormap("diverging").astype(float)
    assert table[0, 2] > table[0, 0] and table[-1, 0] > table[-1, 2]
    light = lightness(table)
    assert np.all(np.diff(light[:120]) >= -0.5) and np.all(np.diff(light[136:]) <= 0.5)
    assert light[128] > 90


def test_unknown_colour_map():
    """An unknown colour map is a CnnxError that suggests the short names."""
    with pytest.raises(CnnxError, match="unknown colour map 'rainbowz'"):
        draw.colormap("rainbowz")


def test_upscale_makes_crisp_squares():
    """A 2x2 map grows by a whole factor; each source pixel becomes a uniform square."""
    big = draw.upscale(np.array([[0, 50], [100, 250]], np.uint8), min_side=128)
    assert big.shape == (128, 128)
    assert (big[:64, :64] == 0).all() and (big[64:, 64:] == 250).all()
    assert draw.upscale(np.zeros((200, 300), np.uint8)).shape == (200, 300)
    # The long side is kept, the rows thickened.
    assert draw.upscale(np.zeros((1, 1500), np.uint8), max_side=2048).shape == (24, 1500)


@pytest.mark.parametrize("count", [1, 2, 7, 16, 64])
@pytest.mark.slow
def test_montage_geometry(count):
    """count maps of 20x30 lie whole in a row-major grid as wide as a page, rows full but the last, evenly spaced."""
    from cnnx.render.sheets import montage

    table = draw.colormap("viridis")  # colours no grey label can take
    thumbs = [draw.thumbnail(np.full((20, 30), 4 * k, np.uint8), table, 90) for k in range(count)]
    sheet = np.asarray(montage(thumbs, [f"ch{k:02d} a label long enough to wrap" for k in range(count)], None))
    boxes = []
    for k in range(count):
        rows_, cols_ = np.nonzero((sheet == table[4 * k]).all(axis=2))
        boxes.append((rows_.min(), cols_.min(), rows_.max() + 1 - rows_.min(), cols_.max() + 1 - cols_.min()))
        assert boxes[-1][2:] == (60, 90) and len(rows_) == 60 * 90  # the 20x30 map scaled by 3, whole
    tops, lefts = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    columns = len(lefts)
    assert [(tops.index(b[0]), lefts.index(b[1])) for b in boxes] == [divmod(k, columns) for k in range(count)]
    assert columns == count or sheet.shape[1] + 90 > 1100  # as many a row as a page of 1100 px holds
    assert sheet.shape[1] <= 1200
    for steps, size in ((np.diff(lefts), 90), (np.diff(tops), 60)):
        assert len(set(steps)) <= 1 and all(step > size for step in steps)  # even, with a gap


def test_long_rows_are_drawn_thick_enough_to_see():
    """A 1x1024 row (a flattened vector) becomes 2048 wide and 24 tall: each value a 2x24 bar."""
    row = np.arange(1024, dtype=np.uint8).reshape(1, 1024)
    big = draw.upscale(row)
    assert big.shape == (24, 2048)
    assert (big[:, 0:2] == 0).all() and (big[:, 2:4] == 1).all()
