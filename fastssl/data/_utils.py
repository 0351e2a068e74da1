"""Finding the unreadable images of a folder (LightlySSL's ``lightly.data._utils``).

Example:
    >>> healthy, corrupt = check_images("path/to/images")  # doctest: +SKIP
    >>> print(f"Found {len(corrupt)} corrupt images")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from tqdm.contrib.concurrent import thread_map

from fastssl.data import images
from fastssl.data.dataset import LightlyDataset


def _is_readable(path: str) -> bool:
    """Whether fastssl can decode the image file (as every reader does, see
    :func:`fastssl.data.images.load_rgb`)."""
    try:
        images.load_rgb(path)
    except images.DECODE_ERRORS:
        return False
    return True


def check_images(data_dir: str) -> tuple[list[str], list[str]]:
    """Splits the images of a folder into readable and corrupt ones.

    Every image that :class:`~fastssl.data.LightlyDataset` lists in ``data_dir`` (flat, or
    one subfolder per class) is fully decoded, in parallel threads with a progress bar.

    Args:
        data_dir: The image folder.

    Returns:
        ``(healthy, corrupt)``: filenames relative to ``data_dir``, in dataset order.

    Raises:
        ValueError: If ``data_dir`` does not exist.
        RuntimeError: If it holds no image file.
    """
    filenames = LightlyDataset(input_dir=data_dir).get_filenames()
    paths = [os.path.join(data_dir, filename) for filename in filenames]
    readable = thread_map(_is_readable, paths, chunksize=max(1, min(32, len(paths))))
    healthy = [name for name, ok in zip(filenames, readable, strict=True) if ok]
    corrupt = [name for name, ok in zip(filenames, readable, strict=True) if not ok]
    return healthy, corrupt
