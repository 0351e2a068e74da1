"""The torch backend's fast engine: crop while decoding, then augment whole batches.

A ViewSpec's operations split in two stages (op order as in :mod:`fastssl.transforms.view_spec`):

1. **Per sample, in the DataLoader worker** (:class:`ViewDecoder`, the dataset's transform):
   every random parameter of every view is drawn first, the crop boxes in the coordinates
   of the undecoded image (the distribution of torchvision's ``RandomResizedCrop``). The
   JPEG is then decoded at the largest DCT reduction (``PIL.Image.draft``: 1/2, 1/4, 1/8)
   that keeps every crop at least as large as its output, and each view is cropped and
   resized (torchvision's uint8 ``resize``, antialiased), flipped and rotated: uint8 all
   the way, with the torchvision engine's own geometric kernels.
2. **Per batch, in the collate function** (:class:`BatchedViewCollate`, run inside the
   worker): color jitter (brightness, contrast, saturation, hue in each sample's random
   order), grayscale, Gaussian blur with each sample's sigma (kernel sized to it),
   solarization, scaling and normalization, each sample in a float32 workspace that stays
   in the CPU cache, written straight into the batch tensor (shared memory in a worker).
   The ops are numba kernels, one vectorized pass per op
   (:mod:`fastssl.transforms.batched_kernels`), when numba is installed, else torch ops
   (:mod:`fastssl.transforms.batched`); both compute torchvision's values.

Measured on 2 cores, SimCLR at 224 px (``benchmarks/loaders.py``), per image: decode 1.0
ms, crop + resize of two views 0.7 ms, both views' color and blur 0.6 ms with the numba
kernels (1.9 ms with the torch ops), against about 13 ms for lightly's per-sample PIL path.

Shared-memory reuse (:class:`BatchRecycler`, set up by ``make_loader``): a worker's batch
lives in shared memory, and fresh shared memory costs a page fault per 4 KiB page when
first written (a fifth of the engine's time for SimCLR at 224 px). The workers keep a few
batches' worth of shared memory and write into one again once the main process holds no
reference to any of its tensors (checked with weak references to their storages), so a
batch kept by the user is never overwritten.

Randomness: each sample's parameters come from a ``random.Random`` seeded with
``(seed, epoch, sample key)`` (:meth:`ViewDecoder.reseed`), so the same seed and epoch give
the same batches whatever the number of workers or the history of earlier epochs.

Transform protocol (honoured by :class:`~fastssl.data.dataset.LightlyDataset` and
:class:`~fastssl.data.webdataset_source.WebDatasetSource`): a transform whose
``decodes_lazily`` attribute is True receives the opened but not yet decoded PIL image
and decodes it itself; the datasets report a decode error as usual.

Example:
    >>> from torch.utils.data import DataLoader
    >>> from fastssl.data import LightlyDataset
    >>> from fastssl.transforms import SimCLRTransform
    >>> specs = SimCLRTransform(input_size=224).view_specs
    >>> dataset = LightlyDataset("images/", transform=ViewDecoder(specs))  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_size=64, num_workers=2,
    ...                     collate_fn=BatchedViewCollate(specs))  # doctest: +SKIP
    >>> for (view0, view1), targets, filenames in loader: ...  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import batched, batched_kernels
from fastssl.transforms.view_params import (
    BRIGHTNESS,
    CONTRAST,
    SATURATION,
    ViewParams,
    draw_view_params,
)
from fastssl.transforms.view_spec import ViewSpec

# DCT reductions libjpeg can decode at.
DRAFT_SCALES = (8, 4, 2)


def _output_size(spec: ViewSpec, params: ViewParams) -> tuple[int, int]:
    size = spec.crop_size
    if size is None:
        return params.height, params.width
    return (size, size) if isinstance(size, int) else size


def draft_scale(specs: Sequence[ViewSpec], params: Sequence[ViewParams]) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that keeps every crop >= its output.

    >>> spec = ViewSpec(crop_size=100)
    >>> draft_scale([spec], [ViewParams(0, 0, 450, 400)])
    4
    >>> draft_scale([spec], [ViewParams(0, 0, 150, 400)])
    1
    """
    for scale in DRAFT_SCALES:
        if all(
            p.height >= scale * out_h and p.width >= scale * out_w
            for spec, p in zip(specs, params, strict=True)
            for out_h, out_w in [_output_size(spec, p)]
        ):
            return scale
    return 1


