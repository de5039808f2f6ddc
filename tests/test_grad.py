"""The reverse pass against independent oracles: loops that send each output's gradient back along the products
that made it (tests/reference.py), the adjoint identity <A x, g> = <x, A^T g> for the linear ops, finite
differences in float64, and torch.autograd where PyTorch is installed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import conv2d_backward_loops, max_pool2d_backward_loops
from test_ops import conv_cases, torch_pads

from cnnx.compute import grad, ops


def _conv_case(case, batch: int):
    """A drawn conv2d case's input, weights, an output gradient and its padding as (top, bottom), (left, right);
    None where the forward op refuses the case."""
    groups, C, O, kernel, (H, W), batched, stride, dilation, padding, mode, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, C, H, W)).astype(np.float32)
    weight = rng.standard_normal((O, C // groups, *kernel)).astype(np.float32)
    try:
        out = ops.conv2d(x, weight, None, stride, padding, dilation, groups, mode)
    except ValueError:
        return None
    g = rng.standard_normal(out.shape).astype(np.float32)
    pads = torch_pads(padding, kernel, dilation) if padding == "same" else ops.conv_padding(padding, kernel,
                                                                                             dilation, stride)
    return x, weight, g, pads


@settings(max_examples=80, deadline=None)
@given(conv_cases())
def test_conv_gradients_equal_the_loops(case):
    """The input's, weights' and bias's gradients of conv2d equal the loops', for every option: stride, padding,
    dilation, groups and every border (whose cells send their gradient to the pixel they copied)."""
    made = _conv_case(case, batch=2)
    if made is None:
        return  # the forward op refuses it: nothing to differentiate
    x, weight, g, pads = made
    groups, C, O, kernel, (H, W), batched, stride, dilation, padding, mode, seed = case
    want = conv2d_backward_loops(g, x, weight, stride, pads, dilation, groups, mode)
    got = grad.conv2d_backward(g, x, weight, stride, padding, dilation, groups, mode)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(1, 2), st.booleans(),
       st.integers(3, 12), st.integers(3, 12), st.integers(0, 2**16))
def test_max_pool_gradient_goes_to_the_first_largest_value(kh, kw, stride, pad, dilation, ceil_mode, H, W, seed):
    """Each window's gradient lands on its largest value, the first in row order among ties (values drawn from
    a few levels, so ties are common)."""
    if pad > min(kh, kw) // 2 or dilation * (max(kh, kw) - 1) + 1 > min(H, W) + 2 * pad:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (1, 2, H, W)).astype(np.float32)
    out = ops.max_pool2d(x, (kh, kw), stride, pad, dilation, ceil_mode)
    g = rng.standard_normal(out.shape).astype(np.float32)
    want = max_pool2d_backward_loops(g, x, (kh, kw), (stride,) * 2, (pad, pad), (dilation,) * 2, ceil_mode)
    got = grad.max_pool2d_backward(g, x, (kh, kw), stride, pad, dilation, ceil_mode)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    given_output = grad.max_pool2d_backward(g, x, (kh, kw), stride, pad, dilation, ceil_mode, output=out)
    np.testing.assert_array_equal(given_output, got)  # the pool's own result, handed over, changes nothing


def test_a_tiled_max_pools_gradient_with_nan_and_ties_is_the_loops():
    """2x2 windows tiling the map, with ties and a NaN (which counts as largest, as in the forward op): the same
    gradient as the loops', whether the pool's result is handed over or not."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 3, 8, 6)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    out = ops.max_pool2d(x, 2)
    g = rng.standard_normal(out.shape).astype(np.float32)
    want = max_pool2d_backward_loops(g, np.nan_to_num(x, nan=np.inf), (2, 2), (2, 2), (0, 0), (1, 1), False)
    for output in (None, out):
        np.testing.assert_array_equal(grad.max_pool2d_backward(g, x, 2, output=output), want)
    g[1, 2, 3, 1] = np.nan  # a gradient that is not finite still goes to its window's largest value alone
    got = grad.max_pool2d_backward(g, x, 2, output=out)
    assert np.isnan(got).sum() == 1 and np.isnan(got[1, 2, 6:8, 2:4]).sum() == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), st.booleans(), st.integers(3, 12),
       st.integers(3, 12), st.integers(0, 2**16))
