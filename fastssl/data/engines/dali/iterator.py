"""``DaliBatches``: a DALI pipeline read through ``DALIGenericIterator`` as
``(views, targets, keys)`` batches, the structure of the torch loader.

``views`` is a list of (B, 3, h, w) tensors (float32, or float16 / bfloat16 when asked),
``targets`` a (B,) int64 tensor and ``keys`` a list of B strings: the path relative to
the folder (as ``LightlyDataset`` names files) or the shard sample's key.

Each epoch reads this rank's part once: ``len()`` is the number of batches of this rank.
``set_epoch(e)`` rebuilds the pipeline with a seed derived from ``(seed, e)``, so the same
seed and epoch give the same order and augmentations, as with the torch backend.

Image folders: the epoch's order is drawn here, by the ``DistributedSampler`` the torch
engine uses (same seed, epoch and rank: the same files in the same order), and handed to
DALI's file reader unshuffled. Knowing which file each batch holds is what lets a bad file
be survived: DALI stops its pipeline on a file it cannot read or decode (a truncated or
empty JPEG); the file is found (named in DALI's message, else by decoding the failed
batch's files with Pillow), warned about once, counted in :attr:`num_unreadable` and
replaced, as the torch engine does, by the next readable file of the folder; the pipeline
is rebuilt from the first batch not yet delivered, so the epoch loses no sample and
repeats none but the substitute. With ``strict=True`` the file is raised instead.
``fastssl shards`` output holds only images Pillow decoded when the shards were written.

Example:
    >>> from fastssl.transforms.view_spec import ViewSpec
    >>> batches = DaliBatches(  # doctest: +SKIP
    ...     folder_reader("images/"), [ViewSpec(crop_size=64)] * 2, batch_size=16
    ... )
    >>> views, targets, keys = next(iter(batches))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from fastssl.data.dataset import UnreadableImageError, pil_loader
from fastssl.data.engines.base import Batch, Loader
from fastssl.data.engines.dali.pipeline import (
    Device,
    ReaderSpec,
    build_pipeline,
    folder_reader,
    import_dali,
    output_names,
    webdataset_reader,
)
from fastssl.transforms.view_spec import ViewSpec

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Batches DALI may have in flight when an error surfaces: the failed file is among the
# files of the next PREFETCH + 1 batches after the last one delivered.
_PREFETCH = 2


class DaliBatches:
    """Iterable of ``(views, targets, keys)`` batches produced by a DALI pipeline.

    Args:
        reader: From :func:`fastssl.data.engines.dali.pipeline.folder_reader` or
            ``webdataset_reader``.
        specs: One ViewSpec per view.
        batch_size: Samples per batch.
        num_threads: DALI CPU threads.
        device: ``"cpu"`` or ``"mixed"`` (GPU decode).
        device_id: GPU index (None for CPU only).
        seed: Seed of the order and the augmentations (with the epoch and the rank).
        shard_id: This process's rank.
        num_shards: World size.
        shuffle: Shuffle each epoch.
        drop_last: Drop the last incomplete batch of the shard.
        dtype: float32, float16 or bfloat16 views.
        roi_decode: Crop while decoding (None: on the GPU path with few views).
        strict: Image folders: raise ``UnreadableImageError`` on a file DALI cannot read
            instead of replacing it.

    Raises:
        ValueError: For a dtype other than float32 / float16 / bfloat16.
    """

    def __init__(
        self,
        reader: ReaderSpec,
        specs: Sequence[ViewSpec],
        *,
        batch_size: int,
        num_threads: int = 2,
        device: Device = "cpu",
        device_id: int | None = None,
        seed: int = 0,
        shard_id: int = 0,
        num_shards: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        dtype: torch.dtype = torch.float32,
        roi_decode: bool | None = None,
        strict: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype} is not supported: use one of {_DTYPES}")
        self.reader, self.specs = reader, list(specs)
        self.batch_size, self.num_threads = batch_size, num_threads
        self.device, self.device_id = device, device_id
        self.seed, self.shard_id, self.num_shards = seed, shard_id, num_shards
        self.shuffle, self.drop_last = shuffle, drop_last
        self.dtype, self.roi_decode, self.strict = dtype, roi_decode, strict
        self.epoch = 0
        self._built_for: int | None = None
        self._iterator: Any = None
        self._unreadable: set[int] = set()
        self._sampler: DistributedSampler[Any] | None = None
        if reader.kind == "folder":
            self._sampler = DistributedSampler(
                range(reader.num_samples),  # type: ignore[arg-type]
                num_replicas=num_shards,
                rank=shard_id,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
            )
            self.shard_size = len(self._sampler)
            # Fail early on a bad spec: build over the first batches (skipping bad files).
            first = self._order(0)[: batch_size * (_PREFETCH + 1)]
            while True:
                try:
                    self._build(0, first)
                    break
                except RuntimeError as error:
                    self._skip(error, [self._substitute(index) for index in first])
        else:
            # The webdataset reader gives shard i the samples [N i / n, N (i + 1) / n).
            total = reader.num_samples
            self.shard_size = (total * (shard_id + 1)) // num_shards - (
                total * shard_id
            ) // num_shards
            self._build(0)  # fail early on a bad source or spec

    @property
    def num_unreadable(self) -> int:
        """Files of an image folder DALI could not read so far, each replaced by the next
        readable file (0 for shards, whose images all decoded when they were written)."""
        return len(self._unreadable)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch: the pipeline is rebuilt with its seed on the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def _order(self, epoch: int) -> list[int]:
        assert self._sampler is not None
        self._sampler.set_epoch(epoch)
        return list(self._sampler)

    def _substitute(self, index: int) -> int:
        """The next readable file after ``index`` (wrapping), as ``LightlyDataset`` picks."""
        size = self.reader.num_samples
        for offset in range(size):
            candidate = (index + offset) % size
            if candidate not in self._unreadable:
                return candidate
        raise RuntimeError(f"none of the {size} images of the folder could be read by DALI")

    def _build(self, epoch: int, order: Sequence[int] | None = None, restart: int = 0) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        reader = self.reader
        shard_id, num_shards, shuffle = self.shard_id, self.num_shards, self.shuffle
        if order is not None:  # an image folder, read in the order drawn here
            labels = [self._substitute(index) for index in order]
            files = tuple(reader.files[index] for index in labels)
            reader = dataclasses.replace(
                reader, files=files, labels=tuple(labels), num_samples=len(files)
            )
            shard_id, num_shards, shuffle = 0, 1, False
        pipe = build_pipeline(
            reader,
            self.specs,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device=self.device,
            device_id=self.device_id,
            # Ranks, epochs and restarts after a bad file draw different augmentations.
            seed=(self.seed + 7919 * epoch + 104_729 * self.shard_id + 31 * restart) % (2**31),
            shard_id=shard_id,
            num_shards=num_shards,
            shuffle=shuffle,
            fp16=self.dtype != torch.float32,
            roi_decode=self.roi_decode,
            prefetch_queue_depth=_PREFETCH,
        )
        self._iterator = DALIGenericIterator(
            [pipe],
            output_names(len(self.specs), self.reader.kind),
            reader_name="Reader",
            last_batch_policy=LastBatchPolicy.DROP if self.drop_last else LastBatchPolicy.PARTIAL,
            auto_reset=True,
        )
        self._built_for = epoch

    def __iter__(self) -> Iterator[Batch]:
        if self.reader.kind == "folder":
            yield from self._folder_epoch()
            return
        if self._built_for != self.epoch:
            self._build(self.epoch)
        for outputs in self._iterator:
            yield self._convert(outputs[0])

    def _folder_epoch(self) -> Iterator[Batch]:
        order = self._order(self.epoch)
        if self.drop_last:
            order = order[: len(self) * self.batch_size]
        delivered, restart = 0, 0
        while delivered < len(order):
            try:
                self._build(self.epoch, order[delivered:], restart)
                for outputs in self._iterator:
                    batch = self._convert(outputs[0])
                    delivered += len(batch[1])
                    yield batch
                return
            except RuntimeError as error:
                window = order[delivered : delivered + self.batch_size * (_PREFETCH + 1)]
                self._skip(error, [self._substitute(index) for index in window])
                restart += 1

    def _skip(self, error: RuntimeError, window: Sequence[int]) -> None:
        """Marks the file DALI failed on as unreadable (or raises ``error`` when none of
        ``window``'s files is the culprit, or with ``strict``)."""
        message = str(error)
        culprits = [i for i in dict.fromkeys(window) if self.reader.files[i] in message]
        reason = message.strip().splitlines()[-1] if message.strip() else "unreadable"
        if not culprits:  # DALI's decoders do not always name the file: ask Pillow
            culprits = [i for i in dict.fromkeys(window) if _pillow_error(self.reader.files[i])]
        if not culprits:
            raise RuntimeError(
                f"DALI stopped on a file it could not read, but no file of the failed batch "
                f"is unreadable to Pillow: {reason}. Use --backend torch (backend='torch'), "
                f"which skips and counts unreadable images."
            ) from error
        for index in culprits:
            path = self.reader.files[index]
            cause = _pillow_error(path) or RuntimeError(reason)
            if self.strict:
                raise UnreadableImageError(path, cause) from error
            self._unreadable.add(index)
            warnings.warn(
                f"DALI: skipping unreadable image {path!r} ({cause}); the next readable "
                f"sample is used instead.",
                stacklevel=3,
            )

    def _convert(self, data: dict[str, Tensor]) -> Batch:
        views = [data[f"view{i}"] for i in range(len(self.specs))]
        if self.dtype == torch.bfloat16:
            views = [view.to(torch.bfloat16) for view in views]
        if self.reader.kind == "folder":
            index = data["index"].reshape(-1).tolist()
            targets = torch.tensor([self.reader.targets[i] for i in index], dtype=torch.long)
            keys = [self.reader.names[i] for i in index]
        else:
            keys = [_key(row) for row in data["key"].numpy()]
            targets = torch.tensor([int(_text(row)) for row in data["cls"].numpy()])
        return views, targets.long(), keys


def _pillow_error(path: str) -> Exception | None:
    """Why Pillow cannot decode ``path``, or None when it can."""
    try:
        pil_loader(path)
    except UnreadableImageError as error:
        return error.__cause__ if isinstance(error.__cause__, Exception) else error
    return None


def _text(row: Any) -> str:
    return bytes(row).rstrip(b"\0").decode()


def _key(row: Any) -> str:
    # source_info is "<tar path>:<offset>:<member>"; the key is the member without extension.
    member = _text(row).rsplit(":", 1)[-1]
    return member.split(".", 1)[0]


def dali_loader(
    source: str | os.PathLike[str],
    specs: Sequence[ViewSpec],
    kind: str,
    *,
    batch_size: int,
    threads: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    rank: int,
    world_size: int,
    device: Device,
    dtype: torch.dtype,
    strict: bool = False,
) -> Loader:
    """The DALI engine's :class:`~fastssl.data.engines.base.Loader` over an image folder
    (``kind="folder"``) or a local ``fastssl shards`` folder (``"webdataset"``)."""
    import_dali()
    reader = folder_reader(source) if kind == "folder" else webdataset_reader(source)
    batches = DaliBatches(
        reader,
        specs,
        batch_size=batch_size,
        num_threads=max(threads, 1),
        device=device,
        device_id=(torch.cuda.current_device() if device == "mixed" else None),
        seed=seed,
        shard_id=rank,
        num_shards=world_size,
        shuffle=shuffle,
        drop_last=drop_last,
        dtype=dtype,
        strict=strict,
    )
    return Loader(batches, reader.kind, "dali", batches.set_epoch, batch_size)
