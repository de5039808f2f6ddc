"""The filter bank and the kernel-spec parser."""

import numpy as np
import pytest

from cnnx.base.errors import CnnxError
from cnnx.sources.kernels import BANK, dog, gaussian, parse_kernel


def test_bank_has_the_named_filters():
    """Every filter the README promises is in the bank, with a description and a source."""
    for name in [
        "identity", "vertical_edge", "horizontal_edge", "diagonal_edge", "antidiagonal_edge", "sobel_x", "sobel_y",
        "prewitt_x", "prewitt_y", "scharr_x", "scharr_y", "laplacian", "laplacian8", "box", "gaussian", "dog",
        "sharpen", "emboss",
    ]:
        entry = BANK[name]
        assert entry.description and entry.source and entry.family


def test_lesson_vertical_edge_is_the_lesson_matrix():
    """vertical_edge is exactly the lesson's [[1,0,-1],[1,0,-1],[1,0,-1]]."""
    np.testing.assert_array_equal(parse_kernel("vertical_edge").weights, [[1, 0, -1]] * 3)


@pytest.mark.parametrize("name", ["horizontal_edge", "diagonal_edge", "antidiagonal_edge"])
def test_turned_edges_are_rotations_of_the_lesson_filter(name):
    """The other edge filters are the lesson's filter with its ring of 8 turned clockwise by 90, 45 and 135 degrees."""
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    vertical = parse_kernel("vertical_edge").weights
    steps = {"horizontal_edge": 2, "antidiagonal_edge": 1, "diagonal_edge": 3}[name]
    turned = np.zeros((3, 3))
    for k, cell in enumerate(ring):
        turned[cell] = vertical[ring[(k - steps) % 8]]
    np.testing.assert_array_equal(parse_kernel(name).weights, turned)


@pytest.mark.parametrize("name", [n for n, f in BANK.items() if f.family in ("edge", "line")])
def test_edge_and_line_filters_sum_to_zero(name):
    """Edge and line detectors ignore flat regions: their weights sum to zero."""
    assert abs(parse_kernel(name).weights.sum()) < 1e-6


@pytest.mark.parametrize("sigma", [0.5, 1, 2, 3.3])
def test_gaussian_is_normalised_and_sized_from_sigma(sigma):
    """gaussian sums to 1, is 2*ceil(3*sigma)+1 wide, peaks in the centre and matches the formula."""
    kernel = gaussian(sigma)
    radius = int(np.ceil(3 * sigma))
    assert kernel.shape == (2 * radius + 1,) * 2
    assert abs(kernel.sum() - 1) < 1e-5
    r = np.arange(-radius, radius + 1)
    formula = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(kernel, formula / formula.sum(), rtol=1e-5)


def test_dog_is_centre_surround():
    """The difference of Gaussians is positive in the centre, negative in the surround, and sums to 0."""
    kernel = dog(1.0)
    centre = kernel.shape[0] // 2
    assert kernel[centre, centre] > 0 and kernel[centre, centre + 3] < 0
    assert abs(kernel.sum()) < 1e-6


@pytest.mark.parametrize(
    "spec, shape, label",
    [
        ("sobel_x", (3, 3), "sobel_x"),
        ("gaussian:sigma=2", (13, 13), "gaussian:sigma=2"),
        ("gaussian:2", (13, 13), "gaussian:sigma=2"),
        ("box:size=5", (5, 5), "box:size=5"),
        ("[[1, 0, -1]]", (1, 3), "matrix1x3"),
        (" [[1],[2]] ", (2, 1), "matrix2x1"),
    ],
)
def test_parse_kernel_forms(spec, shape, label):
    """Names, parameters, and inline matrices all parse to the right shape and label."""
    kernel = parse_kernel(spec)
    assert kernel.weights.shape == shape
    assert kernel.weights.dtype == np.float32
    assert kernel.label == label


def test_parse_kernel_from_npy(tmp_path):
    """A .npy file holding a 2-D array is a kernel named after the file."""
    path = tmp_path / "ridge.npy"
    np.save(path, np.array([[0, 1, 0]] * 3))
    kernel = parse_kernel(str(path))
    assert kernel.label == "ridge"
    np.testing.assert_array_equal(kernel.weights, [[0, 1, 0]] * 3)


def test_unknown_name_suggests_close_names():
    """A misspelt filter name is an error that names the closest ones."""
    with pytest.raises(CnnxError, match="unknown filter 'sobelx'; did you mean sobel_x"):
        parse_kernel("sobelx")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gaussian:radius=2", "takes sigma"),
        ("sobel_x:size=3", "takes no parameters"),
        ("gaussian:sigma=big", "must be a number"),
        ("gaussian:sigma=0", "sigma must be from"),
        ("box:size=2.5", "whole number"),
        ("[[1, 2], [3]]", "cannot read the matrix"),
        ("[[1, 2", "cannot read the matrix"),
        ("[]", "non-empty 2-D"),
        ("[1, 2]", "non-empty 2-D"),
        ("[[NaN]]", "finite"),
        ("missing.npy", "no such file"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    """Malformed kernel specs raise CnnxError with a message saying what is wrong."""
    with pytest.raises(CnnxError, match=message):
        parse_kernel(spec)
