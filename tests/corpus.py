"""A corpus of odd and broken image files, made on the fly (no committed binaries).

``valid(folder)`` writes files cnnx must read, with what each should load as;
``broken(folder)`` writes files it must refuse, with words the message must hold.
"""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GRADIENT = np.tile(np.linspace(0, 255, 48).round().astype(np.uint8), (32, 1))  # 32 rows x 48 columns, dark to light


def _save(folder: Path, name: str, image: Image.Image, **options) -> Path:
    path = folder / name
    image.save(path, **options)
    return path


def valid(folder: Path) -> dict[str, tuple[Path, tuple[int, int]]]:
    """name -> (file, (height, width) it must load as)."""
    gray = Image.fromarray(GRADIENT)
    rgb = Image.merge("RGB", [gray, gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gray])
    files = {
        "mode 1": _save(folder, "one.png", gray.convert("1")),
        "mode L": _save(folder, "gray.png", gray),
        "mode LA": _save(folder, "gray-alpha.png", Image.merge("LA", [gray, gray])),
        "mode P": _save(folder, "palette.png", rgb.convert("P")),
        "mode P with transparency": _save(folder, "palette-clear.png", _palette_image(), transparency=0),
        "mode RGB": _save(folder, "rgb.png", rgb),
        "mode RGBA": _save(folder, "rgba.png", Image.merge("RGBA", [*rgb.split(), gray])),
        "mode CMYK": _save(folder, "cmyk.jpg", rgb.convert("CMYK"), quality=95),
        "mode I;16": _save(folder, "sixteen.png", Image.fromarray(GRADIENT.astype(np.uint16) * 257)),
        "mode I": _save(folder, "int.tif", Image.fromarray(GRADIENT.astype(np.int32) * 100)),
        "mode F": _save(folder, "float.tif", Image.fromarray(GRADIENT.astype(np.float32) / 255)),
        "JPEG": _save(folder, "photo.jpg", rgb, quality=90),
        "GIF": _save(folder, "still.gif", rgb.convert("P")),
        "BMP": _save(folder, "bitmap.bmp", rgb),
        "TIFF": _save(folder, "scan.tiff", rgb),
        "WebP": _save(folder, "web.webp", rgb, lossless=True),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 48 wide x 32 high shows as 32 wide x 48 high
    files["EXIF-rotated JPEG"] = _save(folder, "phone.jpg", rgb, exif=exif)
    frames = [Image.fromarray(np.full((32, 48), v, np.uint8)).convert("P") for v in (0, 128, 255)]
    files["animated GIF"] = folder / "anim.gif"
    frames[0].save(files["animated GIF"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    shapes = {name: (32, 48) for name in files}
    shapes["EXIF-rotated JPEG"] = (48, 32)
    return {name: (path, shapes[name]) for name, path in files.items()}


def _palette_image() -> Image.Image:
    """Eight grey palette entries, index = gradient // 32: index 0 fills the first six columns."""
    image = Image.fromarray((GRADIENT // 32).astype(np.uint8), "P")
    image.putpalette([level for k in range(8) for level in (k * 36,) * 3])
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 40000) -> bytes:
    """A valid PNG header claiming side x side grey pixels, over a few KB of compressed zero rows."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(bytes((side + 1) * 64), 9)  # the first 64 rows; a decoder would want 40,000
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def broken(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error message must hold)."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise).save(png, format="PNG")
    jpeg = io.BytesIO()
    Image.fromarray(noise).save(jpeg, format="JPEG")
    bad_crc = bytearray(png.getvalue())
    bad_crc[29] ^= 0xFF  # inside the IHDR chunk's CRC
    contents = {
        "truncated PNG": ("cut.png", png.getvalue()[: len(png.getvalue()) // 2], "truncated or corrupt"),
        "truncated JPEG": ("cut.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated or corrupt"),
        "bad CRC": ("crc.png", bytes(bad_crc), "corrupt"),
        "zero bytes": ("empty.png", b"", "not an image file"),
        "random bytes": ("noise.png", np.random.default_rng(1).bytes(4096), "not an image file"),
        "text named .png": ("notes.png", b"these are my notes, not a picture\n", "not an image file"),
        "SVG": (
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            "not an image file",
        ),
        "PDF": ("paper.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "not an image file"),
        "decompression bomb": ("bomb.png", bomb_png(), "larger than the limit"),
    }
    files = {}
    for name, (file_name, data, words) in contents.items():
        (folder / file_name).write_bytes(data)
        files[name] = (folder / file_name, words)
    return files
