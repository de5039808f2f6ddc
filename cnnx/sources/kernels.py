"""The named filter bank and the kernel-spec parser.

A kernel spec is one of:

- a name from the bank: ``sobel_x``;
- a name with parameters: ``gaussian:sigma=2``, ``box:size=5``;
- an inline matrix: ``[[1,0,-1],[1,0,-1],[1,0,-1]]``;
- a ``.npy`` file holding a 2-D array.

Kernels are for cross-correlation (not flipped), as ``ops.conv2d`` applies
them: a positive response of ``sobel_x`` means brightness grows to the right.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.io.weights import bias_key, layer_arrays, read_array, read_model

__all__ = [
    "BANK",
    "Filter",
    "Kernel",
    "RandomBank",
    "WeightBank",
    "box",
    "dog",
    "find_filter",
    "gaussian",
    "parse_dense",
    "parse_filters",
    "parse_kernel",
]


def _k(rows) -> np.ndarray:
    kernel = np.array(rows, dtype=np.float32)
    kernel.setflags(write=False)
    return kernel


IDENTITY = _k([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
# The lesson's vertical-edge filter: bright on the left minus bright on the right.
VERTICAL_EDGE = _k([[1, 0, -1], [1, 0, -1], [1, 0, -1]])
HORIZONTAL_EDGE = _k([[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
# VERTICAL_EDGE's ring of eight turned clockwise by 135 and 45 degrees (Prewitt's compass masks).
DIAGONAL_EDGE = _k([[0, 1, 1], [-1, 0, 1], [-1, -1, 0]])
ANTIDIAGONAL_EDGE = _k([[1, 1, 0], [1, 0, -1], [0, -1, -1]])
SOBEL_X = _k([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
SOBEL_Y = _k([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
PREWITT_X = _k([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
PREWITT_Y = _k([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
SCHARR_X = _k([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
SCHARR_Y = _k([[-3, -10, -3], [0, 0, 0], [3, 10, 3]])
LAPLACIAN_4 = _k([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
LAPLACIAN_8 = _k([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
SHARPEN = _k([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
EMBOSS = _k([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def box(size: int = 3) -> np.ndarray:
    """A ``size`` x ``size`` mean filter: every weight ``1 / size**2``."""
    if size != int(size) or not 1 <= size <= 99:
        raise CnnxError(f"box: size must be a whole number from 1 to 99; got {size:g}")
    size = int(size)
    return np.full((size, size), 1.0 / size**2, dtype=np.float32)


def _check_sigma(name: str, sigma: float) -> None:
    if not 0.1 <= sigma <= 16:
        raise CnnxError(f"{name}: sigma must be from 0.1 to 16; got {sigma:g}")


def _gaussian_line(sigma: float, radius: int) -> np.ndarray:
    """Gaussian samples at the integer offsets -radius..radius, scaled to sum to 1."""
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    return line / line.sum()


def gaussian(sigma: float = 1.0) -> np.ndarray:
    """A normalised Gaussian sampled at integer offsets out to ``ceil(3 * sigma)``.

    Three standard deviations hold 99.7% of the weight; the samples are then
    scaled to sum to 1 so a flat image stays flat.
    """
    _check_sigma("gaussian", sigma)
    line = _gaussian_line(sigma, math.ceil(3 * sigma))
    return np.outer(line, line).astype(np.float32)


# Marr & Hildreth (1980): a surround 1.6 times wider makes the difference of
# Gaussians a close match to the Laplacian of Gaussian.
DOG_RATIO = 1.6


def dog(sigma: float = 1.0) -> np.ndarray:
    """Difference of Gaussians: centre ``sigma`` minus surround ``1.6 * sigma``; sums to 0."""
    _check_sigma("dog", sigma)
    radius = math.ceil(3 * DOG_RATIO * sigma)
    centre = _gaussian_line(sigma, radius)
    surround = _gaussian_line(DOG_RATIO * sigma, radius)
    return (np.outer(centre, centre) - np.outer(surround, surround)).astype(np.float32)


@dataclass(frozen=True)
class Filter:
    """One entry of the bank: how to make the kernel, and what it is."""

    name: str
    family: str
    description: str
    source: str
    make: Callable[..., np.ndarray]
    defaults: dict[str, float] = field(default_factory=dict)

    def kernel(self, **params: float) -> np.ndarray:
        """The kernel with ``params`` over the defaults."""
        return self.make(**{**self.defaults, **params})


def _fixed(kernel: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: kernel


BANK: dict[str, Filter] = {
    f.name: f
    for f in [
        Filter("identity", "identity", "Returns the image unchanged", "the unit impulse", _fixed(IDENTITY)),
        Filter(
            "vertical_edge",
            "edge",
            "Vertical edges: bright left minus bright right",
            "the lesson's worked example",
            _fixed(VERTICAL_EDGE),
        ),
        Filter(
            "horizontal_edge",
            "edge",
            "Horizontal edges: bright above minus bright below",
            "vertical_edge turned 90 degrees",
            _fixed(HORIZONTAL_EDGE),
        ),
        Filter(
            "diagonal_edge",
            "edge",
            "Edges along \\: bright above-right minus bright below-left",
            "Prewitt compass mask: vertical_edge turned 135 degrees",
            _fixed(DIAGONAL_EDGE),
        ),
        Filter(
            "antidiagonal_edge",
            "edge",
            "Edges along /: bright above-left minus bright below-right",
            "Prewitt compass mask: vertical_edge turned 45 degrees",
            _fixed(ANTIDIAGONAL_EDGE),
        ),
        Filter(
            "sobel_x", "edge", "Gradient along columns, smoothed over 3 rows", "Sobel & Feldman 1968", _fixed(SOBEL_X)
        ),
        Filter(
            "sobel_y", "edge", "Gradient along rows, smoothed over 3 columns", "Sobel & Feldman 1968", _fixed(SOBEL_Y)
        ),
        Filter("prewitt_x", "edge", "Gradient along columns, averaged over 3 rows", "Prewitt 1970", _fixed(PREWITT_X)),
        Filter("prewitt_y", "edge", "Gradient along rows, averaged over 3 columns", "Prewitt 1970", _fixed(PREWITT_Y)),
        Filter(
            "scharr_x",
            "edge",
            "Gradient along columns, most rotation-invariant 3x3",
            "Scharr 2000 (3/10/3 weights)",
            _fixed(SCHARR_X),
        ),
        Filter(
            "scharr_y",
            "edge",
            "Gradient along rows, most rotation-invariant 3x3",
            "Scharr 2000 (3/10/3 weights)",
            _fixed(SCHARR_Y),
        ),
        Filter(
            "laplacian",
            "line",
            "Second derivative, 4 neighbours: spots and thin lines",
            "discrete Laplace operator",
            _fixed(LAPLACIAN_4),
        ),
        Filter(
            "laplacian8",
            "line",
            "Second derivative, 8 neighbours: spots and thin lines",
            "discrete Laplace operator with diagonals",
            _fixed(LAPLACIAN_8),
        ),
        Filter("box", "blur", "Mean of a size x size window", "moving average", box, {"size": 3}),
        Filter(
            "gaussian",
            "blur",
            "Gaussian blur; size 2*ceil(3*sigma)+1",
            "sampled Gaussian, normalised to sum 1",
            gaussian,
            {"sigma": 1.0},
        ),
        Filter(
            "dog",
            "line",
            "Centre-surround blob detector: Gaussian minus a 1.6x wider one",
            "Marr & Hildreth 1980, difference of Gaussians",
            dog,
            {"sigma": 1.0},
        ),
        Filter(
            "sharpen", "sharpen", "Identity plus a negative 4-neighbour Laplacian", "unsharp masking", _fixed(SHARPEN)
        ),
        Filter("emboss", "emboss", "Relief lit from the bottom right", "classic emboss mask", _fixed(EMBOSS)),
    ]
}


@dataclass(frozen=True, eq=False)
class Kernel:
    """A parsed kernel: the spec text that rebuilds it, a short label for tables and file names, the 2-D weights."""

    spec: str
    label: str
    weights: np.ndarray = field(repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Kernel) and self.spec == other.spec and np.array_equal(self.weights, other.weights)

    def __hash__(self) -> int:
        return hash(self.spec)


@dataclass(frozen=True, eq=False)
class RandomBank:
    """``count`` random ``size`` x ``size`` filters, drawn when the input's channel count is known."""

    spec: str
    count: int
    size: int


