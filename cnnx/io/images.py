"""Images in: loading a file into a float32 array.

Loading follows one rule for every mode Pillow decodes: values are scaled by
the range of their bit depth into [0, 1], never clipped; EXIF orientation is
applied; transparent pixels are composited over white (as a drawing on paper
looks); a multi-frame file gives its first frame.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnx.base.errors import CnnxError
from cnnx.base.files import open_regular, read_regular
from cnnx.base.runtime import run_tasks

__all__ = ["DEFAULT_MAX_PIXELS", "LoadedImage", "decode_image", "load_image", "probe_image"]

# Pillow's own guard against decompression bombs: about 89.5 million pixels.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_PILLOW_STATE = threading.RLock()  # held while cnnx has Pillow's settings changed
# ITU-R BT.601 luma, the weights Pillow's own convert("L") uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class LoadedImage:
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
) -> LoadedImage:
    """Load an image file as (1, H, W) luma or, with ``color``, (3, H, W) RGB, float32 in [0, 1].

    ``frame`` picks a frame of an animated or multi-page file.  Anything that
    is not a readable image raises ``CnnxError`` naming the file.
    """
    path = Path(path)
    data = read_regular(path, "an image file", limit=_file_limit(max_pixels))
    return decode_image(data, path, color=color, max_pixels=max_pixels, frame=frame)


def decode_image(
    data: bytes, path: Path, *, color: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, frame: int = 0
) -> LoadedImage:
    """An image file's bytes, decoded as ``load_image`` decodes a file (a camera frame never touches the disk);
    ``path`` names it in errors."""
    # Warnings are caught to be told as notes; the filters they swap are the process's, so one load at a time.
    with _pillow(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picture = _open(path, data, max_pixels)
        fmt = picture.format or "unknown"
        try:
            frames = getattr(picture, "n_frames", 1)
            if frame >= frames:
                raise CnnxError(f"{path}: has {frames} frame{'s' if frames > 1 else ''}; --frame counts from 0")
            if frame:
                _seek(path, picture, frame, max_pixels)
            mode = picture.mode
            if picture.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even an upright image: only when turned
                picture = ImageOps.exif_transpose(picture)
            array = _to_channels(picture, color)
        except CnnxError:
            raise
        except MemoryError:
            raise CnnxError(f"{path}: the image does not fit in memory once decoded") from None
        except Exception as error:  # Pillow's decoders raise many kinds of error on corrupt data
            raise CnnxError(f"{path}: the image data is truncated or corrupt ({_reason(error)})") from None
    said = [" ".join(str(w.message).split()) for w in caught] + _depth_notes(data)
    notes = tuple(dict.fromkeys(said))
    digest = hashlib.sha256(data).hexdigest()
    return LoadedImage(path, array, mode, fmt, frames, digest, frame, notes)


def _depth_notes(data: bytes) -> list[str]:
    """What is lost in reading: Pillow reads PNGs of 16 bits a colour channel at 8 bits a channel."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 16 and data[25] in (2, 6):
        return ["16 bits a colour channel are read as 8 (Pillow's PNG reader); 16-bit grey keeps its 16 bits"]
    return []


def probe_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image as it will load (EXIF turns counted), from its header alone."""
    path = Path(path)
    with _pillow(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_regular(path, "an image file", limit=_file_limit(max_pixels)) as stream:  # only the header is read
            picture = _open(path, stream, max_pixels)
        try:
            # A PNG's getexif() decodes the whole image to look past it; the header's eXIf chunk is enough here.
            exif = picture.getexif() if picture.format != "PNG" else Image.Exif()
            if picture.format == "PNG" and "exif" in picture.info:
                exif.load(picture.info["exif"])
            turned = exif.get(0x0112) in (5, 6, 7, 8)  # orientations that swap width and height
        except Exception:  # a corrupt EXIF block: load_image will say what it can
            turned = False
    return (picture.width, picture.height) if turned else (picture.height, picture.width)


@contextmanager
def _pillow() -> Iterator[None]:
    """Pillow's process-wide settings as cnnx reads images: its bomb check off (cnnx checks sizes itself).

    The settings, and the warning filters a load swaps to catch Pillow's
    warnings, are the whole process's: one load at a time changes them, and
    puts them back.
    """
    with _PILLOW_STATE:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _file_limit(max_pixels: int) -> int:
    """The most bytes an image file of ``max_pixels`` may take: 16-bit RGBA stored as it is, and more besides."""
    return 64 * 1024 * 1024 + 8 * max_pixels


def _seek(path: Path, picture: Image.Image, frame: int, max_pixels: int) -> None:
    """Go to a later frame, whose size is checked like the first's before it is decoded."""
    try:
        picture.seek(frame)
    except Image.DecompressionBombError:
        raise _too_large(path, max_pixels, f"frame {frame}") from None
    if picture.width * picture.height > max_pixels:
        raise _too_large(path, max_pixels, f"frame {frame}, {picture.width}x{picture.height}")