def test_average_pool_gradient_is_its_adjoint(k, stride, pad, ceil_mode, include_pad, H, W, seed):
    """The average pool is linear: <pool(x), g> = <x, pool's gradient of g>, with every counting rule."""
    if pad > k // 2:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, H, W))
    out = ops.avg_pool2d(x.astype(np.float32), k, stride, pad, ceil_mode, include_pad)
    g = rng.standard_normal(out.shape)
    back = grad.avg_pool2d_backward(g.astype(np.float32), x.shape, k, stride, pad, ceil_mode, include_pad)
    assert np.sum(out * g) == pytest.approx(np.sum(x * back), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_folding_the_padding_is_the_adjoint_of_padding(mode):
    """<pad(x), g> = <x, fold_padding(g)> for every border rule, with padding up to the image's size less one."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 6))
    pads = ((4, 2), (1, 5))
    numpy_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    padded = np.pad(x, ((0, 0), (0, 0), *pads), mode=numpy_mode)
    g = rng.standard_normal(padded.shape)
    assert np.sum(padded * g) == pytest.approx(np.sum(x * grad.fold_padding(g.astype(np.float32), pads, mode)),
                                               rel=1e-5)


ACTIVATIONS = [("relu", {}), ("relu6", {}), ("leaky_relu", {"slope": 0.2}), ("sigmoid", {}), ("tanh", {}),
               ("abs", {}), ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}), ("hard_swish", {}), ("silu", {}),
               ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}), ("exp", {}),
               ("clip", {"low": -0.5, "high": 1.5})]
FORWARD = {
    "relu": lambda x, o: np.maximum(x, 0), "relu6": lambda x, o: np.clip(x, 0, 6),
    "leaky_relu": lambda x, o: np.where(x > 0, x, o["slope"] * x), "sigmoid": lambda x, o: 1 / (1 + np.exp(-x)),
    "tanh": lambda x, o: np.tanh(x), "abs": lambda x, o: np.abs(x),
    "hard_sigmoid": lambda x, o: np.clip(o["alpha"] * x + o["beta"], 0, 1),
    "hard_swish": lambda x, o: x * np.clip(x / 6 + 0.5, 0, 1), "silu": lambda x, o: x / (1 + np.exp(-x)),
    "gelu": lambda x, o: (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))))
    if o["approximate"] == "tanh" else np.array([0.5 * v * (1 + __import__("math").erf(v / np.sqrt(2))) for v in x]),
    "exp": lambda x, o: np.exp(x), "clip": lambda x, o: np.clip(x, o["low"], o["high"]),
}


@pytest.mark.parametrize(("function", "options"), ACTIVATIONS, ids=[f"{f}-{k}" for k, (f, _) in enumerate(ACTIVATIONS)])
def test_activation_derivatives_match_finite_differences(function, options):
    """Each activation's derivative is its float64 central difference, away from its kinks."""
    x = np.random.default_rng(5).uniform(-7, 7, 400)
    kinks = {"relu": [0], "relu6": [0, 6], "leaky_relu": [0], "abs": [0], "hard_sigmoid": [-2.5, 2.5],
             "hard_swish": [-3, 3], "clip": [-0.5, 1.5]}.get(function, [])
    x = x[np.all(np.abs(x[:, None] - np.array(kinks + [99])) > 1e-3, axis=1)]
    h = 1e-5
    want = (FORWARD[function](x + h, options) - FORWARD[function](x - h, options)) / (2 * h)
    got = grad.activation_backward(function, np.ones_like(x, np.float32), x.astype(np.float32), **options)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)


def test_softmax_and_log_softmax_gradients_match_finite_differences():
    """Both gradients, along each of a few directions, are the float64 central difference of g . f(x)."""
    rng = np.random.default_rng(6)
    x, g = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    for forward, backward in ((ops.softmax, grad.softmax_backward), (ops.log_softmax, grad.log_softmax_backward)):
        got = backward(g, forward(x.astype(np.float32)), axis=-1)
        for _ in range(4):
            v = rng.standard_normal(x.shape)
            h = 1e-3
            diff = (np.sum(g * forward(x + h * v)) - np.sum(g * forward(x - h * v))) / (2 * h)
            assert diff == pytest.approx(np.sum(got * v), rel=2e-3, abs=2e-3)


def test_linear_gradients_are_its_adjoints():
    rng = np.random.default_rng(7)
    x, w, g = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal((4, 3))
    gx, gw, gb = grad.linear_backward(g, x, w)
    np.testing.assert_allclose(gx, g @ w, rtol=1e-5)
    assert np.sum((x @ w.T) * g) == pytest.approx(np.sum(w * gw), rel=1e-5)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-5)


def test_unbroadcast_sums_back_to_the_operands_shape():
    g = np.ones((2, 3, 4, 5), np.float32)
    assert grad.unbroadcast(g, (3, 1, 1)).tolist() == np.full((3, 1, 1), 40.0).tolist()
    assert grad.unbroadcast(g, (1, 3, 4, 5)).shape == (1, 3, 4, 5) and grad.unbroadcast(g, ()).item() == 120.0


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_conv_gradients_are_torch_autograds(case):
    """Where PyTorch is installed: the same gradients as torch.autograd for conv2d with every option."""
    torch = pytest.importorskip("torch")
    made = _conv_case(case, batch=1)
    if made is None:
        return
    x, weight, g, pads = made
    groups, C, O, kernel, (H, W), batched, stride, dilation, padding, mode, seed = case
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    padded = torch.nn.functional.pad(tx, (*pads[1], *pads[0]), mode={"zeros": "constant"}.get(mode, mode))
    torch.nn.functional.conv2d(padded, tw, None, stride, 0, dilation, groups).backward(torch.tensor(g))
    got = grad.conv2d_backward(g, x, weight, stride, padding, dilation, groups, mode)
    np.testing.assert_allclose(got[0], tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], tw.grad.numpy(), rtol=1e-4, atol=1e-4)