class DecodedViews(NamedTuple):
    """What :class:`ViewDecoder` gives per sample: uint8 views and their remaining draws.

    Attributes:
        images: One (3, h, w) uint8 tensor per view: cropped, resized, flipped, rotated.
        params: The view's :class:`ViewParams` (the collate function applies the rest).
    """

    images: list[Tensor]
    params: list[ViewParams]


class ViewDecoder:
    """Per-sample stage: draws the views' parameters, decodes the crop, crops, flips, rotates.

    A dataset transform: call it with a PIL image (opened lazily, so that it can decode at a
    reduced DCT scale) or a (3, H, W) uint8 tensor. It returns :class:`DecodedViews`, which
    :class:`BatchedViewCollate` turns into a batch.

    Args:
        specs: One ViewSpec per view.

    Attributes:
        decodes_lazily: True: datasets hand over the undecoded image (see the module doc).

    >>> import torch
    >>> decoder = ViewDecoder([ViewSpec(crop_size=8), ViewSpec(crop_size=4)])
    >>> decoder.reseed(seed=0, epoch=0, key=7)
    >>> [tuple(v.shape) for v in decoder(torch.zeros(3, 20, 30, dtype=torch.uint8)).images]
    [(3, 8, 8), (3, 4, 4)]
    """

    decodes_lazily = True

    def __init__(self, specs: Sequence[ViewSpec]) -> None:
        if not specs:
            raise ValueError("ViewDecoder needs at least one ViewSpec")
        self.specs = list(specs)
        self._rng: random.Random | None = None
        self._rng_pid = -1

    def reseed(self, seed: int, epoch: int, key: int | str) -> None:
        """Seeds the next sample's draws with ``(seed, epoch, key)``."""
        self._rng = random.Random(f"{seed}/{epoch}/{key}")
        self._rng_pid = os.getpid()

    def _generator(self) -> random.Random:
        # Without reseed (a plain DataLoader), each process draws from its torch seed, which
        # the DataLoader sets differently in every worker.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = random.Random(torch.initial_seed())
            self._rng_pid = os.getpid()
        return self._rng

    def __call__(self, image: Image.Image | Tensor) -> DecodedViews:
        """Makes the uint8 views of one image.

        Args:
            image: PIL image (decoded or not) or (C, H, W) uint8 tensor.

        Returns:
            :class:`DecodedViews` with one uint8 view and its parameters per ViewSpec.
        """
        rng = self._generator()
        if isinstance(image, Tensor):
            height, width = image.shape[-2:]
            params = [draw_view_params(spec, width, height, rng) for spec in self.specs]
            return self._views(_as_rgb_chw(image), params, 1.0, 1.0)
        width, height = image.size
        params = [draw_view_params(spec, width, height, rng) for spec in self.specs]
        scale_x = scale_y = 1.0
        scale = draft_scale(self.specs, params)
        if scale > 1 and image.format == "JPEG":
            drafted = image.draft("RGB", (width // scale, height // scale))
            if drafted is not None:
                box = drafted[1]
                scale_x, scale_y = box[2] / width, box[3] / height
        if image.mode != "RGB":
            image = image.convert("RGB")
        base = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # CHW view of HWC memory
        return self._views(base, params, scale_x, scale_y)

    def _views(
        self, base: Tensor, params: list[ViewParams], scale_x: float, scale_y: float
    ) -> DecodedViews:
        height, width = base.shape[-2:]
        images = []
        for spec, p in zip(self.specs, params, strict=True):
            if scale_x == 1.0 and scale_y == 1.0:
                top, left, bottom, right = p.top, p.left, p.top + p.height, p.left + p.width
            else:  # the box in the pixels of the reduced decode
                top, bottom = round(p.top * scale_y), round((p.top + p.height) * scale_y)
                left, right = round(p.left * scale_x), round((p.left + p.width) * scale_x)
                top, left = min(top, height - 1), min(left, width - 1)
                bottom, right = max(min(bottom, height), top + 1), max(min(right, width), left + 1)
            view = base[:, top:bottom, left:right]
            if spec.crop_size is not None:
                view = F.resize(
                    view,
                    list(_output_size(spec, p)),
                    interpolation=InterpolationMode(spec.interpolation),
                    antialias=True,
                )
            if p.hflip:
                view = F.horizontal_flip(view)
            if p.vflip:
                view = F.vertical_flip(view)
            if p.rotation is not None:
                view = _rotate(view, p.rotation)
            images.append(view)
        return DecodedViews(images, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.specs})"


def _as_rgb_chw(image: Tensor) -> Tensor:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"ViewDecoder takes a PIL image or a (3, H, W) uint8 tensor, got a "
            f"{tuple(image.shape)} {image.dtype} tensor"
        )
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _rotate(view: Tensor, angle: float) -> Tensor:
    # The torchvision engine's rotations: RandomRotate (90 degrees: rot90 on square images)
    # and RandomRotation (nearest, same size, fill 0).
    if angle == 90.0 and view.shape[-1] == view.shape[-2]:
        return torch.rot90(view, k=1, dims=(-2, -1))
    return F.rotate(view, angle, interpolation=InterpolationMode.NEAREST)


