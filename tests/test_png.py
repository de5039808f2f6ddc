"""PNG writing: every file decodes in Pillow to the exact pixels, palette and text, at every level, ISA-L or not."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnnx.io import png
from cnnx.render.draw import colormap

DIVERGING = colormap("diverging")


def encoded(pixels, **options) -> bytes:
    stream = io.BytesIO()
    png.encode_png(stream, pixels, **options)
    return stream.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG, each CRC checked with the standard library's zlib."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        at += 12 + length
    return out


def filter_bytes(data: bytes, row_bytes: int) -> set[int]:
    """The filter type at the start of every scanline, read by inflating the IDAT chunks with zlib."""
    raw = zlib.decompress(b"".join(body for kind, body in chunks(data) if kind == b"IDAT"))
    return set(raw[:: row_bytes + 1])


pixels_2d = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=70))
pixels_rgb = hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([3, 4])))


@settings(max_examples=60, deadline=None)
@given(pixels_2d, st.sampled_from(list(png.LEVELS)))
def test_grey_and_palette_round_trip(pixels, level):
    """Grey and palette images decode to the same bytes, and the palette to the same colours."""
    grey = decoded(encoded(pixels, level=level))
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), pixels)
    indexed = decoded(encoded(pixels, palette=DIVERGING, level=level))
    assert indexed.mode == "P" and np.array_equal(np.asarray(indexed), pixels)
    assert np.array_equal(np.asarray(indexed.getpalette(), np.uint8).reshape(-1, 3)[:256], DIVERGING)


@settings(max_examples=40, deadline=None)
@given(pixels_rgb, st.sampled_from([0, 1, 3, 6]))
def test_rgb_and_rgba_round_trip(pixels, level):
    """RGB and RGBA pixels decode unchanged."""
    image = decoded(encoded(pixels, level=level))
    assert image.mode == ("RGB" if pixels.shape[2] == 3 else "RGBA")
    assert np.array_equal(np.asarray(image), pixels)


def test_text_latin1_and_beyond():
    """Text chunks come back as written, Latin-1 as tEXt and other text as iTXt."""
    text = {"cnnx:low": "-0.25", "name": "café", "label": "edge → 45°"}
    data = encoded(np.zeros((3, 3), np.uint8), text=text)
    assert decoded(data).info == text
    kinds = [kind for kind, _ in chunks(data)]
    assert kinds.count(b"tEXt") == 2 and kinds.count(b"iTXt") == 1


def test_large_image_spans_several_idat_chunks():
    """An image larger than one compressed chunk is split over IDATs and still decodes exactly."""
    pixels = np.random.default_rng(3).integers(0, 256, (1500, 1200), dtype=np.uint8)
    data = encoded(pixels)
    assert sum(kind == b"IDAT" for kind, _ in chunks(data)) >= 2
    assert np.array_equal(np.asarray(decoded(data)), pixels)


def test_filter_follows_the_picture():
    """A smooth ramp is stored as Up differences, a map of long runs as it is."""
    ramp = np.add.outer(np.arange(256), np.arange(256)).astype(np.uint8) // 2
    noise = np.random.default_rng(1).integers(0, 4, (256, 256), dtype=np.uint8)
    assert filter_bytes(encoded(ramp + noise), 256) == {2}
    runs = np.repeat(np.random.default_rng(2).integers(0, 256, (256, 8), dtype=np.uint8), 32, axis=1)
    runs[1::2] = 127
    assert filter_bytes(encoded(runs), 256) == {0}


def test_level_zero_stores():
    """Level 0 stores the bytes: the file is at least as large as the pixels."""
    pixels = np.zeros((64, 64), np.uint8)
    assert len(encoded(pixels, level=0)) > pixels.size > len(encoded(pixels, level=1))


def test_zlib_alone_writes_the_same_pixels(monkeypatch):
    """Where ISA-L is not installed, zlib writes every level and the pixels are the same."""
    pixels = np.random.default_rng(4).integers(0, 9, (200, 130), dtype=np.uint8)
    monkeypatch.setattr(png, "isal_zlib", None)
    for level in (1, 3, 9):
        assert np.array_equal(np.asarray(decoded(encoded(pixels, palette=DIVERGING, level=level))), pixels)


@pytest.mark.parametrize(
    "pixels, options, message",
    [
        (np.zeros((2, 2), np.float32), {}, "uint8"),
        (np.zeros((0, 2), np.uint8), {}, "non-empty"),
        (np.zeros((2, 2, 2), np.uint8), {}, "1, 3 or 4 samples"),
        (np.zeros((2, 2, 3), np.uint8), {"palette": DIVERGING}, "1 with a palette"),
        (np.zeros((2, 2), np.uint8), {"palette": np.zeros((300, 3), np.uint8)}, "palette"),
        (np.zeros((2, 2), np.uint8), {"level": 10}, "level"),
        (np.zeros((2, 2), np.uint8), {"text": {"": "x"}}, "keyword"),
    ],
)
def test_bad_arguments(pixels, options, message):
    """Wrong pixels, palettes, levels and keywords are refused, naming what is wrong, before anything is written."""
    stream = io.BytesIO()
    with pytest.raises(ValueError, match=message):
        png.encode_png(stream, pixels, **options)
    assert stream.getvalue() == b""


def test_write_png_is_atomic(tmp_path, monkeypatch):
    """A failed write leaves neither the file nor a temporary behind."""
    target = tmp_path / "map.png"

    def broken(stream, *args, **kwargs):
        stream.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(png, "encode_png", broken)
    with pytest.raises(OSError):
        png.write_png(target, np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []
