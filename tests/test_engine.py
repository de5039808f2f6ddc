"""The fast paths of the ops (strips, threads, separable passes, BLAS) against the plain loops and each other."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv2d_loops, max_pool2d_loops
from scipy import ndimage

from cnnx.base import runtime
from cnnx.compute import engine, ops


@pytest.fixture(scope="module", autouse=True)
def passes_wherever_they_could_run():
    """One kernel runs by passes (taps, 1-D passes, FFT) wherever the bank is not its only way: on this file's small
    images the cost estimate would choose the bank, and the passes are what is tested here."""
    held = engine.PASS_CALL_PIXELS
    engine.PASS_CALL_PIXELS = 0
    yield
    engine.PASS_CALL_PIXELS = held


@pytest.fixture(scope="module", autouse=True)
def threads_however_small_the_work():
    """Every op's tasks go to the threads, however little work they hold: this file's images are small, and the
    threads are what is tested here."""
    held = runtime.SERIAL_WORK
    runtime.SERIAL_WORK = 0
    yield
    runtime.SERIAL_WORK = held


@pytest.fixture
def tiny_strips(monkeypatch):
    """Make every strip one row, so strip boundaries fall everywhere."""
    monkeypatch.setattr(runtime, "STRIP_BYTES", 1)


@pytest.fixture
def threads():
    yield
    ops.set_num_threads(None)


def rank_one(rng, kh, kw):
    return np.outer(rng.standard_normal(kh), rng.standard_normal(kw)).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 6), st.integers(2, 6), st.integers(5, 19), st.integers(5, 19), st.integers(1, 2), st.integers(1, 2),
    st.sampled_from(["zeros", "reflect", "replicate", "circular"]), st.integers(0, 2**16),
)
def test_separable_path_matches_loops(kh, kw, H, W, stride, dilation, mode, seed):
    """A rank-1 kernel runs as two 1-D passes and still equals the pixel loop, with stride, dilation and borders."""
    rng = np.random.default_rng(seed)
    kernel = rank_one(rng, kh, kw)
    assert engine.separable(kernel) is not None
    image = rng.random((1, H, W), dtype=np.float32)
    pad = (min(kh // 2, H - 1), min(kw // 2, W - 1))
    if dilation * (kh - 1) + 1 > H + 2 * pad[0] or dilation * (kw - 1) + 1 > W + 2 * pad[1]:
        return
    got = ops.conv2d(image, kernel[None, None], stride=stride, padding=pad, dilation=dilation, padding_mode=mode)
    want = conv2d_loops(
        image[None], kernel[None, None], None, (stride,) * 2, ((pad[0],) * 2, (pad[1],) * 2), (dilation,) * 2, 1, mode
    )
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5 * np.abs(kernel).sum())


def test_separable_detection():
    """Sobel and the Gaussian are found separable (Sobel exactly); the Laplacian and a random kernel are not."""
    from cnnx.sources.kernels import LAPLACIAN_4, SOBEL_X, gaussian

    column, row = engine.separable(SOBEL_X)
    np.testing.assert_array_equal(np.outer(column, row), SOBEL_X)
    assert engine.separable(gaussian(2.0)) is not None
    assert engine.separable(LAPLACIAN_4) is None
    assert engine.separable(np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)) is None


@pytest.mark.parametrize("O, C", [(1, 1), (1, 3), (4, 1), (8, 3)])
@pytest.mark.parametrize("padding, stride", [("same", 1), (0, 1), (2, 3)])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_one_row_strips_equal_whole_image(O, C, padding, stride, mode, tiny_strips):
    """One-row strips and one strip for the whole image agree, on 37x23 (no multiple of anything).

    Only to rounding: BLAS may sum a product of another width in another order.
    """
    rng = np.random.default_rng(O * 10 + C)
    image = rng.standard_normal((2, C, 37, 23)).astype(np.float32)
    weight = rng.standard_normal((O, C, 3, 5)).astype(np.float32)
    got = ops.conv2d(image, weight, padding=padding, stride=stride, padding_mode=mode)
    runtime.STRIP_BYTES = 1 << 40
    whole = ops.conv2d(image, weight, padding=padding, stride=stride, padding_mode=mode)
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6 * np.abs(weight).sum())
    pads = ((1, 1), (2, 2)) if padding == "same" else ((padding, padding),) * 2
    np.testing.assert_allclose(
        got, conv2d_loops(image, weight, None, (stride,) * 2, pads, (1, 1), 1, mode), atol=2e-5 * np.abs(weight).sum()
    )


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_results_identical_for_any_thread_count(n, threads, tiny_strips):
    """Every op gives bit-identical results on 1, 2, 3 or 5 threads."""
    rng = np.random.default_rng(7)
    image = rng.standard_normal((3, 41, 29)).astype(np.float32)
    weight = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    single = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    separable = np.outer([1, 2, 1, 2, 1], [1, 0, -1, 0, 1]).astype(np.float32)[None, None]
    calls = [
        lambda: ops.conv2d(image, weight, padding=1),
        lambda: ops.conv2d(image[:1], single, padding="same", padding_mode="circular"),
        lambda: ops.conv2d(image[:1], separable, padding=2),
        lambda: ops.max_pool2d(image, 3, 2, 1, ceil_mode=True),
        lambda: ops.avg_pool2d(image, 2, ceil_mode=True),
    ]
    ops.set_num_threads(1)
    reference = [call() for call in calls]
    ops.set_num_threads(n)
    for call, want in zip(calls, reference, strict=True):
        np.testing.assert_array_equal(call(), want)


def test_an_op_of_little_work_stays_on_the_calling_thread(monkeypatch, threads):
    """Under ``SERIAL_WORK`` element operations every task runs on the calling thread (a handoff would cost more
    than it saves); from it on, the tasks are shared with the pool."""
    import threading

    monkeypatch.setattr(runtime, "SERIAL_WORK", 1000)
    ops.set_num_threads(2)
    for operations, want in ((999, 1), (1000, 2)):
        seen = set()
        runtime.run_tasks([1, 2, 3, 4], lambda task, scratch, seen=seen: seen.add(threading.get_ident()), operations)
        assert len(seen) == want and threading.get_ident() in seen


@pytest.mark.parametrize("shape", [(16, 20, 30), (3, 7, 9), (1, 1, 5)])
def test_pool_strips_match_loops(shape, tiny_strips):
    """Pooling in one-row strips, padded and not, equals the loop reference."""
    x = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    for kernel, stride, pad in [((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 1), (1, 1)), ((1, 3), (1, 2), (0, 1))]:
        if shape[1] + 2 * pad[0] < kernel[0] or shape[2] + 2 * pad[1] < kernel[1]:
            continue
        got = ops.max_pool2d(x, kernel, stride, pad)
        np.testing.assert_array_equal(got, max_pool2d_loops(x, kernel, stride, pad, (1, 1), False))


def test_thread_setting_is_checked(threads):
    """Threads must be a positive integer; CNNX_NUM_THREADS sets the default."""
    with pytest.raises(ValueError, match="positive integer"):
        ops.set_num_threads(0)


def test_thread_count_from_environment(monkeypatch, threads):
    """CNNX_NUM_THREADS sets how many threads the ops use."""
    monkeypatch.setenv("CNNX_NUM_THREADS", "3")
    assert ops.num_threads() == 3


SCIPY_MODES = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest", "circular": "wrap"}


@pytest.mark.parametrize("kh, kw", [(9, 9), (13, 7), (31, 31)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_fft_path_matches_scipy(kh, kw, mode):
    """A large dense kernel goes through the overlap-save FFT and equals scipy.ndimage.correlate."""
    rng = np.random.default_rng(kh * kw)
    kernel = rng.standard_normal((kh, kw))
    image = rng.random((300, 61))
    assert engine.fft_is_faster(kernel, image.shape)
    got = ops.conv2d(image[None], kernel[None, None], padding="same", padding_mode=mode)[0]
    want = ndimage.correlate(image, kernel, mode=SCIPY_MODES[mode])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(kernel).sum())


def test_fft_path_dilated_even_kernel_matches_loops():
    """An even, dilated kernel on the FFT path is padded as torch pads it and equals the pixel loop."""
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((8, 10)).astype(np.float32)
    image = rng.random((1, 40, 37), dtype=np.float32)
    assert engine.fft_is_faster(kernel, (40, 37))
    got = ops.conv2d(image, kernel[None, None], padding="same", dilation=2, padding_mode="reflect")
    want = conv2d_loops(image[None], kernel[None, None], None, (1, 1), ((7, 7), (9, 9)), (2, 2), 1, "reflect")[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(kernel).sum())


def test_fft_only_where_it_pays():
    """Small or separable kernels never take the FFT; a dense 31x31 on a big image does."""
    from cnnx.sources.kernels import gaussian

    rng = np.random.default_rng(0)
    assert not engine.fft_is_faster(rng.standard_normal((3, 3)), (2048, 2048))
    assert not engine.fft_is_faster(gaussian(5.0), (2048, 2048))
    assert engine.fft_is_faster(rng.standard_normal((31, 31)), (2048, 2048))


def test_low_rank_kernel_runs_as_passes_and_matches_loops():
    """A difference of Gaussians (rank 2) runs as two pairs of 1-D passes and equals the pixel loop."""
    from cnnx.sources.kernels import dog

    kernel = dog(1.0)
    pairs = engine.factorise(kernel)
    assert pairs is not None and len(pairs) == 2
    image = np.random.default_rng(1).random((1, 40, 33), dtype=np.float32)
    got = ops.conv2d(image, kernel[None, None], padding="same", padding_mode="replicate")
    want = conv2d_loops(image[None], kernel[None, None], None, (1, 1), ((5, 5), (5, 5)), (1, 1), 1, "replicate")[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def traced_peak(call) -> tuple[int, object]:
    """Peak bytes numpy allocated (tracemalloc sees numpy's buffers) during ``call``, and its result."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ops.conv2d(x, np.ones((8, 3, 3, 3), np.float32), padding=1),
        lambda x: ops.conv2d(x[:1], np.ones((1, 1, 3, 3), np.float32), padding="same"),
        lambda x: ops.conv2d(x[:1], np.random.default_rng(0).standard_normal((1, 1, 15, 15)), padding="same"),
        lambda x: ops.max_pool2d(x, 2),
        lambda x: ops.avg_pool2d(x, 3, 1, 1),
    ],
)
def test_peak_memory_is_at_most_twice_the_output_beyond_it(call):
    """No op holds a whole-image im2col: on 3x1024x1024, memory beyond the output stays under twice the output."""
    x = np.random.default_rng(1).random((3, 1024, 1024), dtype=np.float32)
    peak, out = traced_peak(lambda: call(x))
    assert peak - out.nbytes <= 2 * out.nbytes


