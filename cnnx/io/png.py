"""Writing PNGs: 8-bit grey, palette or RGB pixels, deflated by ISA-L where it is installed.

Compressing is most of a run's work: a 4096x4096 map is 16 MB to deflate.
ISA-L's deflate (levels 1-3 here) does that about seven times faster than
zlib's fastest level, to files of about the same size; levels 4-9 use zlib,
for the smallest files, and level 0 stores the bytes as they are.

Each row is stored as it is or as its difference from the row above (PNG
filters None and Up).  Which of the two, is chosen once per image by
compressing a band of its rows both ways: Up suits smooth pictures such as
photos, None suits maps with long runs of one colour.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from cnnx.base.files import written_whole

try:
    from isal import isal_zlib
except ImportError:  # no wheel for this platform: zlib does the same work, more slowly
    isal_zlib = None

__all__ = ["LEVELS", "encode_png", "write_png"]

LEVELS = range(10)
FAST_LEVELS = (1, 2, 3)  # ISA-L's own levels
SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAND_BYTES = 1 << 18  # rows are filtered and deflated this many bytes at a time, so they stay in cache
SAMPLE_BYTES = 1 << 14  # the band of rows that decides the filter
IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk
_FILTER_NONE, _FILTER_UP = 0, 2
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # samples per pixel -> PNG colour type: grey, RGB, RGBA
_PALETTE = 3

_crc32 = isal_zlib.crc32 if isal_zlib is not None else zlib.crc32


def encode_png(stream, pixels: np.ndarray, *, palette: np.ndarray | None = None, level: int = 1,
               text: dict[str, str] | None = None) -> None:
    """Write ``pixels`` to the binary ``stream`` as a PNG.

    Parameters
    ----------
    pixels : (H, W) or (H, W, 3 or 4) uint8
        Grey levels, colour-table indices (with ``palette``), RGB or RGBA.
    palette : (N, 3) uint8, optional
        The colours that (H, W) indices stand for; N is at most 256.
    level : int
        0 stores, 1-3 are ISA-L's (zlib's where ISA-L is not installed), 4-9 zlib's.
    text : dict, optional
        Keyword and text pairs, written as tEXt chunks (iTXt for text beyond Latin-1).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ValueError(f"pixels must be a non-empty (H, W) or (H, W, C) uint8 array; got {pixels.dtype} "
                         f"{pixels.shape}")
    if level not in LEVELS:
        raise ValueError(f"level must be 0-9; got {level}")
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    if samples not in _COLOR_TYPES or (palette is not None and samples != 1):
        raise ValueError(f"pixels must have 1, 3 or 4 samples (1 with a palette); got shape {pixels.shape}")
    if palette is not None:
        palette = np.ascontiguousarray(palette, np.uint8)
        if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= len(palette) <= 256:
            raise ValueError(f"palette must be (N, 3) with N in 1-256; got shape {palette.shape}")
    texts = [_text_chunk(key, value) for key, value in (text or {}).items()]  # checked before a byte is written
    H, W = pixels.shape[:2]
    color_type = _PALETTE if palette is not None else _COLOR_TYPES[samples]
    stream.write(SIGNATURE)
    _chunk(stream, b"IHDR", struct.pack(">IIBBBBB", W, H, 8, color_type, 0, 0, 0))
    if palette is not None:
        _chunk(stream, b"PLTE", palette.tobytes())
    for kind, data in texts:
        _chunk(stream, kind, data)
    pending, size = [], 0
    for piece in _deflated_rows(pixels.reshape(H, -1), level):
        pending.append(piece)
        size += len(piece)
        if size >= IDAT_BYTES:
            _chunk(stream, b"IDAT", b"".join(pending))
            pending, size = [], 0
    _chunk(stream, b"IDAT", b"".join(pending))
    _chunk(stream, b"IEND", b"")


def _library(level: int):
    """ISA-L for its own levels where it is installed, else zlib."""
    return isal_zlib if isal_zlib is not None and level in FAST_LEVELS else zlib


def _deflated_rows(rows: np.ndarray, level: int):
    """The compressed scanlines of ``rows`` (each a filter byte, then the row's bytes), a band at a time."""
    H, row_bytes = rows.shape
    kind = _FILTER_UP if _up_is_smaller(rows, level) else _FILTER_NONE
    step = max(1, BAND_BYTES // row_bytes)
    band = np.empty((min(step, H), row_bytes + 1), np.uint8)
    band[:, 0] = kind
    deflate = _library(level).compressobj(level)
    for r0 in range(0, H, step):
        n = min(step, H - r0)
        _filter_into(band[:n, 1:], rows, r0, kind)
        yield deflate.compress(band[:n])
    yield deflate.flush()


def _filter_into(out: np.ndarray, rows: np.ndarray, r0: int, kind: int) -> None:
    """Rows ``r0 .. r0 + len(out)`` filtered by ``kind`` into ``out``; Up subtracts the row above modulo 256."""
    n = len(out)
    if kind == _FILTER_NONE:
        out[...] = rows[r0 : r0 + n]
        return
    np.subtract(rows[r0 + 1 : r0 + n], rows[r0 : r0 + n - 1], out=out[1:])
    if r0 == 0:
        out[0] = rows[0]  # the row above the first is taken as zeros
    else:
        np.subtract(rows[r0], rows[r0 - 1], out=out[0])


def _up_is_smaller(rows: np.ndarray, level: int) -> bool:
    """Whether a band from the middle of the image compresses smaller as Up differences than as it is."""
    H, row_bytes = rows.shape
    if H < 2 or level == 0:
        return False
    count = min(H - 1, max(2, SAMPLE_BYTES // row_bytes))
    start = (H - count) // 2 or 1
    sample = np.ascontiguousarray(rows[start : start + count])
    up = np.empty_like(sample)
    _filter_into(up, rows, start, _FILTER_UP)
    compress = _library(level).compress
    return len(compress(up, level)) < len(compress(sample, level))


def _text_chunk(key: str, value: str) -> tuple[bytes, bytes]:
    """A tEXt chunk, or an iTXt chunk (UTF-8) when the text does not fit Latin-1."""
    keyword = key.encode("latin-1")
    if not 1 <= len(keyword) <= 79:
        raise ValueError(f"a PNG text keyword has 1-79 characters; got {key!r}")
    try:
        return b"tEXt", keyword + b"\0" + value.encode("latin-1")
    except UnicodeEncodeError:
        return b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8")


def _chunk(stream, kind: bytes, data: bytes) -> None:
    stream.write(struct.pack(">I", len(data)))
    stream.write(kind)
    stream.write(data)
    stream.write(struct.pack(">I", _crc32(data, _crc32(kind))))


def write_png(path: Path, pixels: np.ndarray, *, palette: np.ndarray | None = None, level: int = 1,
              text: dict[str, str] | None = None, atomic: bool = True) -> None:
    """Write a PNG (see ``encode_png``) atomically: a temporary file in the same folder, then a rename.

    ``atomic=False`` writes in place, for a folder that is itself moved into place only when complete.
    """
    with written_whole(path) if atomic else open(path, "wb") as stream:
        encode_png(stream, pixels, palette=palette, level=level, text=text)
