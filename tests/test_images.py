"""Loading images into arrays and drawing feature maps as pixels."""

import numpy as np
import pytest
from PIL import Image

from cnnx.base.errors import CnnxError
from cnnx.io.images import load_image


def save(tmp_path, image, name="image.png", **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_gray_png_loads_scaled_to_unit_range(tmp_path):
    """An 8-bit grey PNG loads as (1, H, W) float32 with 255 -> 1.0."""
    pixels = np.array([[0, 51], [204, 255]], np.uint8)
    source = load_image(save(tmp_path, Image.fromarray(pixels)))
    assert source.array.shape == (1, 2, 2) and source.array.dtype == np.float32
    np.testing.assert_allclose(source.array[0], pixels / 255, rtol=1e-6)


def test_rgb_loads_as_luma_or_three_channels(tmp_path):
    """RGB loads as BT.601 luma by default and as (3, H, W) with color=True."""
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    path = save(tmp_path, Image.fromarray(pixels))
    np.testing.assert_allclose(load_image(path).array[0, 0], [0.299, 0.587, 0.114], rtol=1e-6)
    np.testing.assert_allclose(load_image(path, color=True).array[:, 0, :], np.eye(3), rtol=1e-6)


def test_sixteen_bit_keeps_its_range(tmp_path):
    """A 16-bit grey PNG is scaled by 65535, keeping values an 8-bit load would merge."""
    pixels = np.array([[0, 1, 2, 65535]], np.uint16)
    source = load_image(save(tmp_path, Image.fromarray(pixels)))
    np.testing.assert_allclose(source.array[0, 0], pixels[0] / 65535, rtol=1e-6)
    assert source.array[0, 0, 1] != source.array[0, 0, 2]


def test_alpha_is_composited_over_white(tmp_path):
    """Transparent pixels become white, half-transparent black becomes mid grey."""
    pixels = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128]]], np.uint8)
    source = load_image(save(tmp_path, Image.fromarray(pixels, "RGBA")))
    np.testing.assert_allclose(source.array[0, 0], [1, 0, 1 - 128 / 255], rtol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG whose EXIF says 'rotate 90' loads upright: 20 wide x 10 high becomes 10 wide x 20 high."""
    image = Image.new("L", (20, 10), 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = save(tmp_path, image, "photo.jpg", exif=exif)
    assert load_image(path).array.shape == (1, 20, 10)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "notes.png").write_text("hello") and p / "notes.png", "not an image file Pillow can read"),
        (lambda p: (p / "empty.png").write_bytes(b"") or p / "empty.png", "not an image file Pillow can read"),
    ],
)
def test_unreadable_files_are_clear_errors(tmp_path, make, message):
    """Missing paths, folders and non-images raise CnnxError naming the file."""
    path = make(tmp_path)
    with pytest.raises(CnnxError, match=message) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_truncated_png_is_a_clear_error(tmp_path):
    """A PNG cut off half-way is refused as truncated or corrupt."""
    path = save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CnnxError, match="truncated or corrupt"):
        load_image(path)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    """An image over max_pixels is refused with its size and the option that raises the limit."""
    path = save(tmp_path, Image.new("L", (100, 100)))
    with pytest.raises(CnnxError, match=r"larger than the limit of 5,000 pixels \(100x100\); raise --max-pixels"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=10000).array.shape == (1, 100, 100)


@pytest.mark.parametrize("mode, name", [("L", "a.tif"), ("RGB", "a.bmp"), ("RGBA", "a.webp"), ("P", "a.gif")])
def test_decoded_once_before_the_bands_are_shared_out(tmp_path, monkeypatch, mode, name):
    """A lazily opened image is decoded once, on one thread, and the bands cut from it on two threads are right."""
    from PIL import ImageFile

    from cnnx.compute import ops

    rng = np.random.default_rng(8)
    pixels = rng.integers(0, 256, (700, 300, 4), np.uint8)
    options = {"lossless": True} if name.endswith(".webp") else {}
    path = save(tmp_path, Image.fromarray(pixels, "RGBA").convert(mode), name, **options)
    decodes = []
    real_load = ImageFile.ImageFile.load

    def counted(image):
        if image.tile:  # a load that will decode
            decodes.append(image)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    ops.set_num_threads(2)
    try:
        got = load_image(path, color=True).array
    finally:
        ops.set_num_threads(None)
    assert len(decodes) == 1
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"), np.float64) / 255
    want = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])  # over white
    np.testing.assert_allclose(got, np.moveaxis(want, 2, 0), atol=1e-6)


def test_luma_bits_do_not_depend_on_where_a_pixel_lies(tmp_path):
    """Every pixel's luma is the same float32, to the bit, whatever the image's width or the pixel's place in it."""
    colours = np.random.default_rng(9).integers(0, 256, (1, 997, 3), np.uint8)
    chunk = colours[0].astype(np.float32) / np.float32(255)
    luma = chunk[:, 0] * np.float32(0.299)
    luma += chunk[:, 1] * np.float32(0.587)
    luma += chunk[:, 2] * np.float32(0.114)
    want = dict(zip(map(bytes, colours[0]), np.minimum(luma, 1), strict=True))
    for width in (1, 3, 8, 61, 997):
        rows = colours[0, : (997 // width) * width].reshape(-1, width, 3)
        got = load_image(save(tmp_path, Image.fromarray(rows), f"w{width}.png")).array[0]
        assert all(got[r, c] == want[bytes(rows[r, c])] for r in range(len(rows)) for c in range(width))
