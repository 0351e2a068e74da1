"""Opening and decoding images: the one place every reader and the shard writer go through.

Folders (:mod:`fastssl.data.dataset`), shards (:mod:`fastssl.data.webdataset_source`) and
the shard writer (:mod:`fastssl.data.shards`) all open images here, so a file gives the same
pixels whichever way it is read:

* **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a photo taken
  sideways is delivered upright, with the width and height a viewer shows.
* **16-bit data** (modes ``I;16``, ``I;16B``, ... and ``I``, which Pillow gives 16-bit
  PNGs and TIFFs) is scaled to 8 bits (``value >> 8``, so 65535 becomes 255 and 257 * k
  becomes k) instead of Pillow's ``convert`` clipping every value above 255 to white.
  Mode ``I`` (32-bit integers) is read as 16-bit data: values are clipped to [0, 65535]
  first.

Opening stays lazy where it can: :func:`normalize` returns the image untouched (pixels not
decoded) when it is 8-bit and upright, so a decoder can still pick a reduced JPEG scale
(``Image.draft``). Only an image that needs turning or rescaling is decoded here.

:data:`IMAGE_EXTENSIONS` is the one list of image file extensions: the folder dataset
lists files with it, the shard reader finds a sample's image member with it, and every
member extension the shard writer produces is in it.

Example:
    >>> import io
    >>> from PIL import Image
    >>> data = io.BytesIO()
    >>> Image.new("I;16", (4, 2), 65535).save(data, format="PNG")
    >>> image = decode_rgb(open_bytes(data.getvalue()))
    >>> image.mode, image.size, image.getpixel((0, 0))
    ('RGB', (4, 2), (255, 255, 255))
"""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image, ImageOps

# Lower case, without the dot. torchvision's ImageFolder list plus gif (the shard writer
# keeps GIFs as .gif members) and pnm.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    "jpg",
    "jpeg",
    "png",
    "ppm",
    "pgm",
    "pnm",
    "bmp",
    "gif",
    "tif",
    "tiff",
    "webp",
)

# What Pillow raises on a broken file: OSError (truncated data, UnidentifiedImageError),
# SyntaxError and ValueError (malformed headers), DecompressionBombError (absurd sizes).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)
# What decoding the pixels of an opened image raises (truncated or corrupt data); narrower,
# so that a bug in a lazily decoding transform is not mistaken for a broken file.
PIXEL_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError)

_ORIENTATION = ExifTags.Base.Orientation


def orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 to 8; 1, upright, when absent or malformed).

    Reading it does not decode a JPEG, WebP or TIFF; a PNG is decoded first (its ``eXIf``
    chunk may follow the pixels).

    Raises:
        OSError, SyntaxError, ValueError: When a PNG's pixels are corrupt (see
            :data:`DECODE_ERRORS`); a malformed EXIF block alone is ignored.
    """
    if image.format == "PNG":
        image.load()  # here, so that its errors are raised, not taken for bad EXIF
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block (Pillow raises many types): the pixels count
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def is_16bit(image: Image.Image) -> bool:
    """Whether the image holds 16-bit (or 32-bit integer) values that need scaling."""
    return image.mode == "I" or image.mode.startswith("I;16")


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit (or mode ``I``) image scaled to an 8-bit ``L`` image by ``>> 8``.

    Other modes are returned unchanged.
    """
    if not is_16bit(image):
        return image
    values = np.asarray(image)
    if image.mode == "I":
        values = np.clip(values, 0, 65535)
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), mode="L")


def normalize(image: Image.Image) -> Image.Image:
    """The image upright and 8-bit: EXIF orientation applied, 16-bit data scaled.

    Returns ``image`` itself, not decoded, when neither applies, so lazy decoders keep
    their reduced-scale JPEG decoding; otherwise a decoded image (the original's EXIF
    orientation tag removed).

    Raises:
        OSError, SyntaxError, ValueError: As Pillow does for corrupt data (see
            :data:`DECODE_ERRORS`).
    """
    if orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    return to_8bit(image)


def open_bytes(data: bytes) -> Image.Image:
    """Opens encoded image bytes and :func:`normalize` s them (lazily where possible).

    Raises:
        PIL.UnidentifiedImageError: When the bytes are no image Pillow knows.
        OSError, SyntaxError, ValueError: For corrupt data (see :data:`DECODE_ERRORS`).
    """
    return normalize(Image.open(io.BytesIO(data)))


def decode_rgb(image: Image.Image) -> Image.Image:
    """The fully decoded RGB image of an opened image (normalized first).

    Raises:
        OSError, SyntaxError, ValueError: For corrupt data (see :data:`DECODE_ERRORS`).
    """
    return normalize(image).convert("RGB")  # convert() forces the full decode


def load_rgb(path: str) -> Image.Image:
    """Reads an image file as a fully decoded, upright, 8-bit RGB image (file closed).

    Raises:
        OSError: When the file cannot be read, or as :func:`decode_rgb`.
    """
    with open(path, "rb") as handle:
        return decode_rgb(Image.open(io.BytesIO(handle.read())))
