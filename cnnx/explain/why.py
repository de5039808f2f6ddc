"""Why a network answers as it does: which pixels of the prepared image drove a target, by seven methods.

Each method gives a map at the input's size.  The gradient methods read the
reverse pass (``source.reverse``) of any source of stages:

- ``gradient``: the saliency map (Simonyan et al. 2014), the largest magnitude
  of the gradient over the channels;
- ``input-x-gradient``: the input times the gradient, summed over channels;
- ``integrated-gradients`` (Sundararajan et al. 2017): the input less a
  baseline times the gradient averaged along the straight path from the
  baseline (``steps`` midpoints); its values sum to the score's change from
  the baseline, which is checked and said;
- ``smoothgrad`` (Smilkov et al. 2017): the gradient's magnitude averaged
  over ``samples`` copies with Gaussian noise of ``noise`` times the input's
  range;
- ``gradcam`` (Selvaraju et al. 2017): a stage's maps weighed by their mean
  gradients, summed and kept where positive, enlarged to the input;
- ``gradcam++`` (Chattopadhay et al. 2018): the weights from the gradient's
  second and third powers, which share credit between several places;
- ``occlusion`` (Zeiler and Fergus 2014): no gradient at all, a square
  ``patch`` of zeros slid over the input and the score's fall where it lies,
  an independent cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnx.base.errors import CnnxError
from cnnx.sources.reverse import Target

METHODS = ("gradcam", "gradcam++", "gradient", "input-x-gradient", "integrated-gradients", "smoothgrad", "occlusion")
SIGNED = frozenset({"input-x-gradient", "integrated-gradients", "occlusion"})  # the rest are never negative


@dataclass(frozen=True)
class WhySettings:
    """A method and its parameters (each read only by its method)."""

    method: str = "gradcam"
    stage: int | None = None  # Grad-CAM's stage; by default the last with a map of more than one value
    steps: int = 32  # integrated gradients
    samples: int = 16  # smoothgrad
    noise: float = 0.15  # smoothgrad: the noise's standard deviation over the input's range
    patch: int | None = None  # occlusion: the square's side, by default an eighth of the input's shorter side
    seed: int = 0  # smoothgrad's noise

    def __post_init__(self):
        if self.method not in METHODS:
            raise CnnxError(f"--method takes {', '.join(METHODS)}; got {self.method!r}")
        if self.steps < 1 or self.samples < 1:
            raise CnnxError("--steps and --samples take a whole number, 1 or more")
        if not (np.isfinite(self.noise) and self.noise >= 0):
            raise CnnxError(f"--noise takes a number, 0 or more; got {self.noise}")
        if self.patch is not None and self.patch < 1:
            raise CnnxError(f"--patch takes a whole number of pixels, 1 or more; got {self.patch}")


@dataclass
class Why:
    """One method's answer: the map (H, W) at the input's size, what it explains, and how it was made."""

    method: str
    target: str
    score: float
    map: np.ndarray
    signed: bool
    gradient: np.ndarray | None = None  # the raw gradient with respect to the prepared input, (C, H, W)
    stage: int | None = None  # the stage Grad-CAM read
    parameters: dict = field(default_factory=dict)
    # A line the method's own arithmetic lets be checked: integrated gradients' completeness, what Grad-CAM kept.
    check: str = ""


def explain_why(source, image: np.ndarray, target: Target, settings: WhySettings, what: str) -> Why:
    """``settings.method``'s map of what in the prepared ``image`` drove ``target`` (described as ``what``)."""
    method = settings.method
    if method in ("gradcam", "gradcam++"):
        return _cam(source, image, target, settings, what)
    if method == "occlusion":
        return _occlusion(source, image, target, settings, what)
    base = source.reverse(image, target)
    why = Why(method, what, base.score, np.zeros(image.shape[1:], np.float32), method in SIGNED, base.gradient)
    if method == "gradient":
        why.map = np.abs(base.gradient).max(axis=0)
    elif method == "input-x-gradient":
        why.map = (image * base.gradient).sum(axis=0)
    elif method == "integrated-gradients":
        why.map, why.check = _integrated(source, image, target, settings.steps, base.score)
        why.parameters = {"steps": settings.steps, "baseline": "zeros"}
    else:
        why.map = _smoothed(source, image, target, settings)
        why.parameters = {"samples": settings.samples, "noise": settings.noise, "seed": settings.seed}
    why.map = why.map.astype(np.float32)
    return why


