"""``DaliBatches``: a DALI pipeline read through ``DALIGenericIterator`` as
``(views, targets, keys)`` batches, the structure of the torch loader.

``views`` is a list of (B, 3, h, w) tensors (float32, or float16 / bfloat16 when asked),
``targets`` a (B,) int64 tensor and ``keys`` a list of B strings: the path relative to
the folder (as ``LightlyDataset`` names files) or the shard sample's key.

Each epoch reads this shard once: ``len()`` is the number of batches of this rank.
``set_epoch(e)`` rebuilds the pipeline with a seed derived from ``(seed, e)``, so the same
seed and epoch give the same order and augmentations, as with the torch backend.

Example:
    >>> from fastssl.transforms.view_spec import ViewSpec
    >>> batches = DaliBatches(  # doctest: +SKIP
    ...     folder_reader("images/"), [ViewSpec(crop_size=64)] * 2, batch_size=16
    ... )
    >>> views, targets, keys = next(iter(batches))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from fastssl.dali.pipeline import Device, ReaderSpec, build_pipeline, output_names
from fastssl.transforms.view_spec import ViewSpec

Batch = tuple[list[Tensor], Tensor, list[str]]
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class DaliBatches:
    """Iterable of ``(views, targets, keys)`` batches produced by a DALI pipeline.

    Args:
        reader: From :func:`fastssl.dali.pipeline.folder_reader` or ``webdataset_reader``.
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
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype} is not supported: use one of {_DTYPES}")
        self.reader, self.specs = reader, list(specs)
        self.batch_size, self.num_threads = batch_size, num_threads
        self.device, self.device_id = device, device_id
        self.seed, self.shard_id, self.num_shards = seed, shard_id, num_shards
        self.shuffle, self.drop_last = shuffle, drop_last
        self.dtype, self.roi_decode = dtype, roi_decode
        self.epoch = 0
        self._built_for: int | None = None
        self._iterator: Any = None
        # The file/webdataset readers give shard i the samples [N i / n, N (i + 1) / n).
        total = reader.num_samples
        self.shard_size = (total * (shard_id + 1)) // num_shards - (total * shard_id) // num_shards
        self._build(0)  # fail early on a bad source or spec

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch: the pipeline is rebuilt with its seed on the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def _build(self, epoch: int) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = build_pipeline(
            self.reader,
            self.specs,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device=self.device,
            device_id=self.device_id,
            seed=(self.seed + 7919 * epoch) % (2**31),
            shard_id=self.shard_id,
            num_shards=self.num_shards,
            shuffle=self.shuffle,
            fp16=self.dtype != torch.float32,
            roi_decode=self.roi_decode,
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
        if self._built_for != self.epoch:
            self._build(self.epoch)
        for outputs in self._iterator:
            yield self._convert(outputs[0])

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


def _text(row: Any) -> str:
    return bytes(row).rstrip(b"\0").decode()


def _key(row: Any) -> str:
    # source_info is "<tar path>:<offset>:<member>"; the key is the member without extension.
    member = _text(row).rsplit(":", 1)[-1]
    return member.split(".", 1)[0]