@dataclass(frozen=True, eq=False)
class WeightBank:
    """Filters of shape (out, in, kH, kW) from a file, for example a trained network's first layer."""

    spec: str
    label: str
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)


FilterSource = tuple[Kernel, ...] | RandomBank | WeightBank


def find_filter(name: str) -> Filter:
    """The bank entry called ``name``; an unknown name is an error that suggests the closest ones."""
    try:
        return BANK[name]
    except KeyError:
        close = difflib.get_close_matches(name, [*BANK, "random"], n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "'cnnx filters' lists them."
        raise CnnxError(f"unknown filter {name!r}; {hint}") from None


def parse_kernel(spec: str) -> Kernel:
    """Turn one 2-D kernel spec into a ``Kernel``.

    Examples
    --------
    >>> parse_kernel("gaussian:sigma=0.5").weights.shape
    (5, 5)
    >>> parse_kernel("[[1, -1]]")
    Kernel(spec='[[1,-1]]', label='matrix1x2')
    """
    spec = spec.strip()
    if spec.startswith("["):
        return _parse_matrix(spec)
    if spec.lower().endswith(".npy"):
        return Kernel(spec, Path(spec).stem, _checked_matrix(read_array(Path(spec)), spec))
    name, _, arguments = spec.partition(":")
    entry = find_filter(name.strip())
    params = _parse_params(entry.name, entry.defaults, arguments)
    canonical = entry.name + (":" + ":".join(f"{k}={v:g}" for k, v in params.items()) if params else "")
    return Kernel(canonical, canonical, entry.kernel(**params))


def parse_filters(spec: str) -> FilterSource:
    """A filter source for a conv stage: kernels (with rotations), random filters, or a 4-D weight file.

    - ``NAME@`` turns a 3x3 kernel by 45 degrees 8 times, ``NAME>`` by 90
      degrees 4 times, clockwise, as ImageMagick's kernel flags do;
    - ``random:COUNT`` (or ``random:COUNT:size=K``) is COUNT random K x K filters;
    - a ``.npz`` file (``file.npz`` or ``file.npz:ARRAY``) or a 4-D ``.npy`` holds
      filters of shape (out, in, kH, kW); a ``bias`` array beside them is used.

    Examples
    --------
    >>> [k.label for k in parse_filters("sobel_x>")]
    ['sobel_x>0', 'sobel_x>90', 'sobel_x>180', 'sobel_x>270']
    """
    spec = spec.strip()
    if spec.endswith("@") or spec.endswith(">"):
        return _turns(parse_kernel(spec[:-1]), spec[-1])
    head = spec.partition(":")[0].strip()
    if head == "model":
        return load_model_layer(spec)
    if head == "random":
        params = _parse_params("random", {"count": 8.0, "size": 3.0}, spec.partition(":")[2])
        count, size = params.get("count", 8.0), params.get("size", 3.0)
        if count != int(count) or not 1 <= count <= 512 or size != int(size) or not 1 <= size <= 31:
            raise CnnxError(f"random: count must be a whole number from 1 to 512 and size from 1 to 31; got {spec!r}")
        canonical = f"random:{int(count)}" + (f":size={int(size)}" if size != 3 else "")
        return RandomBank(canonical, int(count), int(size))
    if head.lower().endswith(".npz") or (head.lower().endswith(".npy") and read_array(Path(head)).ndim == 4):
        return _weight_file(spec, ndim=4, what="filters must be a numeric array of shape (out, in, kH, kW)")
    return (parse_kernel(spec),)


_RING = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]  # clockwise from the top left


