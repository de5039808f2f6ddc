"""cnnx.compute.ops against plain loops, scipy, hand-computed values and the torch size formulas."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import avg_pool2d_loops, conv2d_loops, max_pool2d_loops, pool_size
from scipy import ndimage, signal

from cnnx.compute import ops

LESSON_INPUT = np.array([[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]], dtype=np.float32)
VERTICAL_EDGE = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float32)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(got, want, atol_scale=1.0):
    """float32 results within 1e-5 relative of a float64 reference (absolute for values near 0)."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * atol_scale)


# ---------------------------------------------------------------- the lesson


def test_lesson_example_is_minus_one_not_three():
    """The lesson's 4x4 input and vertical-edge filter give [[-1, 1], [-1, -3]], not the printed [[3, 1], [2, 0]]."""
    out = ops.conv2d(LESSON_INPUT[None], VERTICAL_EDGE[None, None])
    np.testing.assert_array_equal(out, [[[-1, 1], [-1, -3]]])


def test_lesson_writes_the_right_products_and_the_wrong_sum():
    """The nine products the lesson writes for the first window are the right ones; they add to -1, not its 3."""
    from cnnx.explain import LESSON_STATED_SUM

    terms, stated = LESSON_STATED_SUM.split("=")
    written = [tuple(float(v) for v in term.strip(" ()").split("*")) for term in terms.split("+")]
    window = [(LESSON_INPUT[r, c], VERTICAL_EDGE[r, c]) for r in range(3) for c in range(3)]
    assert written == window
    assert float(stated) == 3 and sum(a * b for a, b in written) == -1


def test_lesson_example_relu():
    """ReLU of the lesson's feature map keeps only the single positive value."""
    out = ops.relu(ops.conv2d(LESSON_INPUT[None], VERTICAL_EDGE[None, None]))
    np.testing.assert_array_equal(out, [[[0, 1], [0, 0]]])


def test_lesson_example_true_convolution_flips_the_kernel():
    """True convolution (flipped kernel, as scipy.signal.convolve2d) gives the negation: [[1, -1], [1, 3]]."""
    flipped = ops.conv2d(LESSON_INPUT[None], VERTICAL_EDGE[::-1, ::-1][None, None].copy())
    np.testing.assert_array_equal(flipped[0], signal.convolve2d(LESSON_INPUT, VERTICAL_EDGE, mode="valid"))
    np.testing.assert_array_equal(flipped, [[[1, -1], [1, 3]]])


# ---------------------------------------------------------------- conv2d


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3, 7]))  # 7: a many-group (depthwise) layer over several channels
    C = groups * draw(st.integers(1, 2))
    O = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    H, W = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    batched = draw(st.booleans())
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(
        st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("valid"), st.just("same"))
    )
    if padding == "same":
        stride = (1, 1)
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    seed = draw(st.integers(0, 2**16))
    return groups, C, O, (kh, kw), (H, W), batched, stride, dilation, padding, mode, seed


