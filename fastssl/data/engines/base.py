"""What every data engine returns: a :class:`Loader` of ``(views, targets, keys)`` batches.

``views`` is a list of (B, 3, h, w) tensors (one per view), ``targets`` a (B,) int64
tensor and ``keys`` a list of B strings (file names or shard keys), whichever engine
(batched torch, DALI, FFCV) made them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from torch import Tensor
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from fastssl.data.engines.batched import BatchRecycler

SourceKind = Literal["folder", "webdataset", "ffcv"]
Batch = tuple[list[Tensor], Tensor, list[str]]


class SizedBatches(Protocol):
    """What a :class:`Loader` wraps: an iterable of batches with a length."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


class Loader:
    """An iterable of ``(views, targets, keys)`` batches with a length and epochs.

    Attributes:
        kind: The source kind.
        backend: The backend that produces the batches (``"torch"``, ``"dali"``, ``"ffcv"``).
        batch_size: Samples per batch (per process).
        dataset: The torch dataset (torch backend) or None.

    With the torch backend's batched engine and workers, the batches' shared memory is
    reused once no reference to a batch's tensors is left (see
    :class:`~fastssl.data.engines.batched.BatchRecycler`).
    """

    def __init__(
        self,
        batches: SizedBatches | DataLoader[Any],
        kind: SourceKind,
        backend: str,
        on_epoch: Callable[[int], None],
        batch_size: int | None = None,
        recycler: BatchRecycler | None = None,
    ) -> None:
        self._batches = batches
        self._on_epoch = on_epoch
        self._recycler = recycler
        self.kind, self.backend = kind, backend
        if batch_size is None:
            batch_size = int(getattr(batches, "batch_size", None) or 1)
        self.batch_size = batch_size
        self.dataset = getattr(batches, "dataset", None)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles for ``epoch``: the same seed and epoch give the same order."""
        self._on_epoch(epoch)

    @property
    def num_unreadable(self) -> int | None:
        """Unreadable images met and replaced by readable ones (an image folder: so far;
        torch engine on shards: in the current epoch), or None for an engine that does not
        count them (FFCV, whose ``.beton`` holds only images that decoded when written)."""
        counted = getattr(self._batches, "num_unreadable", None)
        if isinstance(counted, int):
            return counted
        dataset = self.dataset
        while dataset is not None and not hasattr(dataset, "num_unreadable"):
            dataset = getattr(dataset, "dataset", None)
        return None if dataset is None else int(dataset.num_unreadable)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        batches = cast(Iterable[Batch], self._batches)
        if self._recycler is not None:  # hands the workers' shared memory back when dropped
            return self._recycler.wrap(batches)
        return iter(batches)