def _turns(kernel: Kernel, flag: str) -> tuple[Kernel, ...]:
    """The kernel turned clockwise: 8 steps of 45 degrees ('@', 3x3 only) or 4 of 90 ('>')."""
    if flag == ">":
        return tuple(
            Kernel(f"{kernel.spec}>", f"{kernel.label}>{90 * k}", np.ascontiguousarray(np.rot90(kernel.weights, -k)))
            for k in range(4)
        )
    if kernel.weights.shape != (3, 3):
        raise CnnxError(f"{kernel.spec}@: 45-degree turns need a 3x3 kernel; use '>' for 90-degree turns")
    turned = []
    for step in range(8):
        weights = kernel.weights.copy()
        for k, cell in enumerate(_RING):
            weights[cell] = kernel.weights[_RING[(k - step) % 8]]
        turned.append(Kernel(f"{kernel.spec}@", f"{kernel.label}@{45 * step}", weights))
    return tuple(turned)


def _parse_params(name: str, defaults: dict[str, float], text: str) -> dict[str, float]:
    """``"sigma=2"`` or ``"count=8:size=3"`` (":" or "," between them) checked against ``defaults``' keys.

    A lone value without a key sets the first parameter.
    """
    params: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.replace(",", ":").split(":"))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq and defaults and not params:
            key, value = next(iter(defaults)), item
        if key not in defaults:
            takes = ", ".join(defaults) or "no parameters"
            raise CnnxError(f"filter {name!r} takes {takes}; got {item!r}")
        try:
            params[key] = float(value)
        except ValueError:
            raise CnnxError(f"{name}: {key} must be a number; got {value!r}") from None
        if not math.isfinite(params[key]):
            raise CnnxError(f"{name}: {key} must be finite; got {value!r}")
    return params


