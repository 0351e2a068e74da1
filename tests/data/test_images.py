"""Tests of fastssl.data.images: EXIF orientation, 16-bit scaling, laziness, one extension list."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fastssl.data import dataset, images, shards, webdataset_source


def quadrants(width: int = 40, height: int = 20) -> np.ndarray:
    """An RGB array whose four quadrants have distinct colours, so turns are visible."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = (255, 0, 0)
    array[: height // 2, width // 2 :] = (0, 255, 0)
    array[height // 2 :, : width // 2] = (0, 0, 255)
    array[height // 2 :, width // 2 :] = (255, 255, 0)
    return array


def rotated_jpeg(orientation: int, width: int = 40, height: int = 20) -> bytes:
    """A JPEG of :func:`quadrants` stored as is, with an EXIF ``orientation`` tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(quadrants(width, height)).save(out, format="JPEG", quality=95, exif=exif)
    return out.getvalue()


def upright(orientation: int, width: int = 40, height: int = 20) -> np.ndarray:
    """What a viewer shows for :func:`rotated_jpeg` (the reference transpose)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    image = Image.fromarray(quadrants(width, height))
    return np.asarray(image if method is None else image.transpose(method))


def quadrant_colours(array: np.ndarray) -> list[tuple[int, ...]]:
    """The colour at the centre of each quadrant, rounded to 0 or 255 (JPEG noise aside)."""
    height, width = array.shape[:2]
    points = [(height // 4, width // 4), (height // 4, 3 * width // 4)]
    points += [(3 * height // 4, width // 4), (3 * height // 4, 3 * width // 4)]
    return [tuple(int(v > 127) * 255 for v in array[y, x]) for y, x in points]


def png16(values: np.ndarray, mode: str = "I;16") -> bytes:
    """A 16-bit grayscale PNG (``I;16``) or TIFF (``I;16B``, ``I``) of ``values``."""
    out = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(values.astype(np.uint16)).save(out, format="PNG")
    elif mode == "I;16B":
        Image.fromarray(values.astype(">u2")).save(out, format="TIFF")
    else:
        Image.fromarray(values.astype(np.int32)).save(out, format="TIFF")
    return out.getvalue()


GRADIENT = (np.arange(32 * 32, dtype=np.uint32) * 64).reshape(32, 32)  # 0 .. 65472


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    image = images.decode_rgb(Image.open(io.BytesIO(rotated_jpeg(orientation))))
    expected = upright(orientation)
    assert image.size == (expected.shape[1], expected.shape[0])
    assert quadrant_colours(np.asarray(image)) == quadrant_colours(expected)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_is_scaled_not_clipped(mode: str) -> None:
    opened = Image.open(io.BytesIO(png16(GRADIENT, mode)))
    assert opened.mode == mode
    rgb = np.asarray(images.decode_rgb(opened))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], GRADIENT >> 8)
    assert (rgb == 255).mean() < 0.01


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (257, 1), (257 * 200, 200), (65535, 255)])
def test_16bit_extremes(value: int, expected: int) -> None:
    assert images.to_8bit(Image.new("I;16", (2, 2), value)).getpixel((0, 0)) == expected


def test_mode_i_out_of_range_is_clipped_to_16_bits() -> None:
    array = np.array([[-5, 70000]], dtype=np.int32)
    assert np.asarray(images.to_8bit(Image.fromarray(array))).tolist() == [[0, 255]]


def test_upright_8bit_jpeg_stays_undecoded() -> None:
    opened = images.open_bytes(rotated_jpeg(1, 64, 64))
    assert opened.format == "JPEG"  # the lazily opened file itself: draft() still works
    assert opened.draft("RGB", (16, 16)) is not None
    turned = images.open_bytes(rotated_jpeg(6))
    assert turned.size == (20, 40)


def test_one_extension_list() -> None:
    assert webdataset_source.IMAGE_EXTENSIONS is images.IMAGE_EXTENSIONS
    assert tuple(f".{e}" for e in images.IMAGE_EXTENSIONS) == dataset.IMG_EXTENSIONS
    # Every member extension the shard writer produces is one the readers look for.
    assert set(shards._FORMAT_EXT.values()) <= set(images.IMAGE_EXTENSIONS)
    assert "gif" in images.IMAGE_EXTENSIONS


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's own warning
def test_malformed_exif_is_ignored_and_corrupt_png_raises() -> None:
    out = io.BytesIO()
    Image.fromarray(quadrants()).save(out, format="JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    image = images.decode_rgb(Image.open(io.BytesIO(out.getvalue())))
    assert image.size == (40, 20)
    png = io.BytesIO()
    Image.fromarray(quadrants()).save(png, format="PNG")
    broken = bytearray(png.getvalue())
    broken[60:80] = bytes(20)  # inside the compressed pixels: the CRC check fails
    with pytest.raises(images.DECODE_ERRORS):
        images.decode_rgb(Image.open(io.BytesIO(bytes(broken))))
