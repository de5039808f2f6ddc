"""Images in and out: loading a file into a float32 array, drawing a feature map as 8-bit pixels, writing PNGs.

Loading follows one rule for every mode Pillow decodes: values are scaled by
the range of their bit depth into [0, 1], never clipped; EXIF orientation is
applied; transparent pixels are composited over white (as a drawing on paper
looks); a multi-frame file gives its first frame.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from cnnx.errors import CnnxError

__all__ = ["Source", "load_image", "DEFAULT_MAX_PIXELS", "write_png"]

# Pillow's own guard against decompression bombs: about 89.5 million pixels.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# ITU-R BT.601 luma, the weights Pillow's own convert("L") uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Source:
    """A loaded image: the (C, H, W) float32 array in [0, 1] and where it came from."""

    path: Path
    array: np.ndarray
    mode: str
    format: str
    frames: int
    sha256: str
    frame: int = 0
    notes: tuple[str, ...] = ()  # what Pillow warned about while reading, e.g. corrupt EXIF data


def load_image(
    path: str | os.PathLike, *, color: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, frame: int = 0
) -> Source:
    """Load an image file as (1, H, W) luma or, with ``color``, (3, H, W) RGB, float32 in [0, 1].

    ``frame`` picks a frame of an animated or multi-page file.  Anything that
    is not a readable image raises ``CnnxError`` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picture = _open(path, data, max_pixels)
        fmt = picture.format or "unknown"
        try:
            frames = getattr(picture, "n_frames", 1)
            if frame >= frames:
                raise CnnxError(f"{path}: has {frames} frame{'s' if frames > 1 else ''}; --frame counts from 0")
            if frame:
                picture.seek(frame)
            mode = picture.mode
            picture = ImageOps.exif_transpose(picture)
            rgb = _to_float_rgb(picture)
        except CnnxError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise CnnxError(f"{path}: the image data is truncated or corrupt ({error})") from None
    notes = tuple(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    array = rgb.transpose(2, 0, 1) if color else np.tensordot(LUMA, rgb, axes=([0], [2]))[None]
    digest = hashlib.sha256(data).hexdigest()
    return Source(path, np.ascontiguousarray(array, dtype=np.float32), mode, fmt, frames, digest, frame, notes)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CnnxError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CnnxError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise CnnxError(f"{path}: permission denied") from None
    except OSError as error:
        raise CnnxError(f"{path}: cannot read ({error.strerror or error})") from None


def _open(path: Path, data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only and refuse an image over ``max_pixels`` before a pixel is decoded.

    Pillow's own bomb check is switched off while the header is read, so the
    message can give the size; the check below is stricter than Pillow's (which
    warns above its limit and refuses only above twice that).
    """
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        picture = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        kind = _looks_like(data)
        if kind:
            raise CnnxError(f"{path}: a corrupt {kind} file: its header cannot be read") from None
        raise CnnxError(f"{path}: not an image file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise CnnxError(f"{path}: the image header is corrupt ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if picture.width * picture.height > max_pixels:
        raise CnnxError(
            f"{path}: the image is larger than the limit of {max_pixels:,} pixels "
            f"({picture.width}x{picture.height}); raise --max-pixels to load it"
        )
    return picture


SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP",
}


def _looks_like(data: bytes) -> str | None:
    """The image format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


def _to_float_rgb(picture: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], alpha composited over white, high bit depths kept."""
    mode = picture.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(picture, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top, 0, 1) if values.min(initial=0) >= 0 else _stretch(values)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.asarray(picture, dtype=np.float32)
        inside = values.min(initial=0) >= 0 and values.max(initial=0) <= 1
        return np.repeat((values if inside else _stretch(values))[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in picture.info
    rgba = np.asarray(picture.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    if not has_alpha:
        return rgba
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map the finite range of ``values`` onto [0, 1] (a constant image becomes 0)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


# ---------------------------------------------------------------- writing


def write_png(path: Path, pixels: np.ndarray, *, level: int = 1, text: dict[str, str] | None = None) -> None:
    """Write 8-bit pixels as a PNG atomically: a temporary file in the same folder, then a rename.

    ``text`` goes into tEXt chunks (for example the values black and white stand for).
    """
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(pixels).save(stream, format="PNG", compress_level=level, pnginfo=info)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
