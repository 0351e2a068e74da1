"""Opens the FFCV ``.beton`` of ``fastssl shards --format ffcv`` with a plain decode pipeline.

The file holds two fields, ``image`` (``RGBImageField``) and ``label`` (``IntField``), in
the conversion's seeded sample order (see :mod:`fastssl.data.shards`). This helper
decodes without augmentation: batches are ``(images, labels)`` with images a uint8
tensor of shape (B, 3, H, W) and labels an int64 tensor of shape (B,). FFCV batches
need one image size: with ``resolution=None`` every stored image must already have the
same size (FFCV's ``SimpleRGBImageDecoder``); with ``resolution=R`` each image is
center-cropped (``crop_ratio`` of its shorter side) and resized to R x R.
The augmentation engine (:mod:`fastssl.data.engines.ffcv`) builds its pipelines on the same
file; :class:`BetonImages` reads the stored images as PIL images for transforms that run
per sample (those not built from ViewSpecs, which FFCV cannot compile).

FFCV is imported only when a loader is made; a missing FFCV gives an ImportError that
says how to install it.

Example:
    >>> from fastssl.data.ffcv_source import ffcv_loader
    >>> loader = ffcv_loader("shards/", batch_size=256, resolution=224)  # doctest: +SKIP
    >>> for images, labels in loader:  # (256, 3, 224, 224) uint8, (256,) int64  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image

from fastssl.data.manifest import FFCV_NAME, read_manifest


def _import_ffcv() -> Any:
    try:
        import ffcv
        import ffcv.fields.basics
        import ffcv.fields.rgb_image
        import ffcv.loader
        import ffcv.transforms
    except ImportError as error:
        raise ImportError(
            "reading .beton files needs FFCV: pip install 'fastssl[ffcv]' (it builds against "
            "the system libraries libopencv-dev and libturbojpeg); or convert with "
            "--format webdataset and use fastssl.data.webdataset_source"
        ) from error
    return ffcv


def beton_path(root: str | os.PathLike[str]) -> str:
    """The ``.beton`` file of a ``fastssl shards --format ffcv`` output (or a .beton path).

    Raises:
        FileNotFoundError: When there is no finished FFCV conversion there.
        ValueError: When the folder holds another format.
    """
    path = os.fspath(root)
    if os.path.isfile(path):
        return path
    found = read_manifest(path).get("format")
    if found != "ffcv":
        raise ValueError(f"{path!r} holds format {found!r}; ffcv_loader reads 'ffcv'")
    return os.path.join(path, FFCV_NAME)


def ffcv_loader(
    root: str | os.PathLike[str],
    batch_size: int,
    num_workers: int = 1,
    order: Literal["sequential", "random", "quasi_random"] = "sequential",
    seed: int = 0,
    resolution: int | None = None,
    crop_ratio: float = 224 / 256,
    drop_last: bool = False,
    distributed: bool = False,
    indices: Sequence[int] | None = None,
) -> Any:
    """An ``ffcv.loader.Loader`` over the file, decoding to uint8 (B, 3, H, W) and labels.

    Args:
        root: Output folder of the conversion, or the ``.beton`` path.
        batch_size: Samples per batch.
        num_workers: FFCV decoding threads.
        order: ``sequential`` (the file's order), ``random`` or ``quasi_random``.
        seed: Seed of the random orders.
        resolution: None to keep the stored size (all images must share it), or the
            side of a center crop resized to ``resolution`` x ``resolution``.
        crop_ratio: Fraction of the shorter side the center crop keeps.
        drop_last: Drop the last incomplete batch.
        distributed: Let FFCV split the samples over the torch.distributed ranks.
        indices: Read only these samples.

    Raises:
        ImportError: When FFCV is not installed.
        ValueError: When an argument is out of range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if order not in ("sequential", "random", "quasi_random"):
        raise ValueError(f"order={order!r}; use 'sequential', 'random' or 'quasi_random'")
    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution={resolution} must be a positive number of pixels")
    path = beton_path(root)
    ffcv = _import_ffcv()
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor, ToTorchImage

    decoder = (
        SimpleRGBImageDecoder()
        if resolution is None
        else CenterCropRGBImageDecoder((resolution, resolution), ratio=crop_ratio)
    )
    del ffcv
    return Loader(
        path,
        batch_size=batch_size,
        num_workers=num_workers,
        order=OrderOption[order.upper()],
        seed=seed,
        drop_last=drop_last,
        distributed=distributed,
        indices=None if indices is None else list(indices),
        pipelines={
            "image": [decoder, ToTensor(), ToTorchImage()],
            "label": [IntDecoder(), ToTensor(), Squeeze()],
        },
    )


class BetonImages:
    """The samples of a ``.beton`` as ``(transform(image), target, key)``, one at a time.

    A map-style dataset (for a torch ``DataLoader``): item ``i`` is the ``i``-th stored image
    as an RGB PIL image (JPEG bytes decoded by Pillow, raw pixels wrapped), passed through
    ``transform``; the target is the ``label`` field (-1 without one) and the key the
    sample's position (``fastssl shards`` keys). The file is memory-mapped lazily in each
    process, so the dataset pickles small.

    Args:
        root: ``.beton`` file or a ``fastssl shards --format ffcv`` folder.
        transform: Called on every image; None returns the image.

    Raises:
        ValueError: When the file has no ``image`` field (an ``RGBImageField``).

    Example:
        >>> images = BetonImages("beton/", transform=None)  # doctest: +SKIP
        >>> image, target, key = images[0]  # doctest: +SKIP
    """

    def __init__(
        self, root: str | os.PathLike[str], transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.path = beton_path(root)
        _import_ffcv()
        from ffcv.fields.rgb_image import IMAGE_MODES, RGBImageField
        from ffcv.reader import Reader

        reader = Reader(self.path)
        names = list(reader.handlers)
        if not isinstance(reader.handlers.get("image"), RGBImageField):
            raise ValueError(
                f"{self.path}: expected an RGBImageField named 'image' (as written by "
                f"`fastssl shards --format ffcv`), found fields {sorted(names)}"
            )
        image = reader.metadata[f"f{names.index('image')}"]
        self._pointers = np.array(image["data_ptr"], dtype=np.uint64)
        self._jpeg = np.array(image["mode"]) == IMAGE_MODES["jpg"]
        self._heights = np.array(image["height"], dtype=np.int64)
        self._widths = np.array(image["width"], dtype=np.int64)
        labels = reader.metadata[f"f{names.index('label')}"] if "label" in names else None
        self._labels = None if labels is None else np.array(labels, dtype=np.int64)
        table = reader.alloc_table
        order = np.argsort(table["ptr"])
        self._starts = np.array(table["ptr"][order], dtype=np.uint64)
        self._sizes = np.array(table["size"][order], dtype=np.uint64)
        self.transform = transform
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # each process maps the file itself
        return state

    def __len__(self) -> int:
        return len(self._pointers)

    def image(self, index: int) -> Image.Image:
        """The ``index``-th stored image, RGB."""
        if self._file is None:
            self._file = np.memmap(self.path, dtype=np.uint8, mode="r")
        start = self._pointers[index]
        size = self._sizes[np.searchsorted(self._starts, start)]
        data = self._file[int(start) : int(start + size)]
        if self._jpeg[index]:
            with Image.open(io.BytesIO(data.tobytes())) as opened:
                return opened.convert("RGB")
        shape = (int(self._heights[index]), int(self._widths[index]), 3)
        return Image.fromarray(np.array(data).reshape(shape), "RGB")

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        from fastssl.data.shards import key

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index %= len(self)
        image = self.image(index)
        sample = image if self.transform is None else self.transform(image)
        target = -1 if self._labels is None else int(self._labels[index])
        return sample, target, key(index)
