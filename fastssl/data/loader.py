"""One entry point for training data: ``make_loader(source, transform, backend=...)``.

Sources: an image folder (with or without class subfolders), a ``fastssl shards``
WebDataset output folder (``manifest.json`` + tars), or an FFCV ``.beton``. Every backend
yields batches with one structure, ``(views, targets, keys)``: ``views`` a list of
(B, 3, h, w) float tensors (one per view), ``targets`` a (B,) long tensor, ``keys`` a list
of B strings (file names or shard keys).

Backends: ``"torch"`` (torchvision v2 augmentation in DataLoader workers: the fallback
that works everywhere). ``"auto"`` picks the fastest installed backend for the source.

Example:
    >>> from fastssl.transforms import SimCLRTransform
    >>> transform = SimCLRTransform(input_size=32)
    >>> loader = make_loader("images/", transform, batch_size=64)  # doctest: +SKIP
    >>> for views, targets, keys in loader: ...  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fastssl.data.dataset import LightlyDataset
from fastssl.data.multi_view_collate import MultiViewCollate
from fastssl.data.webdataset_source import WebDatasetSource
from fastssl.utils import dist

SourceKind = Literal["folder", "webdataset", "ffcv"]
Backend = Literal["auto", "torch", "dali", "ffcv"]
Batch = tuple[list[Tensor], Tensor, list[str]]
BACKENDS: tuple[str, ...] = ("auto", "torch", "dali", "ffcv")


def detect_source(source: str | os.PathLike[str]) -> SourceKind:
    """Tells what kind of data ``source`` is.

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If it is an empty folder or a file of an unknown kind.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix == ".beton":
            return "ffcv"
        raise ValueError(
            f"data path {str(path)!r} is a file: pass an image folder, shards or a .beton"
        )
    manifest = path / "manifest.json"
    if manifest.exists():
        kind = json.loads(manifest.read_text()).get("format")
        if kind in ("webdataset", "ffcv"):
            return kind
        raise ValueError(f"{manifest}: unknown format {kind!r}")
    if next(path.iterdir(), None) is None:
        raise ValueError(f"data path {str(path)!r} is an empty folder: no images to train on")
    return "folder"


class Loader:
    """An iterable of ``(views, targets, keys)`` batches with a length and epochs.

    Attributes:
        kind: The source kind.
        backend: The backend that produces the batches.
        batch_size: Samples per batch (per process).
    """

    def __init__(
        self,
        batches: DataLoader[Any],
        kind: SourceKind,
        backend: str,
        on_epoch: Callable[[int], None],
    ) -> None:
        self._batches = batches
        self._on_epoch = on_epoch
        self.kind, self.backend = kind, backend
        self.batch_size = int(batches.batch_size or 1)
        self.dataset = batches.dataset

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles for ``epoch``: the same seed and epoch give the same order."""
        self._on_epoch(epoch)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)


def make_loader(
    source: str | os.PathLike[str],
    transform: Callable[[Any], Any],
    backend: Backend = "auto",
    batch_size: int = 256,
    num_workers: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    strict: bool = False,
) -> Loader:
    """Builds the training loader for ``source``.

    Args:
        source: Image folder, ``fastssl shards`` folder, or ``.beton`` file.
        transform: The multi-view transform (e.g. ``SimCLRTransform(...)``); engines other
            than torch compile its ``view_specs``.
        backend: ``"auto"``, ``"torch"``, ``"dali"`` or ``"ffcv"``.
        batch_size: Samples per batch on this process.
        num_workers: Loader processes (default: the usable CPU cores).
        shuffle: Shuffle every epoch (seeded by ``seed`` and the epoch).
        drop_last: Drop the last incomplete batch (contrastive losses want full batches).
        seed: Seed of the data order.
        rank: This process's rank (default: from torch.distributed).
        world_size: Number of processes (default: from torch.distributed).
        strict: Raise on an unreadable image instead of skipping it with a warning.

    Returns:
        A :class:`Loader`.

    Raises:
        ValueError: For an unknown backend, or one that cannot read this source.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    kind = detect_source(source)
    chosen = "torch" if backend == "auto" else backend
    if chosen != "torch":
        raise ValueError(f"backend={backend!r} is not available in this build: use backend='torch'")
    if kind == "ffcv":
        raise ValueError(f"{source}: an FFCV .beton needs backend='ffcv'")
    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    workers = len(os.sched_getaffinity(0)) if num_workers is None else num_workers
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": workers,
        "collate_fn": MultiViewCollate(),
        "drop_last": drop_last,
        "persistent_workers": workers > 0,
    }
    if kind == "webdataset":
        shards = WebDatasetSource(
            source,
            transform=transform,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
        )
        return Loader(DataLoader(shards, **common), kind, "torch", shards.set_epoch)
    # LightlyDataset (like lightly's) is a map-style dataset without the Dataset base class.
    dataset = cast(Dataset[Any], LightlyDataset(os.fspath(source), transform, strict=strict))
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    generator = torch.Generator().manual_seed(seed)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        sampler=sampler,
        generator=generator,
        **common,
    )
    return Loader(loader, kind, "torch", sampler.set_epoch)
