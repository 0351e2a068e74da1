"""The FFCV engine: ``(views, targets, keys)`` batches from a ``.beton``, all views in one pass.

FFCV (https://github.com/libffcv/ffcv) reads the file through the OS page cache and runs a
numba-compiled pipeline on a pool of threads. This engine compiles the ViewSpecs of every
view into one such pipeline (:mod:`fastssl.data.engines.ffcv_ops`):

* **One pass per image.** A single FFCV decoder reads each image once per epoch, decodes a
  JPEG once (at the largest DCT reduction, 1/2, 1/4 or 1/8, that keeps every view's crop at
  least as large as its output, as the torch engine's draft decode), and makes all of its
  views from that decode: global and local crops of different sizes (DINO, SwaV, MSN
  multi-crop) come out of the same pass.
* **Every ViewSpec operation, numba-compiled** (:mod:`fastssl.data.engines.ffcv_kernels`):
  random resized crop (only the crop's region is resampled, with torchvision's antialiased
  ``nearest`` / ``bilinear`` / ``bicubic`` filters), horizontal and vertical flips,
  rotation, color jitter (brightness, contrast, saturation, hue in each sample's random
  order, as torchvision), grayscale, Gaussian blur, solarization and normalization to
  float32, float16 or bfloat16.
* **Seeded per sample and epoch.** Every random parameter is drawn in Python, before the
  batch runs, by :func:`~fastssl.transforms.view_params.draw_view_params` (the torchvision
  engine's distributions) from a ``random.Random`` seeded with ``(seed, epoch, sample
  index)``, as the batched torch engine seeds with its sample keys: the same seed gives the
  same batches whatever the number of threads, ranks or earlier epochs.
* **Exactly once per epoch.** The epoch's order is ``torch.randperm`` seeded with
  ``seed + epoch`` (``DistributedSampler``'s), split between ranks as ``DistributedSampler``
  splits it (``order[rank::world_size]``); each rank's threads share one loader, so every
  sample is read once per epoch on one rank (with ``drop_last``, the ``N % world_size``
  samples past the even split and the last incomplete batch of each rank are left out).

Batches are ``(views, targets, keys)`` like the torch and DALI engines: ``views`` a list
of (B, 3, h, w) tensors, ``targets`` a (B,) int64 tensor (-1 when the file has no
``label`` field), ``keys`` the samples' positions in the file (``fastssl shards`` keys).
A batch's tensors are never reused while the caller holds them.

Example:
    >>> from fastssl.transforms import SimCLRTransform
    >>> specs = SimCLRTransform(input_size=64).view_specs
    >>> views = FFCVViews("beton/", specs, batch_size=32)  # doctest: +SKIP
    >>> for (view0, view1), targets, keys in views: ...  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import threading
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from fastssl.data.engines.base import Batch
from fastssl.data.engines.ffcv_kernels import COL, INTERPOLATIONS, NUM_COLUMNS
from fastssl.transforms.gaussian_blur import kernel_size_for_sigma
from fastssl.transforms.view_params import ViewParams, draw_view_params
from fastssl.transforms.view_spec import ViewSpec

#: Batches FFCV prepares ahead of the one being consumed.
BATCHES_AHEAD = 2
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def view_size(spec: ViewSpec, height: int, width: int) -> tuple[int, int]:
    """The (height, width) of ``spec``'s view of an image of ``height`` x ``width``.

    >>> view_size(ViewSpec(crop_size=(24, 32)), 100, 80)
    (24, 32)
    >>> view_size(ViewSpec(crop_size=None), 100, 80)
    (100, 80)
    """
    size = spec.crop_size
    if size is None:
        return height, width
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def encode_params(
    spec: ViewSpec, params: ViewParams, reduction: int, size: tuple[int, int]
) -> list[float]:
    """The parameter row (:data:`~fastssl.data.engines.ffcv_kernels.COLUMNS`) of one view.

    Args:
        spec: The view's ViewSpec (filter, blur kernel size, solarization threshold).
        params: The view's draws.
        reduction: The DCT reduction the image is decoded at (1 for stored raw pixels).
        size: The view's (height, width).

    Returns:
        ``NUM_COLUMNS`` floats.

    >>> row = encode_params(ViewSpec(crop_size=8), ViewParams(1, 2, 3, 4, hflip=True), 1, (8, 8))
    >>> row[:5]
    [1.0, 2.0, 3.0, 4.0, 1.0]
    """
    row = [0.0] * NUM_COLUMNS
    row[COL["top"]], row[COL["left"]] = float(params.top), float(params.left)
    row[COL["height"]], row[COL["width"]] = float(params.height), float(params.width)
    row[COL["hflip"]], row[COL["vflip"]] = float(params.hflip), float(params.vflip)
    if params.rotation is not None:
        row[COL["rotate"]], row[COL["angle"]] = 1.0, float(params.rotation)
    order = params.jitter or ()
    row[COL["jitter_count"]] = float(len(order))
    for k, op in enumerate(order):
        row[COL["order0"] + k] = float(op)
    row[COL["brightness"]], row[COL["contrast"]] = params.brightness, params.contrast
    row[COL["saturation"]], row[COL["hue"]] = params.saturation, params.hue
    row[COL["gray"]] = float(params.gray)
    if params.blur_sigma is not None:
        height, width = size
        largest = kernel_size_for_sigma(1e9, height, width)
        fixed = spec.blur_kernel_size
        kernel = (
            kernel_size_for_sigma(params.blur_sigma, height, width)
            if fixed is None
            else min(fixed, largest)
        )
        row[COL["sigma"]], row[COL["kernel_size"]] = params.blur_sigma, float(kernel)
    row[COL["solarize"]] = float(params.solarize)
    row[COL["threshold"]] = float(spec.solarize_threshold)
    row[COL["interpolation"]] = float(INTERPOLATIONS[spec.interpolation])
    row[COL["scale"]] = float(reduction)
    return row


def draft_reduction(sizes: Sequence[tuple[int, int]], params: Sequence[ViewParams]) -> int:
    """The largest JPEG DCT reduction (8, 4, 2, else 1) keeping every crop >= its output.

    >>> draft_reduction([(100, 100)], [ViewParams(0, 0, 450, 400)])
    4
    """
    for reduction in (8, 4, 2):
        if all(
            p.height >= reduction * h and p.width >= reduction * w
            for (h, w), p in zip(sizes, params, strict=True)
        ):
            return reduction
    return 1


def epoch_order(
    num_samples: int,
    epoch: int,
    *,
    seed: int,
    shuffle: bool,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> np.ndarray:
    """The samples rank ``rank`` reads in ``epoch``, as ``DistributedSampler`` orders them.

    ``torch.randperm(num_samples)`` seeded with ``seed + epoch`` (or the file's order), cut
    to a multiple of ``world_size`` with ``drop_last`` (no sample is repeated to pad), then
    every ``world_size``-th sample from ``rank``.

    >>> epoch_order(5, 0, seed=0, shuffle=False, rank=1, world_size=2, drop_last=True).tolist()
    [1, 3]
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(num_samples, generator=generator).numpy()
    else:
        order = np.arange(num_samples)
    if drop_last:
        order = order[: (num_samples // world_size) * world_size]
    return np.ascontiguousarray(order[rank::world_size]).astype(np.uint64)


class FFCVViews:
    """``(views, targets, keys)`` batches of a ``.beton``: one FFCV loader, all views per pass.

    Args:
        source: ``.beton`` file or a ``fastssl shards --format ffcv`` folder (fields ``image``,
            an ``RGBImageField``, and optionally ``label``, an ``IntField``).
        specs: One ViewSpec per view (any ViewSpec; ``crop_size=None`` needs every image of
            the file at one size).
        batch_size: Samples per batch.
        num_workers: FFCV threads (at most numba's thread count, the usable cores).
        shuffle: Random order (``seed + epoch``) or the file's order.
        drop_last: Drop the last incomplete batch (and the samples past an even split).
        seed: Seed of the order and of every augmentation.
        rank: This process's rank.
        world_size: Number of processes.
        dtype: float32, float16 or bfloat16 views.

    Raises:
        ValueError: For an empty ``specs``, a bad argument or a file without an ``image``
            field, naming what to change.
        ImportError: When FFCV is not installed.

    Attributes:
        num_unreadable: Images whose JPEG failed to decode (black views instead), so far.

    Example:
        >>> specs = [ViewSpec(crop_size=224)] * 2 + [ViewSpec(crop_size=96)] * 6  # multi-crop
        >>> views = FFCVViews("beton/", specs, batch_size=64, num_workers=8)  # doctest: +SKIP
        >>> views.set_epoch(3)  # doctest: +SKIP
        >>> crops, targets, keys = next(iter(views))  # doctest: +SKIP
        >>> [tuple(c.shape) for c in crops[1:3]]  # doctest: +SKIP
        [(64, 3, 224, 224), (64, 3, 96, 96)]
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        specs: Sequence[ViewSpec],
        *,
        batch_size: int,
        num_workers: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        specs = list(specs)
        if not specs:
            raise ValueError("specs is empty: the FFCV engine needs at least one ViewSpec")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype} is not supported: use float32, float16 or bfloat16")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        from fastssl.data.ffcv_source import _import_ffcv, beton_path

        _import_ffcv()
        import numba
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.rgb_image import IMAGE_MODES, RGBImageField
        from ffcv.loader import Loader as FFCVLoader
        from ffcv.loader import OrderOption
        from ffcv.pipeline import PipelineSpec
        from ffcv.reader import Reader

        from fastssl.data.engines.ffcv_ops import (
            TargetsToTensor,
            TensorPool,
            ViewsDecoder,
            ViewsToTensors,
        )

        path = beton_path(source)
        reader = Reader(path)
        fields = dict(reader.handlers)
        if not isinstance(fields.get("image"), RGBImageField):
            raise ValueError(
                f"{path}: the FFCV engine reads an RGBImageField named 'image' (as written by "
                f"`fastssl shards --format ffcv`), but the file has fields {sorted(fields)}"
            )
        names = list(fields)
        image_meta = reader.metadata[f"f{names.index('image')}"]
        self._heights = np.asarray(image_meta["height"], dtype=np.int64)
        self._widths = np.asarray(image_meta["width"], dtype=np.int64)
        self._jpeg = np.asarray(image_meta["mode"]) == IMAGE_MODES["jpg"]
        self.num_samples = int(reader.num_samples)
        self.sizes = [self._size(index, spec) for index, spec in enumerate(specs)]
        self.specs = specs
        self.batch_size, self.drop_last, self.shuffle = batch_size, drop_last, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.num_unreadable = 0
        self._warned = False
        self._count_lock = threading.Lock()
        cores = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        self.threads = max(1, min(int(num_workers), cores))
        self._decoder = ViewsDecoder(self.sizes)
        pool = TensorPool(keep=len(specs) * (BATCHES_AHEAD + 4))
        normalizations = [
            None
            if spec.normalize_mean is None or spec.normalize_std is None
            else (spec.normalize_mean, spec.normalize_std)
            for spec in specs
        ]
        pipelines: dict[str, Any] = {name: None for name in names}
        pipelines["image"] = PipelineSpec(
            "image", decoder=self._decoder, transforms=[ViewsToTensors(normalizations, dtype, pool)]
        )
        self._has_labels = "label" in fields
        if self._has_labels:
            pipelines["label"] = [IntDecoder(), TargetsToTensor()]
        threads = torch.get_num_threads()  # FFCV sets torch's thread count to its own
        try:
            self._loader = FFCVLoader(
                path,
                batch_size=batch_size,
                num_workers=self.threads,
                order=OrderOption.SEQUENTIAL,
                drop_last=drop_last,
                batches_ahead=BATCHES_AHEAD,
                pipelines=pipelines,
            )
        finally:
            torch.set_num_threads(threads)
        outputs = list(self._loader.pipeline_specs)
        self._view_output = outputs.index("image")
        self._label_output = outputs.index("label") if self._has_labels else -1
        self._decoder_node = self._loader.graph.operation_to_node[self._decoder][0].id

    def _size(self, index: int, spec: ViewSpec) -> tuple[int, int]:
        if spec.crop_size is not None or self.num_samples == 0:
            return view_size(spec, 1, 1)
        heights, widths = set(self._heights.tolist()), set(self._widths.tolist())
        if len(heights) > 1 or len(widths) > 1:
            raise ValueError(
                f"view {index}: ViewSpec field crop_size=None keeps each image's size, but the "
                f".beton's images range from {min(heights)}x{min(widths)} to "
                f"{max(heights)}x{max(widths)} (height x width) and a batch needs one size: "
                f"set a crop_size"
            )
        return view_size(spec, int(self._heights[0]), int(self._widths[0]))

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch: its order and augmentations come from ``(seed, epoch)``."""
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        return epoch_order(
            self.num_samples, self.epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size, drop_last=self.drop_last,
        )  # fmt: skip

    def __len__(self) -> int:
        """Batches per epoch on this rank (the length of :func:`epoch_order`, in batches)."""
        if self.drop_last:
            return (self.num_samples // self.world_size) // self.batch_size
        count = len(range(self.rank, self.num_samples, self.world_size))
        return -(-count // self.batch_size)

    def draw(self, epoch: int, index: int) -> tuple[int, list[ViewParams]]:
        """The DCT reduction and the views' draws of sample ``index`` in ``epoch``.

        Seeded with ``(seed, epoch, index)`` only, so a sample's views do not depend on the
        batch, rank or thread that makes them.
        """
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        height, width = int(self._heights[index]), int(self._widths[index])
        params = [draw_view_params(spec, width, height, rng) for spec in self.specs]
        reduction = draft_reduction(self.sizes, params) if self._jpeg[index] else 1
        return reduction, params

    def _fill(self, epoch: int, indices: Any, rows: Any) -> None:
        table = []
        for index in indices.tolist():
            reduction, params = self.draw(epoch, int(index))
            table.append(
                [
                    encode_params(spec, p, reduction, size)
                    for spec, p, size in zip(self.specs, params, self.sizes, strict=True)
                ]
            )
        rows[...] = np.asarray(table, dtype=np.float64)

    def _check(self, indices: Any, rows: Any) -> None:
        failed = np.flatnonzero(rows[:, 0, COL["status"]] != 0)
        if not len(failed):
            return
        from fastssl.data.shards import key

        with self._count_lock:
            self.num_unreadable += len(failed)
            first = not self._warned
            self._warned = True
        if first:
            warnings.warn(
                f"the JPEG of sample {key(int(indices[failed[0]]))} of the .beton failed to "
                f"decode; its views are black (Loader.num_unreadable counts such samples)",
                stacklevel=2,
            )

    def __iter__(self) -> Iterator[Batch]:
        from fastssl.data.engines.ffcv_ops import SeededEpoch
        from fastssl.data.shards import key

        order = self._order()
        if self.drop_last:
            order = order[: (len(order) // self.batch_size) * self.batch_size]
        if not len(order):
            return
        epoch = SeededEpoch(
            self._loader,
            order,
            partial(self._fill, self.epoch),
            self._decoder_node,
            self.threads,
            check=self._check,
        )
        try:
            for number, outputs in enumerate(epoch):
                chosen = order[number * self.batch_size : (number + 1) * self.batch_size]
                views = outputs[self._view_output]
                if self._has_labels:
                    targets = outputs[self._label_output]
                else:
                    targets = torch.full((len(chosen),), -1, dtype=torch.long)
                yield views, targets, [key(int(i)) for i in chosen]
        finally:
            epoch.close()
