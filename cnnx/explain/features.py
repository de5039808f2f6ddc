"""What a unit looks for: the image that excites a channel (or a class) most, found by gradient ascent from noise.

Plain ascent on pixels finds adversarial noise: high-frequency patterns the
network responds to but no eye reads.  The safeguards of feature
visualisation (Olah et al. 2017, Mordvintsev et al. 2018) keep it readable:

- the image is parameterised in the Fourier domain, each frequency scaled by
  the inverse of its magnitude, so a step moves every frequency alike rather
  than favouring the highest (``fourier``);
- its colours are parameterised decorrelated, through the square root of
  natural images' colour covariance, and squashed into 0..1 by a sigmoid
  (``decorrelate``);
- each step sees the image shifted by up to ``jitter`` pixels (a sixteenth of
  its side unless given), scaled by one
  of ``scales`` and turned by up to ``rotate`` degrees, so the pattern must
  work wherever it lands (transformation robustness);
- an optional total-variation penalty (``tv``) smooths it further.

Every transformation is linear (or elementwise), so its gradient is taken back
exactly through it; the network's through ``source.reverse``.  The result is
deterministic for a ``seed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.compute import grad as reverse
from cnnx.compute import ops
from cnnx.sources.reverse import Target

# The square root of natural images' RGB covariance (ImageNet), columns scaled to unit norm at most, as feature
# visualisation's colour decorrelation uses it.
_SQRT_COLOUR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float64)
COLOUR = (_SQRT_COLOUR / np.linalg.norm(_SQRT_COLOUR, axis=0).max()).astype(np.float32)


@dataclass(frozen=True)
class FeatureSettings:
    """The ascent and its safeguards; all are recorded with the result."""

    steps: int = 256
    rate: float = 0.05
    jitter: int | None = None  # pixels; by default a sixteenth of the image's shorter side
    scales: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
    rotate: float = 5.0
    fourier: bool = True
    decorrelate: bool = True
    tv: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise CnnxError(f"--steps takes a whole number, 1 or more; got {self.steps}")
        if not (np.isfinite(self.rate) and self.rate > 0):
            raise CnnxError(f"--rate takes a number above 0; got {self.rate}")
        if (self.jitter or 0) < 0 or not (np.isfinite(self.rotate) and self.rotate >= 0) or self.tv < 0:
            raise CnnxError("--jitter, --rotate and --tv take numbers, 0 or more")


@dataclass
class Feature:
    """The image found (C, H, W) in 0..1, the target's value it reached, and its value at each step."""

    image: np.ndarray
    reached: float
    history: list[float]
    settings: dict


