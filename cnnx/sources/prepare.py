"""How a loaded image (values 0..1, grey or RGB) becomes an imported model's input.

A model was trained on images prepared one way, and sees others badly: the
size and crop, the channels' order, the scale of the values, and the mean
and spread taken off them.  A preparation says all of that; the presets are
the common ones, and each part can be changed on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from cnnx.base.errors import CnnxError

__all__ = ["PREPARATIONS", "Preparation", "preparation"]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # mean and std of ImageNet's training images, RGB
CAFFE_MEAN = (103.939, 116.779, 123.68)  # ImageNet's mean in blue, green, red, 0..255, as Caffe models take it
CROP_RATIO = 256 / 224  # the shorter side before the centre crop, over the crop's: how torchvision's models were tested


@dataclass(frozen=True)
class Preparation:
    """``fit`` is ``stretch`` (resized to the input's size, whatever its shape) or ``crop`` (the shorter side to
    ``side`` pixels, by default 256/224 of the input's, then the middle cut out); the values are then multiplied by
    ``scale``, put in ``order`` and have ``mean`` taken off and are divided by ``std`` (one number a channel, in
    the model's order and scale)."""

    name: str = "none"
    fit: str = "stretch"
    side: int | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    order: str = "rgb"
    scale: float = 1.0

    def apply(self, image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """``image`` (C, H, W) in 0..1 as the model's (C, H, W) input of ``shape``."""
        from PIL import Image

        C, H, W = shape
        if image.shape[0] == 1 and C == 3:
            image = np.repeat(image, 3, axis=0)
        elif image.shape[0] >= 3 and C == 1:
            image = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), image[:3], axes=1)[None]
        size = (W, H)
        if self.fit == "crop":
            side = self.side or max(H, W) * CROP_RATIO
            scale = side / min(image.shape[1:])
            size = (max(W, round(image.shape[2] * scale)), max(H, round(image.shape[1] * scale)))
        planes = [np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BILINEAR)) for p in image[:C]]
        out = np.stack(planes).astype(np.float32)
        top, left = (out.shape[1] - H) // 2, (out.shape[2] - W) // 2
        return self.values(out[:, top : top + H, left : left + W])

    def values(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (C, H, W) in 0..1, already of the input's size and channels, as the model takes them: in its
        channels' order, scaled, less the mean, over the spread."""
        C = pixels.shape[0]
        out = pixels[::-1] if self.order == "bgr" and C == 3 else pixels
        out = out * np.float32(self.scale)
        if self.mean:
            out = out - np.array(self._each(self.mean, C), np.float32)[:, None, None]
        if self.std:
            out = out / np.array(self._each(self.std, C), np.float32)[:, None, None]
        return np.ascontiguousarray(out, np.float32)

    def values_backward(self, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to the pixels given one with respect to ``values(pixels)``."""
        C = grad.shape[0]
        out = grad * np.float32(self.scale)
        if self.std:
            out = out / np.array(self._each(self.std, C), np.float32)[:, None, None]
        return np.ascontiguousarray(out[::-1] if self.order == "bgr" and C == 3 else out, np.float32)

    def any_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The input size for an image of ``size`` (H, W), for a model that takes any: the image's own, or with a
        side given (``--size``) its shorter side at that many pixels, the shape kept."""
        if self.side is None:
            return tuple(size)
        scale = self.side / min(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))

    def any_size_at_load(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The shape a model of any size is made ready at before an image is seen: ``shape``, or the side given."""
        return (shape[0], self.side, self.side) if self.side else shape

    def any_size_reason(self) -> str:
        return f"shorter side to {self.side} px (--size)" if self.side else "the image's own size"

    def kept_whole(self) -> Preparation:
        """This preparation without a crop: an input of any size takes the whole image."""
        return replace(self, fit="stretch")

    @staticmethod
    def _each(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
        if len(values) == 1:
            return values * channels
        if len(values) != channels:
            raise CnnxError(f"the model takes {channels} channels: give --mean and --std one number or {channels}")
        return values

    def describe(self, shape: tuple[int, int, int], *, sized: str | None = None) -> str:
        """What was done, in words, for the manifest and the page; ``sized`` says how the size was chosen instead."""
        C, H, W = shape
        if sized:
            steps = [sized]
        elif self.fit == "crop":
            side = self.side or round(max(H, W) * CROP_RATIO)
            steps = [f"shorter side to {side} px, the middle {H}x{W} cut out"]
        else:
            steps = [f"resized to {H}x{W}"]
        steps.append("grey" if C == 1 else "blue, green, red" if self.order == "bgr" else "red, green, blue")
        steps.append("values 0..255" if self.scale == 255 else f"values 0..{self.scale:g}")
        if self.mean:
            steps.append(f"minus {', '.join(f'{v:g}' for v in self.mean)}")
        if self.std:
            steps.append(f"over {', '.join(f'{v:g}' for v in self.std)}")
        return "; ".join(steps)


PREPARATIONS = {
    "none": Preparation(),
    "imagenet": Preparation("imagenet", "crop", mean=IMAGENET[0], std=IMAGENET[1]),
    "caffe": Preparation("caffe", "crop", mean=CAFFE_MEAN, order="bgr", scale=255.0),
}


def preparation(
    preset: str | None = None,
    *,
    size: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    order: str | None = None,
    scale: float | None = None,
) -> Preparation:
    """A preset (``none`` by default) with the parts given changed; ``size`` is ``crop``, ``stretch`` or the shorter
    side in pixels before the centre crop.

    >>> preparation("imagenet", size="256").describe((3, 224, 224))
    'shorter side to 256 px, the middle 224x224 cut out; red, green, blue; values 0..1; minus 0.485, 0.456, 0.406; \
over 0.229, 0.224, 0.225'
    """
    name = preset or "none"
    if name not in PREPARATIONS:
        raise CnnxError(f"--preprocess takes {', '.join(PREPARATIONS)}; got {name!r}")
    chosen = PREPARATIONS[name]
    if size is not None:
        chosen = replace(chosen, **_size(size))
    if mean is not None:
        chosen = replace(chosen, mean=_numbers(mean, "--mean"))
    if std is not None:
        spread = _numbers(std, "--std")
        if any(v <= 0 for v in spread):
            raise CnnxError(f"--std takes numbers above 0; got {std!r}")
        chosen = replace(chosen, std=spread)
    if order is not None:
        if order not in ("rgb", "bgr"):
            raise CnnxError(f"--order takes rgb or bgr; got {order!r}")
        chosen = replace(chosen, order=order)
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise CnnxError(f"--scale takes a number above 0, e.g. 255; got {scale}")
        chosen = replace(chosen, scale=float(scale))
    return chosen


def _size(text: str) -> dict:
    if text in ("crop", "stretch"):
        return {"fit": text, "side": None}
    try:
        side = int(text)
    except ValueError:
        side = 0
    if not 1 <= side <= 16384:
        raise CnnxError(f"--size takes crop, stretch or the shorter side in pixels (1..16384), e.g. 256; got {text!r}")
    return {"fit": "crop", "side": side}


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise CnnxError(f"{option} takes one number or one a channel, e.g. 0.5,0.5,0.5; got {text!r}")
    return values