def torch_pads(padding, kernel, dilation):
    """((top, bottom), (left, right)) as torch pads: for "same" the odd pixel goes after."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph), (pw, pw)


@SETTINGS
@given(conv_cases())
@pytest.mark.slow
def test_conv2d_matches_loops(case):
    """conv2d equals the pixel-by-pixel loop for every option: stride, padding, dilation, groups, border, bias."""
    groups, C, O, kernel, (H, W), batched, stride, dilation, padding, mode, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, C, H, W)).astype(np.float32)
    weight = rng.standard_normal((O, C // groups, *kernel)).astype(np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    pads = torch_pads(padding, kernel, dilation)
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    padded = [n + sum(p) for n, p in zip((H, W), pads, strict=True)]
    # torch's limits: reflect mirrors once (padding < size), circular wraps once (padding <= size).
    too_wide = (mode == "reflect" and (max(pads[0]) >= H or max(pads[1]) >= W)) or (
        mode == "circular" and (max(pads[0]) > H or max(pads[1]) > W)
    )
    if span[0] > padded[0] or span[1] > padded[1] or too_wide:
        with pytest.raises(ValueError):
            ops.conv2d(x, weight, bias, stride, padding, dilation, groups, mode)
        return
    want = conv2d_loops(x, weight, bias, stride, pads, dilation, groups, mode)
    got = ops.conv2d(x if batched else x[0], weight, bias, stride, padding, dilation, groups, mode)
    assert got.dtype == np.float32
    close(got if batched else got[None], want if batched else want[:1], atol_scale=np.abs(weight).sum())


@SETTINGS
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5])),
        elements=st.sampled_from([-1.0, 0.0, 1.0, 2.0, -0.5]),
    ),
    st.sampled_from(["zeros", "replicate"]),
    st.integers(0, 2**16),
)
def test_unit_weights_match_scipy(kernel, mode, seed):
    """Kernels mostly of 1, -1 and 0 (edge and box filters, whose taps are added without multiplies) equal scipy's."""
    image = np.random.default_rng(seed).integers(-50, 50, (23, 31)).astype(np.float32)
    scipy_mode = {"zeros": "constant", "replicate": "nearest"}[mode]
    want = ndimage.correlate(image.astype(np.float64), kernel.astype(np.float64), mode=scipy_mode)
    got = ops.conv2d(image[None], kernel[None, None], padding="same", padding_mode=mode)[0]
    close(got, want, np.abs(kernel).sum() * 50)


@SETTINGS
@given(st.integers(3, 40), st.integers(3, 40), st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**16))
def test_conv2d_matches_scipy_correlate2d(H, W, kh, kw, seed):
    """One kernel on one channel equals scipy.signal.correlate2d in 'valid' mode, and 'same' for odd kernels."""
    rng = np.random.default_rng(seed)
    image = rng.random((H, W)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw)).astype(np.float32)
    if kh <= H and kw <= W:
        got = ops.conv2d(image[None], kernel[None, None])[0]
        close(got, signal.correlate2d(image.astype(np.float64), kernel, mode="valid"), np.abs(kernel).sum())
    if kh % 2 and kw % 2:
        got = ops.conv2d(image[None], kernel[None, None], padding="same")[0]
        close(got, signal.correlate2d(image.astype(np.float64), kernel, mode="same"), np.abs(kernel).sum())


@pytest.mark.parametrize("mode, scipy_mode", [("reflect", "mirror"), ("replicate", "nearest"), ("circular", "wrap")])
def test_conv2d_padding_modes_match_scipy_ndimage(mode, scipy_mode):
    """reflect, replicate and circular borders match scipy.ndimage's mirror, nearest and wrap."""
    rng = np.random.default_rng(5)
    image = rng.random((23, 31))
    kernel = rng.standard_normal((5, 3))
    got = ops.conv2d(image[None], kernel[None, None], padding="same", padding_mode=mode)[0]
    close(got, ndimage.correlate(image, kernel, mode=scipy_mode), np.abs(kernel).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_conv2d_accepts_real_dtypes_and_returns_float32(dtype):
    """Any real input dtype is computed and returned as float32."""
    image = (np.arange(36).reshape(1, 6, 6) % 7).astype(dtype)
    out = ops.conv2d(image, np.ones((1, 1, 3, 3)))
    assert out.dtype == np.float32
    close(out, conv2d_loops(image[None], np.ones((1, 1, 3, 3)))[0])


@given(
    st.integers(1, 30), st.integers(1, 30), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3)
)
def test_conv_output_size_is_torch_formula(size, kernel, stride, padding, dilation, _):
    """Output length is (size + 2*padding - dilation*(kernel-1) - 1) // stride + 1, the torch formula."""
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        return
    out = ops.conv2d(
        np.zeros((1, size, 3)), np.ones((1, 1, kernel, 1)), stride=stride, padding=padding, dilation=dilation
    )
    assert out.shape[1] == (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def test_identity_kernel_returns_input():
    """An identity kernel with 'same' padding returns the image unchanged."""
    image = np.linspace(-1, 1, 3 * 17 * 13, dtype=np.float32).reshape(3, 17, 13)
    identity = np.zeros((3, 1, 3, 3), np.float32)
    identity[:, :, 1, 1] = 1
    np.testing.assert_array_equal(ops.conv2d(image, identity, padding="same", groups=3), image)


def test_constant_image_gives_zero_edges_and_step_gives_a_line():
    """A flat image has no edges; a vertical step gives a vertical line two pixels wide and nothing else."""
    kernel = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]], np.float32)
    assert not ops.conv2d(np.full((1, 9, 9), 0.7), kernel).any()
    step = np.zeros((1, 9, 10), np.float32)
    step[:, :, 5:] = 1
    out = ops.conv2d(step, kernel)[0]
    np.testing.assert_array_equal(out[:, 3:5], 4)
    assert not np.delete(out, [3, 4], axis=1).any()


