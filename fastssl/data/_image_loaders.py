"""Image loaders in torchvision's style (LightlySSL's ``lightly.data._image_loaders``).

:func:`pil_loader` reads a file as fastssl reads every image (:mod:`fastssl.data.images`):
fully decoded RGB, upright (EXIF orientation applied) and with 16-bit data scaled to 8 bits
instead of clipped. lightly 1.6 only converts to RGB; the two give the same pixels for
8-bit images without an EXIF orientation.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> path = tempfile.mktemp(suffix=".png")
    >>> Image.new("L", (4, 2)).save(path)
    >>> image = default_loader(path)
    >>> image.mode, image.size
    ('RGB', (4, 2))
"""

from __future__ import annotations

from typing import Any

import torchvision
from PIL import Image

from fastssl.data import images


def pil_loader(path: str) -> Image.Image:
    """Loads an image file with PIL as an upright 8-bit RGB image (file closed).

    Raises:
        OSError: If the file cannot be read or is not an image (as PIL raises it).
    """
    return images.load_rgb(path)


def accimage_loader(path: str) -> Any:
    """Loads an image with accimage (Intel IPP), falling back to :func:`pil_loader` when
    accimage cannot decode it.

    Returns:
        An ``accimage.Image``, or a PIL image after the fallback.

    Raises:
        ImportError: If accimage is not installed.
    """
    try:
        import accimage
    except ImportError as error:
        raise ImportError(
            "accimage_loader needs the accimage package (torchvision's 'accimage' image "
            "backend), which is not installed; use pil_loader instead"
        ) from error
    try:
        return accimage.Image(path)
    except OSError:  # a decoding problem: PIL may still read the file
        return pil_loader(path)


def default_loader(path: str) -> Any:
    """Loads an image with the backend of ``torchvision.get_image_backend()``: accimage
    when selected, PIL otherwise."""
    if torchvision.get_image_backend() == "accimage":
        return accimage_loader(path)
    return pil_loader(path)