def _integrated(source, image, target, steps: int, score: float) -> tuple[np.ndarray, str]:
    """(x - 0) times the mean gradient at the midpoints of ``steps`` equal parts of the path from 0 to x."""
    total = np.zeros(image.shape, np.float64)
    for k in range(steps):
        total += source.reverse(image * np.float32((k + 0.5) / steps), target).gradient
    attributions = (image * total / steps).sum(axis=0)
    start = source.reverse(np.zeros_like(image), target, gradient=False).score
    check = (f"the map sums to {attributions.sum():.4g}; the score rose by {score - start:.4g} from the baseline "
             f"(zeros, score {start:.4g}): integrated gradients make the two equal as steps grow")
    return attributions, check


def _smoothed(source, image, target, settings: WhySettings) -> np.ndarray:
    rng = np.random.default_rng(settings.seed)
    spread = settings.noise * float(image.max() - image.min() or 1.0)
    total = np.zeros(image.shape[1:], np.float64)
    for _ in range(settings.samples):
        noisy = image + (rng.standard_normal(image.shape) * spread).astype(np.float32)
        total += np.abs(source.reverse(noisy, target).gradient).max(axis=0)
    return total / settings.samples


def default_method(source) -> str:
    """Grad-CAM where the network pools its maps globally before its answer (ResNet, MobileNet, ...), as
    Grad-CAM assumes; integrated gradients elsewhere (a dense layer over every place, as the shapes model's, or a
    chain), which passes the pointing game there."""
    from cnnx.sources.stages import GlobalAvgPool

    pooled = any(isinstance(stage, GlobalAvgPool) for stage in getattr(source.pipeline, "stages", ())) or any(
        node.op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean") for node in getattr(source, "nodes", ()))
    return "gradcam" if pooled else "integrated-gradients"


def default_cam_stage(source, shape, end: int | None = None) -> int:
    """The last written stage (up to ``end``) whose maps have more than one value: Grad-CAM's usual choice, the
    last convolutional block."""
    planned = source.plan(shape)
    spatial = [p.index for p in planned if p.shape[1] > 1 and p.shape[2] > 1 and (end is None or p.index <= end)]
    if not spatial:
        raise CnnxError("no stage before the target has a map of more than one value for Grad-CAM; "
                        "try --method gradient")
    return spatial[-1]


def _cam(source, image, target, settings: WhySettings, what: str) -> Why:
    stage = settings.stage or default_cam_stage(source, image.shape, target.stage)
    result = source.reverse(image, target, keep=(stage,))
    if stage not in result.stages:
        raise CnnxError(f"stage {stage} does not lead to the target; Grad-CAM needs a stage before it")
    maps, grads = (np.asarray(a, np.float64) for a in result.stages[stage])
    if settings.method == "gradcam":
        weights = grads.mean(axis=(1, 2))
    else:  # Grad-CAM++: each place's share from the gradient's powers, as its authors compute it
        squared, cubed = grads**2, grads**3
        denominator = 2 * squared + maps.sum(axis=(1, 2), keepdims=True) * cubed
        alphas = np.where(denominator != 0, squared / np.where(denominator != 0, denominator, 1), 0)
        weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))
    weighed = np.tensordot(weights, maps, axes=1)
    return Why(settings.method, what, result.score, _enlarged(np.maximum(weighed, 0), image.shape[1:]), False,
               result.gradient, stage, {"stage": stage}, _kept(weighed))


# The share of the weighed maps' magnitude above zero under which Grad-CAM's map is said to say little.
LITTLE = 0.05


def _kept(weighed: np.ndarray) -> str:
    """What Grad-CAM's ReLU kept of the weighed maps, in words, where it cut any: the map shows only their part above
    zero, which can be a sliver of them (on the shapes model, whose dense layer weighs each place on its own, well
    under 0.1%)."""
    magnitude = float(np.abs(weighed).sum())
    if magnitude == 0 or weighed.min() >= 0:  # nothing cut (Grad-CAM++'s weights and maps are never below zero)
        return ""
    kept = float(np.maximum(weighed, 0).sum()) / magnitude
    line = (f"the weighed maps sum to {weighed.sum():.4g}; the map shows their part above zero, "
            f"{f'{kept:.1%}' if kept >= 0.001 else 'under 0.1%'} of their magnitude")
    if kept < LITTLE:
        line += ": too little to say much about this answer; read input x gradient or integrated gradients beside it"
    return line