def _too_large(path: Path, max_pixels: int, what: str) -> CnnxError:
    return CnnxError(f"{path}: the image is larger than the limit of {max_pixels:,} pixels ({what}); "
                     "raise --max-pixels to load it")


def _open(path: Path, data: bytes | BinaryIO, max_pixels: int) -> Image.Image:
    """Read the header only and refuse an image over ``max_pixels`` before a pixel is decoded.

    The check below stands in for Pillow's own (which warns above its limit
    and refuses only above twice that, without the size); ``_pillow()`` has
    switched Pillow's off.
    """
    try:
        picture = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except UnidentifiedImageError:
        if not isinstance(data, bytes):
            data.seek(0)
            data = data.read(16)
        kind = _looks_like(data)
        if kind:
            raise CnnxError(f"{path}: a corrupt {kind} file: its header cannot be read") from None
        raise CnnxError(f"{path}: not an image file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from None
    except Exception as error:  # as above: any failure to read a header means a corrupt file
        raise CnnxError(f"{path}: the image header is corrupt ({_reason(error)})") from None
    if picture.width * picture.height > max_pixels:
        raise _too_large(path, max_pixels, f"{picture.width}x{picture.height}")
    return picture


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP",
}


def _looks_like(data: bytes) -> str | None:
    """The image format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


BAND_BYTES = 1 << 17  # decoded bytes converted to float at a time, so loading needs little more than the result


def _to_channels(picture: Image.Image, color: bool) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]: luma or RGB, alpha composited over white, high bit depths kept.

    8-bit pictures are converted a band of rows at a time on the ops' threads,
    each band copied out of Pillow on its own, so the image is never copied whole.
    """
    mode = picture.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(picture, dtype=np.float32)
        gray = _single_band(values, mode)
        transparent = picture.info.get("transparency")
        if isinstance(transparent, int) and mode != "F":  # a grey PNG's one transparent value: over white, as 8-bit
            gray[values == transparent] = 1.0
        return np.repeat(gray[None], 3 if color else 1, axis=0)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in picture.info
    target = "RGBA" if has_alpha else "L" if mode in ("1", "L") else "RGB"
    # Decoded here, once: the bands below are cut by several threads, and a lazy image would decode in each.
    picture = picture.convert(target) if mode != target else picture
    picture.load()
    W, H = picture.size
    out = np.empty((3 if color else 1, H, W), np.float32)
    step = max(1, BAND_BYTES // (W * len(target)))

    def work(r0: int, scratch: dict) -> None:
        band = picture.crop((0, r0, W, min(H, r0 + step))).tobytes()
        chunk = np.frombuffer(band, np.uint8).reshape(-1, W, len(target)).astype(np.float32) / np.float32(255)
        rows = slice(r0, r0 + len(chunk))
        if has_alpha:
            alpha = chunk[..., 3:]
            chunk = chunk[..., :3] * alpha + (1 - alpha)
        if color:
            out[:, rows] = np.moveaxis(np.broadcast_to(chunk, (*chunk.shape[:2], 3)), 2, 0)
        elif chunk.shape[2] == 1:
            out[0, rows] = chunk[..., 0]
        else:
            # Multiplies and adds in a fixed order, not a BLAS product, whose rounding can depend on where the
            # band lies in memory; the three weights sum to 1 only up to rounding: keep white at 1.
            luma = out[0, rows]
            np.multiply(chunk[..., 0], LUMA[0], out=luma)
            luma += chunk[..., 1] * LUMA[1]
            luma += chunk[..., 2] * LUMA[2]
            np.minimum(luma, 1, out=luma)

    run_tasks(list(range(0, H, step)), work)
    return out


def _single_band(values: np.ndarray, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image in [0, 1]: by its bit depth where it fits, else stretched.

    16-bit modes are divided by 65535; 32-bit integers by 255 or 65535 when
    their values fit those ranges; floats already in [0, 1] stay; anything
    else is stretched from its minimum to its maximum, never clipped.
    """
    low, high = float(np.nanmin(values)) if values.size else 0.0, float(np.nanmax(values)) if values.size else 0.0
    if mode.startswith("I;16"):
        return values / np.float32(65535)
    if mode == "I" and low >= 0 and high <= 65535:
        return values / np.float32(255 if high <= 255 else 65535)
    if mode == "F" and low >= 0 and high <= 1:
        return values
    return _stretch(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map the finite range of ``values`` onto [0, 1] (a constant image becomes 0; NaN and infinities 0)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0)), float(values.max(initial=0))
    return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)