class _Image:
    """The parameterisation: parameters -> pixels in 0..1, and a gradient with respect to the pixels taken back to
    the parameters."""

    def __init__(self, shape: tuple[int, int, int], settings: FeatureSettings, rng: np.random.Generator):
        self.shape, self.settings = shape, settings
        C, H, W = shape
        self.colour = COLOUR if settings.decorrelate and C == 3 else np.eye(C, dtype=np.float32)
        if settings.fourier:
            rows, cols = np.fft.fftfreq(H)[:, None], np.fft.rfftfreq(W)[None, :]
            self.scale = (1 / np.maximum(np.hypot(rows, cols), 1 / max(H, W))).astype(np.float32)
            self.scale /= self.scale.max()
            # irfft2's adjoint counts each column that stands for a pair of conjugate frequencies twice.
            self.pairs = np.full(cols.shape, 2.0, np.float32)
            self.pairs[:, 0] = 1
            if W % 2 == 0:
                self.pairs[:, -1] = 1
            shape_ = (2, C, H, W // 2 + 1)
            self.params = (rng.standard_normal(shape_) * 0.01).astype(np.float32)
        else:
            self.params = (rng.standard_normal(shape) * 0.01).astype(np.float32)

    def pixels(self) -> np.ndarray:
        self.linear = self._spatial()
        mixed = np.tensordot(self.colour, self.linear, axes=1)
        self.squashed = 1 / (1 + np.exp(-mixed))
        return self.squashed.astype(np.float32)

    def _spatial(self) -> np.ndarray:
        if not self.settings.fourier:
            return self.params
        spectrum = (self.params[0] + 1j * self.params[1]) * self.scale
        return np.fft.irfft2(spectrum, s=self.shape[1:], norm="ortho").astype(np.float32) * 4

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to the parameters, given one with respect to ``pixels()``."""
        g = np.tensordot(self.colour.T, grad * self.squashed * (1 - self.squashed), axes=1) * 4
        if not self.settings.fourier:
            return g.astype(np.float32) / 4
        spectrum = np.fft.rfft2(g, norm="ortho") * self.scale * self.pairs
        return np.stack([spectrum.real, spectrum.imag]).astype(np.float32)


def _transform(shape, settings: FeatureSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """This step's sample coordinates: the image shifted, scaled and turned about its centre, at random."""
    H, W = shape[1:]
    angle = np.deg2rad(rng.uniform(-settings.rotate, settings.rotate)) if settings.rotate else 0.0
    scale = float(rng.choice(settings.scales)) if settings.scales else 1.0
    jitter = max(1, min(H, W) // 16) if settings.jitter is None else settings.jitter
    shift = rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    centre = ((H - 1) / 2, (W - 1) / 2)
    dr, dc = (rows - centre[0]) / scale, (cols - centre[1]) / scale
    return (centre[0] + np.cos(angle) * dr - np.sin(angle) * dc + shift[0],
            centre[1] + np.sin(angle) * dr + np.cos(angle) * dc + shift[1])


def _total_variation(pixels: np.ndarray) -> tuple[float, np.ndarray]:
    """The sum of squared differences between neighbours, and its gradient."""
    down, right = np.diff(pixels, axis=1), np.diff(pixels, axis=2)
    g = np.zeros_like(pixels)
    g[:, :-1] -= 2 * down
    g[:, 1:] += 2 * down
    g[:, :, :-1] -= 2 * right
    g[:, :, 1:] += 2 * right
    return float((down**2).sum() + (right**2).sum()), g


def visualise(source, target: Target, shape: tuple[int, int, int], settings: FeatureSettings,
              values=None, progress=None) -> Feature:
    """The image of ``shape`` (C, H, W, pixels in 0..1) that excites ``target`` most.

    ``values`` makes pixels the source's input and takes a gradient back (``Preparation.values`` and
    ``values_backward`` for an ONNX model); by default the pixels are the input.  ``progress(step)`` is told
    after each step.
    """
    forward, backward = values or (lambda p: p, lambda g: g)
    rng = np.random.default_rng(settings.seed)
    image = _Image(shape, settings, rng)
    first, second = np.zeros_like(image.params), np.zeros_like(image.params)
    history = []
    for step in range(1, settings.steps + 1):
        pixels = image.pixels()
        rows, cols = _transform(shape, settings, rng)
        seen = ops.resample(pixels, rows, cols)
        result = source.reverse(forward(seen), target)
        history.append(result.score)
        g = reverse.resample_backward(backward(result.gradient), shape, rows, cols)
        if settings.tv:
            g -= settings.tv * _total_variation(pixels)[1]
        g = image.backward(g)
        first = 0.9 * first + 0.1 * g  # Adam, ascending
        second = 0.999 * second + 0.001 * g * g
        step_size = settings.rate * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        image.params += (step_size * first / (np.sqrt(second) + 1e-8)).astype(np.float32)
        if progress:
            progress(step)
    pixels = image.pixels()
    reached = source.reverse(forward(pixels), target, gradient=False).score
    return Feature(pixels, reached, history, asdict(settings))


@dataclass
class Examples:
    """Each unit's top patches over a set of images: (value, image's name, (top, left, bottom, right), patch)."""

    units: list[int]
    top: list[list[tuple[float, str, tuple[int, int, int, int], np.ndarray]]]


def dataset_examples(source, images, stage: int, units: list[int], count: int) -> Examples:
    """Over ``images`` ((name, prepared input) pairs, read lazily), the ``count`` places whose value excites each
    unit of ``stage`` most, each cut out of its input as the receptive field there (clamped to the image)."""
    return merged_examples(units, (image_examples(source, name, image, stage, units, count)
                                   for name, image in images), count)


def image_examples(source, name: str, image: np.ndarray, stage: int, units: list[int], count: int) -> list[list]:
    """One image's ``count`` strongest places for each unit: (value, name, box, patch) entries, strongest first."""
    results = list(source.stream(image))
    if not 1 <= stage < len(results):
        raise CnnxError(f"--stage takes 1 to {len(results) - 1}, the stages written")
    result = results[stage]
    values = np.asarray(result.array, np.float32).reshape(result.shape)
    field_, jump = result.receptive_field or image.shape[1:], result.jump or (1, 1)
    found = []
    for unit in units:
        if unit >= values.shape[0]:
            raise CnnxError(f"stage {stage} has channels 0 to {values.shape[0] - 1}; got {unit}")
        plane = values[unit].ravel()
        entries = []
        for flat in np.argsort(-plane, kind="stable")[:count]:  # an image may hold several of the top places
            row, col = np.unravel_index(int(flat), values.shape[1:])
            box = _field_box(row, col, field_, jump, image.shape[1:])
            entries.append((float(plane[flat]), name, box, image[:, box[0] : box[2], box[1] : box[3]].copy()))
        found.append(entries)
    return found


def merged_examples(units: list[int], per_image, count: int) -> Examples:
    """The images' entries for each unit, the ``count`` strongest kept (ties in the images' order)."""
    top: list[list] = [[] for _ in units]
    for found in per_image:
        for slot, entries in enumerate(found):
            top[slot] = sorted(top[slot] + entries, key=lambda entry: -entry[0])[:count]
    return Examples(units, top)


def _field_box(row: int, col: int, field, jump, size) -> tuple[int, int, int, int]:
    """The input pixels a value at (row, col) sees: a ``field`` square stepping ``jump`` per value, centred on the
    value's window, clamped to the image."""
    boxes = []
    for place, span, step, n in zip((row, col), field, jump, size, strict=True):
        centre = place * step + (step - 1) / 2
        start = int(round(centre - (span - 1) / 2))
        boxes.append((max(0, start), min(n, start + span)))
    return boxes[0][0], boxes[1][0], boxes[0][1], boxes[1][1]