IMPOSSIBLE_CONVS = [
    (dict(x=np.zeros((1, 2, 2)), weight=np.zeros((1, 1, 3, 3))), "larger than the padded input"),
    (dict(x=np.zeros((3, 5, 5)), weight=np.zeros((2, 1, 3, 3)), groups=2), "groups=2 must divide"),
    (dict(x=np.zeros((4, 5, 5)), weight=np.zeros((2, 3, 3, 3))), "weight expects 3 input channels"),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((3, 3))), "weight must be 4-D"),
    (dict(x=np.zeros((5, 5)), weight=np.zeros((1, 1, 3, 3))), "x must be a 3-D"),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((1, 1, 3, 3)), stride=0), "stride must be at least 1"),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((1, 1, 3, 3)), padding="full"), "padding must be an int"),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((1, 1, 3, 3)), padding="same", stride=2), "needs stride 1"),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((1, 1, 3, 3)), padding_mode="mirror"), "padding_mode must be"),
    (
        dict(x=np.zeros((1, 2, 2)), weight=np.zeros((1, 1, 5, 5)), padding=2, padding_mode="reflect"),
        "smaller than the input",
    ),
    (dict(x=np.zeros((1, 5, 5)), weight=np.zeros((2, 1, 3, 3)), bias=np.zeros(3)), "bias must have shape (2,)"),
]


@pytest.mark.parametrize("arguments, message", IMPOSSIBLE_CONVS)
def test_conv2d_refuses_impossible_requests(arguments, message):
    """Each impossible request raises ValueError naming the parameter, the value and what was expected."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ops.conv2d(**arguments)


# ---------------------------------------------------------------- pooling


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pad = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return kernel, stride, pad, dilation, size, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**16))


@SETTINGS
@given(pool_cases())
def test_max_pool2d_matches_loops(case):
    """max_pool2d equals the loop for every kernel, stride, padding, dilation and ceil_mode."""
    kernel, stride, pad, dilation, (H, W), ceil_mode, _, seed = case
    x = np.random.default_rng(seed).standard_normal((2, 3, H, W)).astype(np.float32)
    steps = stride or kernel
    sizes = [
        pool_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip((H, W), kernel, steps, pad, dilation, strict=True)
    ]
    if min(sizes) < 1:
        with pytest.raises(ValueError, match="does not fit"):
            ops.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode)
        return
    got = ops.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode)
    np.testing.assert_array_equal(got, max_pool2d_loops(x, kernel, steps, pad, dilation, ceil_mode))


@SETTINGS
@given(pool_cases())
def test_avg_pool2d_matches_loops(case):
    """avg_pool2d equals the loop, with and without count_include_pad, under ceil_mode's partial windows too."""
    kernel, stride, pad, _, (H, W), ceil_mode, include_pad, seed = case
    x = np.random.default_rng(seed).standard_normal((1, 2, H, W)).astype(np.float32)
    steps = stride or kernel
    sizes = [pool_size(n, k, s, p, 1, ceil_mode) for n, k, s, p in zip((H, W), kernel, steps, pad, strict=True)]
    if min(sizes) < 1:
        with pytest.raises(ValueError):
            ops.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad)
        return
    got = ops.avg_pool2d(x[0], kernel, stride, pad, ceil_mode, include_pad)
    close(got, avg_pool2d_loops(x, kernel, steps, pad, ceil_mode, include_pad)[0])