# ------------------------------------------------------------------------ batch stage
_WORKER_PID = -1


def _prepare_worker() -> None:
    """Once per DataLoader worker: one intra-op thread, and a heap that keeps its memory.

    Two workers each running several intra-op threads oversubscribe the cores. The batched
    ops allocate many same-sized temporaries; glibc hands those above 128 KiB back to the
    system when freed, so that every new one page-faults fresh memory (several times slower
    than the op itself). Raising the mmap and trim thresholds keeps them in the heap.
    """
    global _WORKER_PID
    if os.getpid() == _WORKER_PID or get_worker_info() is None:
        return
    _WORKER_PID = os.getpid()
    torch.set_num_threads(1)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 256 << 20)


def _new_batch(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An empty tensor, in shared memory inside a worker (no copy on the way to the loop)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


class RecycledViews(list[Tensor]):
    """The views of a batch written into a :class:`BatchRecycler` slot (a plain list else)."""

    def __init__(self, views: list[Tensor], worker: int, slot: int) -> None:
        super().__init__(views)
        self.worker = worker
        self.slot = slot


class BatchRecycler:
    """Lets DataLoader workers reuse the shared memory of batches the main process dropped.

    Worker side (:meth:`acquire`, called by :class:`BatchedViewCollate`): a free slot of
    this worker, with its tensors (allocated in shared memory on first use, and again when
    the shapes change), marked in use. Main side (:meth:`track` for every batch received,
    :meth:`release_expired` before waiting for the next one): a slot becomes free again when
    every storage of its batch is gone from the main process (the user's references, views
    of the tensors included, keep it in use). With no free slot a worker allocates fresh
    shared memory, as without recycling.

    Args:
        workers: DataLoader workers.
        slots: Batches each worker can have in flight or held before it allocates afresh
            (the DataLoader's prefetch of 2, the batch in use, the one being released).
    """

    def __init__(self, workers: int, slots: int = 4) -> None:
        self.slots = slots
        # 1: in use (set by the worker before sending), 0: free (set by the main process).
        self.in_use = torch.zeros(max(workers, 1), slots, dtype=torch.int8).share_memory_()
        self._pool: dict[int, list[Tensor]] = {}  # worker side: slot -> its tensors
        self._pending: list[tuple[int, int, list[Any]]] = []  # main side

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"], state["_pending"] = {}, []
        return state

    def acquire(
        self, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype
    ) -> tuple[int, int, list[Tensor]] | None:
        """``(worker, slot, tensors)`` to write a batch into, or None (no worker, none free)."""
        info = get_worker_info()
        if info is None or info.id >= self.in_use.shape[0]:
            return None
        worker = info.id
        for slot in range(self.slots):
            if int(self.in_use[worker, slot]) != 0:
                continue
            tensors = self._pool.get(slot)
            if (
                tensors is None
                or [tuple(t.shape) for t in tensors] != list(shapes)
                or any(t.dtype != dtype for t in tensors)
            ):
                tensors = self._pool[slot] = [_new_batch(shape, dtype) for shape in shapes]
            self.in_use[worker, slot] = 1
            return worker, slot, tensors
        return None

    def track(self, views: Sequence[Tensor]) -> None:
        """Main process: remembers a received batch's slot until its storages are gone."""
        if isinstance(views, RecycledViews):
            from torch.multiprocessing.reductions import StorageWeakRef

            refs = [StorageWeakRef(view.untyped_storage()) for view in views]
            self._pending.append((views.worker, views.slot, refs))

    def release_expired(self) -> None:
        """Main process: frees the slots of batches no longer referenced anywhere here."""
        still = []
        for worker, slot, refs in self._pending:
            if all(ref.expired() for ref in refs):
                self.in_use[worker, slot] = 0
            else:
                still.append((worker, slot, refs))
        self._pending = still

    def wrap(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Main process: iterates ``(views, targets, keys)`` batches, tracking and releasing."""
        iterator = iter(batches)
        while True:
            self.release_expired()  # the user still holds the last batch, not the one before
            try:
                views, targets, keys = next(iterator)
            except StopIteration:
                return
            self.track(views)
            plain = list(views)
            del views
            yield plain, targets, keys


class BatchedViewCollate:
    """Collates :class:`ViewDecoder` samples and applies the views' color and filter ops.

    Input: ``[(DecodedViews, target, key), ...]``. Output: ``(views, targets, keys)``, the
    batch structure of every backend: ``views[i]`` a (B, 3, h_i, w_i) tensor of ``dtype``,
    ``targets`` a (B,) long tensor, ``keys`` a list of B str.

    Each sample goes through all of its operations in a float32 workspace that stays in the
    CPU cache, then is scaled, normalized and written into the batch. (Grouping the samples
    that share a jitter order, to run each operation on several at once, was measured
    slower on a 2-core machine with the torch ops: the group's temporaries leave the cache.)

    Args:
        specs: The ViewSpecs the :class:`ViewDecoder` was built with.
        dtype: float32, float16 or bfloat16 views.
        kernels: ``"numba"`` (:mod:`fastssl.transforms.batched_kernels`, one compiled pass
            per op), ``"torch"`` (:mod:`fastssl.transforms.batched`, torch ops), or
            ``"auto"``: numba when it is installed. Both compute the same values.
        recycler: Reuses workers' shared memory (``make_loader`` sets it up with the
            :class:`~fastssl.data.loader.Loader` that releases it); None allocates afresh.

    >>> import torch
    >>> specs = [ViewSpec(crop_size=8, blur_prob=1.0)]
    >>> decoder = ViewDecoder(specs)
    >>> samples = [(decoder(torch.zeros(3, 9, 9, dtype=torch.uint8)), 0, "a")] * 2
    >>> views, targets, keys = BatchedViewCollate(specs)(samples)
    >>> tuple(views[0].shape), targets.tolist(), keys
    ((2, 3, 8, 8), [0, 0], ['a', 'a'])
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        dtype: torch.dtype = torch.float32,
        kernels: Literal["auto", "numba", "torch"] = "auto",
        recycler: BatchRecycler | None = None,
    ) -> None:
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype={dtype} is not supported: use float32, float16 or bfloat16")
        if kernels not in ("auto", "numba", "torch"):
            raise ValueError(f"kernels={kernels!r} is unknown: choose 'auto', 'numba' or 'torch'")
        if kernels == "numba" and not batched_kernels.available():
            raise ValueError("kernels='numba' needs numba: pip install numba (or kernels='torch')")
        self.specs = list(specs)
        self.dtype = dtype
        self.recycler = recycler
        self.kernels = "torch" if kernels == "torch" or not batched_kernels.available() else "numba"
        if self.kernels == "numba":
            # Compiled here, before DataLoader workers fork, so that they inherit the code.
            batched_kernels.warm_up()
        self._workspaces: dict[tuple[int, int], Tensor] = {}
        self._coefficients = [
            batched.normalize_coefficients(spec.normalize_mean, spec.normalize_std)
            for spec in self.specs
        ]

    def __call__(
        self, batch: Sequence[tuple[DecodedViews, int, str]]
    ) -> tuple[list[Tensor], Tensor, list[str]]:
        """Collates and augments a batch.

        Raises:
            ValueError: When a sample is not a ViewDecoder's output, or the views of one
                index differ in size (``crop_size=None`` on images of different sizes).
        """
        _prepare_worker()
        keys = [str(sample[2]) for sample in batch]
        targets = torch.tensor([int(sample[1]) for sample in batch], dtype=torch.long)
        for sample in batch:
            views = sample[0]
            if not isinstance(views, DecodedViews) or len(views.images) != len(self.specs):
                raise ValueError(
                    f"BatchedViewCollate got a sample of type {type(views).__name__}; it "
                    f"collates the output of ViewDecoder with the same {len(self.specs)} "
                    f"ViewSpecs (pass ViewDecoder(specs) as the dataset's transform)"
                )
        columns = []
        for index in range(len(self.specs)):
            images = [sample[0].images[index] for sample in batch]
            shape = tuple(images[0].shape)
            for position, image in enumerate(images):
                if tuple(image.shape) != shape:
                    raise ValueError(
                        f"view {index}: sample {position} is {tuple(image.shape)} but sample 0 "
                        f"is {shape}; with crop_size=None all images of a batch need one size"
                    )
            columns.append((images, [sample[0].params[index] for sample in batch]))
        shapes = [(len(batch), 3, *images[0].shape[-2:]) for images, _ in columns]
        slot = None if self.recycler is None else self.recycler.acquire(shapes, self.dtype)
        outs = slot[2] if slot else [_new_batch(shape, self.dtype) for shape in shapes]
        for index, ((images, params), out) in enumerate(zip(columns, outs, strict=True)):
            self._augment(index, images, params, out)
        if slot is not None:
            return RecycledViews(outs, slot[0], slot[1]), targets, keys
        return outs, targets, keys

    def _workspace(self, height: int, width: int) -> Tensor:
        buffer = self._workspaces.get((height, width))
        if buffer is None:
            buffer = self._workspaces[(height, width)] = torch.empty(1, 3, height, width)
        return buffer

    def _augment(
        self, index: int, images: list[Tensor], params: list[ViewParams], out: Tensor
    ) -> None:
        spec = self.specs[index]
        height, width = images[0].shape[-2:]
        scale, shift = self._coefficients[index]
        x = self._workspace(height, width)
        compiled = self.kernels == "numba"
        for i, (image, p) in enumerate(zip(images, params, strict=True)):
            x[0].copy_(image)
            apply_color_ops(spec, x, p, compiled)
            if compiled and out.dtype == torch.float32:
                batched_kernels.normalize(x, scale, shift, out=out[i : i + 1])
            else:
                batched.normalize(x, scale, shift, out=out[i : i + 1])


def apply_color_ops(
    spec: ViewSpec, x: Tensor, params: ViewParams, compiled: bool = False
) -> Tensor:
    """Color jitter, grayscale, blur and solarization of one view, in place.

    Args:
        spec: The view's ViewSpec (blur kernel size, solarization threshold).
        x: (1, 3, H, W) contiguous float32 tensor on the [0, 255] scale.
        params: The view's draws.
        compiled: Run the numba kernels (:mod:`fastssl.transforms.batched_kernels`) rather
            than the torch ops (:mod:`fastssl.transforms.batched`).

    Returns:
        ``x``.
    """
    ops: Any = batched_kernels if compiled else batched
    for op in params.jitter or ():
        if op == BRIGHTNESS:
            ops.adjust_brightness_(x, params.brightness)
        elif op == CONTRAST:
            ops.adjust_contrast_(x, params.contrast)
        elif op == SATURATION:
            ops.adjust_saturation_(x, params.saturation)
        else:
            ops.adjust_hue_(x, params.hue)
    if params.gray:
        ops.to_grayscale_(x)
    if params.blur_sigma is not None:
        sigma: Any = params.blur_sigma if compiled else torch.tensor([params.blur_sigma])
        ops.gaussian_blur_(x, sigma, spec.blur_kernel_size)
    if params.solarize and spec.solarize_threshold <= 255:
        ops.solarize_(x, spec.solarize_threshold)
    return x


# ------------------------------------------------------------------ seeded map-style items
class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)``: a DistributedSampler's indices, each with its epoch.

    The epoch travels with the index to the worker, so the dataset can seed the sample's
    augmentation with it (persistent workers never see the main process's ``set_epoch``).
    """

    def __init__(self, sampler: DistributedSampler[Any]) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (the order and the augmentation seeds)."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((index, epoch) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededItems(Dataset[Any]):
    """Item ``(index, epoch)`` of a dataset, with ``decoder`` reseeded by (seed, epoch, index).

    Args:
        dataset: A map-style dataset whose transform is ``decoder`` (e.g. a LightlyDataset).
        decoder: The :class:`ViewDecoder` to reseed.
        seed: The run's seed.
    """

    def __init__(self, dataset: Any, decoder: ViewDecoder, seed: int) -> None:
        self.dataset = dataset
        self.decoder = decoder
        self.seed = seed

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, epoch = item
        self.decoder.reseed(self.seed, epoch, index)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)