def _enlarged(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A stage's map stretched over the input, bilinearly, as Grad-CAM shows it."""
    from PIL import Image

    return np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize(size[::-1], Image.Resampling.BILINEAR),
                      np.float32)


def _occlusion(source, image, target, settings: WhySettings, what: str) -> Why:
    """The score's fall with a square of zeros over each place, averaged over the squares covering each pixel."""
    H, W = image.shape[1:]
    patch = min(settings.patch or max(1, min(H, W) // 8), H, W)
    step = max(1, patch // 2)
    score = source.reverse(image, target, gradient=False).score
    fall, covered = np.zeros((H, W), np.float64), np.zeros((H, W), np.float64)
    for top in sorted({*range(0, H - patch + 1, step), H - patch}):
        for left in sorted({*range(0, W - patch + 1, step), W - patch}):
            hidden = image.copy()
            hidden[:, top : top + patch, left : left + patch] = 0
            fall[top : top + patch, left : left + patch] += score - source.reverse(hidden, target,
                                                                                   gradient=False).score
            covered[top : top + patch, left : left + patch] += 1
    return Why("occlusion", what, score, (fall / covered).astype(np.float32), True, None, None,
               {"patch": patch, "stride": step, "fill": 0})


def class_target(source, image: np.ndarray, wanted: str | None) -> tuple[Target, str]:
    """The target for a classifier's class ``wanted`` (an index or a name, any case; by default the top class), and
    its description with the probability the model gives it."""
    last = np.asarray(list(source.stream(image))[-1].array, np.float64)
    answer = source.answer(last)
    output = last.ravel()
    if not answer:
        raise CnnxError(f"the {source.name} classifies nothing (its output is no row of class scores): give a "
                        "--stage (and --channel, --at) to start from")
    names = list(getattr(source, "classes", ()) or getattr(source, "labels", ()))
    if len(names) != output.size:
        names = [f"class {k}" for k in range(output.size)]
    if wanted is None:
        label = names.index(answer[0][0])
    elif wanted.isdigit():
        label = int(wanted)
        if label >= len(names):
            raise CnnxError(f"--class takes 0 to {len(names) - 1}; got {wanted}")
    else:
        matches = [k for k, name in enumerate(names) if name.lower() == wanted.lower()] or \
                  [k for k, name in enumerate(names) if wanted.lower() in name.lower()]
        if len(matches) != 1:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise CnnxError(f"--class {wanted!r} names {'no' if not matches else 'more than one'} class of "
                            f"{source.name} ({shown}); give its name or index")
        label = matches[0]
    probabilities = output if np.all(output >= 0) and abs(output.sum() - 1) < 1e-3 else _softmax(output)
    name = names[label] if names[label].startswith("class ") else f"class {names[label]}"
    return Target(label=label), f"{name} (index {label}, probability {probabilities[label]:.1%})"


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def stage_target(stage: int, channel: int | None, place: tuple[int, int] | None) -> tuple[Target, str]:
    """The target for a stage's channel (its sum) or its value at ``place``, and its description."""
    where = f" at row {place[0]}, column {place[1]}" if place else " (the sum of its map)"
    return Target(stage=stage, channel=channel or 0, place=place), f"stage {stage}, channel {channel or 0}{where}"


METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "gradient": "Saliency (gradient)",
                "input-x-gradient": "Input x gradient", "integrated-gradients": "Integrated gradients",
                "smoothgrad": "SmoothGrad", "occlusion": "Occlusion"}


def why_lines(why: Why) -> list[str]:
    """The words under the picture: the method and what it explains, the score, and how it was made."""
    lines = [f"{METHOD_NAMES[why.method]}: what in the image drove {why.target}",
             f"score {why.score:.4g}" + (" (the logit, before the softmax)" if "class" in why.target else "")]
    if why.stage is not None:
        lines[-1] += f"; the maps of stage {why.stage} weighed by their gradients"
    shown = {k: v for k, v in why.parameters.items() if k != "stage"}
    if shown:
        lines.append(", ".join(f"{k} {v}" for k, v in shown.items()))
    if why.signed:
        lines.append("red raised the score, blue lowered it" if why.method != "occlusion" else
                     "red: hiding it lowered the score; blue: hiding it raised the score")
    if why.check:
        lines.append(why.check)
    if not np.any(why.map):
        lines.append("the map is zero everywhere: nothing in the image raised the score by this method"
                     + (" (Grad-CAM keeps only where the weighed maps sum above zero)" if why.stage else ""))
    return lines