def _checked_matrix(array: np.ndarray, where: str) -> np.ndarray:
    """A non-empty, finite 2-D float32 kernel of at most 99x99, or an error naming ``where``."""
    if array.ndim != 2 or 0 in array.shape:
        raise CnnxError(f"{where}: a kernel must be a non-empty 2-D matrix; got shape {array.shape}")
    if max(array.shape) > 99:
        raise CnnxError(f"{where}: kernels are at most 99x99; got {array.shape[0]}x{array.shape[1]}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise CnnxError(f"{where}: a kernel must hold real numbers; got {array.dtype}")
    if not np.isfinite(array).all():
        raise CnnxError(f"{where}: a kernel must hold finite numbers")
    return array.astype(np.float32)


def _depth(text: str) -> int:
    """How deep the brackets of ``text`` nest."""
    depth = deepest = 0
    for char in text:
        depth += (char == "[") - (char == "]")
        deepest = max(deepest, depth)
    return deepest


def _parse_matrix(spec: str) -> Kernel:
    shown = spec if len(spec) <= 60 else spec[:57] + "..."
    # A matrix is rows of numbers: deeper nesting, or text longer than 99x99 numbers take, is no kernel.
    if _depth(spec) > 2 or len(spec) > 99 * 99 * 32:
        raise CnnxError(f"cannot read the matrix {shown!r}: write rows of numbers, e.g. [[1,0,-1],[1,0,-1],[1,0,-1]]")
    try:
        rows = json.loads(spec)
        array = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, RecursionError):
        raise CnnxError(
            f"cannot read the matrix {shown!r}: write rows of numbers, e.g. [[1,0,-1],[1,0,-1],[1,0,-1]]"
        ) from None
    weights = _checked_matrix(array, "matrix")
    return Kernel("".join(spec.split()), f"matrix{weights.shape[0]}x{weights.shape[1]}", weights)


def load_model_layer(spec: str) -> WeightBank:
    """``model:NAME:LAYER``: a shipped model's layer weights (LAYER.weight) and bias (LAYER.bias)."""
    parts = [part.strip() for part in spec.split(":")]
    if len(parts) != 3 or not all(parts):
        raise CnnxError(f"a model layer is written model:NAME:LAYER, e.g. model:shapes:conv1; got {spec!r}")
    _, name, layer = parts
    arrays, _ = read_model(name)
    if f"{layer}.weight" not in arrays:
        layers = sorted({key.rsplit(".", 1)[0] for key in arrays if key.endswith(".weight")})
        raise CnnxError(f"model {name!r} has no layer {layer!r}; it has {', '.join(layers)}")
    bias = arrays.get(bias_key(f"{layer}.weight"))
    return _bank(f"model:{name}:{layer}", layer, arrays[f"{layer}.weight"], bias, ndim=None)


def parse_dense(spec: str) -> WeightBank:
    """Weights (out, in) of a fully connected layer: ``model:NAME:LAYER``, ``file.npz[:ARRAY]`` or a 2-D ``.npy``."""
    spec = spec.strip()
    if spec.partition(":")[0].strip() == "model":
        bank = load_model_layer(spec)
        if bank.weights.ndim != 2:
            raise CnnxError(f"{spec}: a dense layer needs weights of shape (out, in); got shape {bank.weights.shape}")
        return bank
    return _weight_file(spec, ndim=2, what="a dense layer needs weights of shape (out, in)")


def _weight_file(spec: str, *, ndim: int, what: str) -> WeightBank:
    """A layer from ``file.npy`` or ``file.npz[:ARRAY]`` (with the bias beside it in an archive)."""
    name, _, key = (part.strip() for part in spec.partition(":"))
    path = Path(name)
    if path.suffix.lower() == ".npz":
        _, array, bias = layer_arrays(path, key)
    else:
        array, bias = read_array(path), None
    return _bank(spec, path.stem, array, bias, ndim=ndim, what=what)


def _bank(
    spec: str, label: str, array: np.ndarray, bias: np.ndarray | None, *, ndim: int | None, what: str = ""
) -> WeightBank:
    """Checked weights: numeric, finite, of ``ndim`` dimensions, with a bias of one value per output."""
    if (ndim is not None and array.ndim != ndim) or 0 in array.shape or not np.issubdtype(array.dtype, np.number):
        raise CnnxError(f"{spec}: {what}; got shape {array.shape}")
    if array.ndim == 4 and max(array.shape[2:]) > 99:
        raise CnnxError(f"{spec}: kernels are at most 99x99; got {array.shape[2]}x{array.shape[3]}")
    if not np.isfinite(array).all():
        raise CnnxError(f"{spec}: the weights must hold finite numbers")
    if bias is not None and bias.shape != (array.shape[0],):
        raise CnnxError(f"{spec}: bias must have shape ({array.shape[0]},); got {bias.shape}")
    if bias is not None and not np.isfinite(bias).all():
        raise CnnxError(f"{spec}: the bias must hold finite numbers")
    return WeightBank(spec.strip(), label, array.astype(np.float32), None if bias is None else bias.astype(np.float32))