def test_pool_ceil_mode_last_window():
    """ceil_mode keeps a last partial window that starts inside the input: 5 wide, 2x2 pools give 3 columns."""
    x = np.arange(10, dtype=np.float32).reshape(1, 2, 5)
    np.testing.assert_array_equal(ops.max_pool2d(x, 2, ceil_mode=True), [[[6, 8, 9]]])
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), [[[6, 8]]])
    # The last window holds 4 and 9 only: the part past the input is not counted, (4 + 9) / 2.
    np.testing.assert_allclose(ops.avg_pool2d(x, 2, ceil_mode=True), [[[3, 5, 6.5]]])


def test_pool_one_by_one_changes_nothing():
    """1x1 pooling with stride 1 returns the input."""
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 5)).astype(np.float32)
    np.testing.assert_array_equal(ops.max_pool2d(x, 1), x)
    np.testing.assert_array_equal(ops.avg_pool2d(x, 1), x)


def test_max_pool_propagates_nan():
    """A NaN in a window makes that window's maximum NaN, as in torch."""
    x = np.zeros((1, 2, 2), np.float32)
    x[0, 0, 1] = np.nan
    assert np.isnan(ops.max_pool2d(x, 2)[0, 0, 0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops.max_pool2d(np.zeros((1, 4, 4)), 2, padding=2), "padding must be at most half"),
        (lambda: ops.max_pool2d(np.zeros((1, 1, 1)), 2), "does not fit"),
        (lambda: ops.avg_pool2d(np.zeros((1, 4, 4)), 0), "kernel_size must be at least 1"),
        (lambda: ops.max_pool2d(np.zeros((4, 4)), 2), "x must be a 3-D"),
    ],
)
def test_pool_refuses_impossible_requests(call, message):
    """Pooling that torch refuses raises ValueError with a message naming the parameter."""
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- activations


@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=50))
def test_relu_properties(values):
    """ReLU is max(0, x): idempotent, never negative, the identity on non-negative values."""
    x = np.array(values, np.float32)
    y = ops.relu(x)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    np.testing.assert_array_equal(ops.relu(y), y)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "absolute"])
def test_inplace_activations_do_not_allocate(name):
    """With inplace=True an activation overwrites its 4 MB input, allocating at most 64 KiB beside it (tracemalloc)."""
    import tracemalloc

    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    want = {"relu": np.maximum(x, 0), "leaky_relu": np.where(x < 0, np.float32(0.01) * x, x), "absolute": np.abs(x),
            "tanh": np.tanh(x)}.get(name)
    tracemalloc.start()
    try:
        y = getattr(ops, name)(x, inplace=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y is x and peak <= 1 << 16, peak
    if want is not None:
        np.testing.assert_allclose(x, want, rtol=1e-6)


def test_relu_not_inplace_leaves_input():
    """Without inplace the input is untouched."""
    x = np.array([-1.0, 2.0], np.float32)
    ops.relu(x)
    np.testing.assert_array_equal(x, [-1, 2])


def test_inplace_needs_float32_array():
    """In place on a list or a float64 array is refused instead of silently copying."""
    with pytest.raises(ValueError, match="float32"):
        ops.relu(np.zeros(3), inplace=True)


def test_other_activations_against_formulas():
    """leaky_relu, sigmoid and tanh against their formulas in float64."""
    x = np.linspace(-10, 10, 41)
    close(ops.leaky_relu(x, 0.1), np.where(x > 0, x, 0.1 * x))
    close(ops.sigmoid(x), 1 / (1 + np.exp(-x)))
    close(ops.tanh(x), np.tanh(x))