@pytest.mark.parametrize(
    ("C", "O", "groups", "kernel", "stride", "padding", "size", "dilation"),
    [
        (24, 24, 24, 3, 1, 1, (50, 53), 1),  # depthwise: multiply-adds per tap (a map of over 2048 pixels)
        (8, 8, 8, 7, 1, 3, (46, 47), 1),  # ConvNeXt's 7x7 depthwise: the same, each tap a flat run
        (64, 128, 64, 5, 2, 1, (40, 33), 1),  # depthwise with two kernels per channel
        (48, 48, 6, 3, 1, 1, (20, 21), 1),  # RegNet-like groups of 8: one batched product over flat runs of rows
        (40, 40, 40, 3, 1, 1, (14, 13), 1),  # depthwise on a small map: the same
        (40, 40, 40, 3, 2, 1, (14, 13), 1),  # depthwise, stride 2: the output's columns gathered
        (24, 24, 6, 3, 1, 2, (15, 16), 2),  # dilated groups: runs of rows two apart
        (60, 60, 3, 1, 1, 1, (14, 14), 1),  # a grouped 1x1, padded: columns gathered
        (68, 68, 4, 1, 1, 0, (14, 15), 1),  # ShuffleNet's grouped 1x1: one batched product over the input in place
    ],
)
def test_grouped_paths_match_loops_across_strips(C, O, groups, kernel, stride, padding, size, dilation, tiny_strips,
                                                threads):
    """Every grouped layer, whichever path it takes, equals the loop with strips of one row on two threads, and
    its one-thread answer is the same to the bit."""
    rng = np.random.default_rng(C + O)
    x = rng.standard_normal((1, C, *size)).astype(np.float32)
    w = rng.standard_normal((O, C // groups, kernel, kernel)).astype(np.float32)
    pads = ((padding, padding), (padding, padding))
    want = conv2d_loops(x, w, None, (stride, stride), pads, (dilation, dilation), groups, "zeros")[0]
    ops.set_num_threads(2)
    got = ops.conv2d(x[0], w, stride=stride, padding=padding, groups=groups, dilation=dilation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    ops.set_num_threads(1)
    np.testing.assert_array_equal(ops.conv2d(x[0], w, stride=stride, padding=padding, groups=groups,
                                             dilation=dilation), got)


@pytest.mark.parametrize(("O", "C", "kernel", "dilation"), [(8, 32, (3, 3), 1), (4, 24, (5, 3), 2), (6, 24, (3, 5), 1)])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_a_product_per_kernel_row_matches_loops(O, C, kernel, dilation, mode, threads, monkeypatch):
    """A bank with fewer outputs than its channels (DenseNet's 32 of 128) runs as a BLAS product per kernel row over
    shifted copies of the strip: it gives the loop's numbers on one-row strips and on one strip, dilated, padded
    by reflection, and the same bits on one thread as on two."""
    assert engine.by_kernel_rows(O, C, *kernel, (1, 1))
    rng = np.random.default_rng(O + C)
    x = rng.standard_normal((1, C, 13, 17)).astype(np.float32)
    w = rng.standard_normal((O, C, *kernel)).astype(np.float32)
    pads = tuple((dilation * (k // 2),) * 2 for k in kernel)
    want = conv2d_loops(x, w, None, (1, 1), pads, (dilation,) * 2, 1, mode)[0]
    for strip_bytes in (1, 1 << 40):
        monkeypatch.setattr(runtime, "STRIP_BYTES", strip_bytes)
        answers = []
        for count in (2, 1):
            ops.set_num_threads(count)
            answers.append(ops.conv2d(x[0], w, padding=tuple(p for p, _ in pads), dilation=dilation,
                                      padding_mode=mode))
        np.testing.assert_allclose(answers[0], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        np.testing.assert_array_equal(answers[1], answers[0])


@pytest.mark.parametrize(
    ("case", "N", "C", "O", "groups", "kernel", "size", "whole_bytes"),
    [
        ("one dense kernel, tap by tap", 1, 1, 1, 1, "dense3", 33, None),
        ("one separable kernel, 1-D passes", 1, 1, 1, 1, "sobel", 33, None),
        ("one large kernel, FFT", 1, 1, 1, 1, "dense9", 40, None),
        ("a bank, one product", 1, 3, 8, 1, "dense3", 21, None),
        ("a bank, by strips", 1, 3, 8, 1, "dense3", 21, 0),
        ("a product per kernel row", 1, 24, 4, 1, "dense3", 17, None),
        ("a 1x1, one product", 1, 6, 8, 1, "dense1", 19, None),
        ("a 1x1, by strips", 1, 6, 8, 1, "dense1", 70, 0),
        ("grouped", 1, 8, 4, 2, "dense3", 19, None),
        ("a batch, one product", 3, 3, 5, 1, "dense3", 9, None),
    ],
)
def test_the_bias_is_added_on_every_path(case, N, C, O, groups, kernel, size, whole_bytes, tiny_strips, monkeypatch):
    """Whichever path a convolution takes, each output channel gets its bias once (added as a strip is stored, or
    after): the loop's numbers plus the bias."""
    from cnnx.sources.kernels import SOBEL_X

    rng = np.random.default_rng(len(case))
    side = int(kernel[5:]) if kernel.startswith("dense") else 3
    w = (SOBEL_X[None, None] if kernel == "sobel" else rng.standard_normal((O, C // groups, side, side))).astype(
        np.float32)
    if case.endswith("FFT"):
        assert engine.fft_is_faster(w[0, 0], (size, size))
    if whole_bytes is not None:
        monkeypatch.setattr(engine, "WHOLE_BYTES", whole_bytes)
    x = rng.standard_normal((N, C, size, size)).astype(np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    pad = w.shape[-1] // 2
    got = ops.conv2d(x, w, bias, padding=pad, groups=groups)
    want = conv2d_loops(x, w, bias, (1, 1), ((pad, pad),) * 2, (1, 1), groups, "zeros")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_bank_takes_a_product_per_kernel_row_only_where_it_writes_less():
    """By the memory each way writes: few outputs of many channels (DenseNet's 3x3, 32 of 128) take the product per
    kernel row; as many outputs as channels (ResNet's), more outputs than channels, a strided layer and a 1x1 take
    im2col's one product."""
    assert engine.by_kernel_rows(32, 128, 3, 3, (1, 1))
    assert not engine.by_kernel_rows(256, 256, 3, 3, (1, 1))
    assert not engine.by_kernel_rows(192, 64, 3, 3, (1, 1))
    assert not engine.by_kernel_rows(32, 128, 3, 3, (2, 2))
    assert not engine.by_kernel_rows(32, 128, 1, 1, (1, 1))


@pytest.mark.parametrize(
    ("C", "O", "groups", "kernel", "size"),
    [(1, 8, 1, 3, (300, 400)), (64, 16, 1, 3, (200, 300)), (64, 64, 64, 3, (200, 300)), (96, 96, 12, 3, (120, 160)),
     (32, 64, 2, 5, (90, 90)), (384, 384, 384, 3, (14, 14))],
)
def test_conv_scratch_bounds_what_conv2d_holds(C, O, groups, kernel, size):
    """The scratch conv2d says it needs before it runs (for the memory estimate) is never below what it takes."""
    import tracemalloc

    x = np.ones((C, *size), np.float32)
    w = np.ones((O, C // groups, kernel, kernel), np.float32)
    out = np.empty((O, *size), np.float32)
    said = ops.conv2d_scratch(x.shape, w.shape, padding=kernel // 2, groups=groups)
    tracemalloc.start()
    ops.conv2d(x, w, padding=kernel // 2, groups=groups, out=out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= said + (64 << 10)  # and a few small arrays of indices and weights


@pytest.mark.parametrize(
    ("C", "k", "size", "kind", "passes"),
    [(512, 3, 32, "dense", False), (3, 3, 512, "dense", False), (1, 7, 512, "dense", False),
     (1, 7, 512, "separable", True), (1, 3, 512, "sparse", True), (1, 3, 16, "sparse", False)],
)
def test_one_kernel_takes_the_path_estimated_cheaper(C, k, size, kind, passes, monkeypatch):
    """One kernel runs by passes only where they are estimated cheaper than the bank's gather and product (the
    estimate's constants measured here): fewer passes than taps (a separable or sparse kernel) on a map large
    enough to pay for their calls; a dense kernel, or a small map, goes to the bank.  Both paths give the loop's
    numbers."""
    monkeypatch.setattr(engine, "PASS_CALL_PIXELS", 8000)
    rng = np.random.default_rng(C * k)
    kernel = rng.standard_normal((C, k, k)).astype(np.float32)
    if kind == "separable":
        kernel = rank_one(rng, k, k)[None]
    elif kind == "sparse":  # the Laplacian: five taps of nine
        kernel = np.array([[[0, 1, 0], [1, -4, 1], [0, 1, 0]]], np.float32)
    factors = engine.factorise(kernel[0]) if C == 1 else None
    Wp = size + 2 * (k // 2)
    assert engine._one_kernel_by_passes(kernel, factors, (1, 1), Wp, size, size) is passes
    if C > 64:
        return  # the loops would take seconds: the choice alone is checked
    image = rng.standard_normal((C, min(size, 40), min(size, 40))).astype(np.float32)
    want = conv2d_loops(image[None], kernel[None], None, (1, 1), ((k // 2,) * 2,) * 2, (1, 1), 1, "zeros")[0]
    for call_pixels in (0, 10**12):  # passes; the bank
        monkeypatch.setattr(engine, "PASS_CALL_PIXELS", call_pixels)
        got = ops.conv2d(image, kernel[None], padding=k // 2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
