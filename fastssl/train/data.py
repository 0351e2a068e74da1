"""Training data for the engine: per-epoch seeding, resumable position, data-wait timing.

Two wrappers make the data side of a run reproducible and resumable from one seed:

- :class:`EpochSeededTransform` reseeds the random generators (torch, ``random``, NumPy)
  of whichever process runs the augmentation, loader worker or main process, at the first
  sample of every epoch, from ``(seed, rank, epoch, worker id)``. Since the sampler gives
  each worker a fixed, seeded sequence of samples, the augmentation of an epoch depends
  only on the seed and the epoch, not on what ran before (nor on a resume).
- :class:`ResumableLoader` sets the epoch of the sampler and of the transform when an
  epoch's iterator is created, skips the batches a mid-epoch checkpoint had already
  trained on, and accumulates the time spent waiting for batches (``wait_s``).

Example:
    >>> transform = EpochSeededTransform(lambda image: [image, image], seed=0)
    >>> transform.set_epoch(3)  # reseeds the process that runs it, at its next sample
    >>> transform("x")
    ['x', 'x']
"""

from __future__ import annotations

import multiprocessing
import random
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from fastssl.data.engines.base import Batch, Loader


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed that depends on all ``parts`` (stable across processes and runs)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def seed_all(seed: int) -> None:
    """Seeds torch, ``random`` and NumPy of the current process."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


class EpochSeededTransform:
    """Wraps a transform so its randomness restarts from a seed at every epoch.

    The epoch lives in shared memory, so loader workers (persistent or not, forked or
    spawned) see :meth:`set_epoch` of the main process. Attributes of the wrapped
    transform (e.g. ``view_specs`` for the DALI and FFCV engines) stay reachable.

    Args:
        transform: The multi-view transform.
        seed: The run's seed.
        rank: This process's rank (ranks augment differently).
    """

    def __init__(self, transform: Callable[[Any], Any], seed: int, rank: int = 0) -> None:
        self.transform = transform
        self.seed = seed
        self.rank = rank
        # (epoch, pass) in shared memory; the pass counts set_epoch calls, so a second
        # pass over the same epoch (a restarted iterator) reseeds too.
        self._state = multiprocessing.Array("q", [0, 0], lock=False)
        self._seen_pass = -1  # per process: the pass this process last seeded for

    def set_epoch(self, epoch: int) -> None:
        """Makes the next sample, in every worker, reseed for ``epoch``."""
        self._state[0] = epoch
        self._state[1] += 1

    def __call__(self, image: Any) -> Any:
        epoch, generation = int(self._state[0]), int(self._state[1])
        if generation != self._seen_pass:
            info = get_worker_info()
            worker = -1 if info is None else info.id
            seed_all(derive_seed("augment", self.seed, self.rank, epoch, worker))
            self._seen_pass = generation
        return self.transform(image)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks; guard against the recursion an
        # unpickled instance without "transform" in its __dict__ would cause.
        transform = self.__dict__.get("transform")
        if transform is None:
            raise AttributeError(name)
        return getattr(transform, name)


class ResumableLoader:
    """The training loader seen by Lightning: epoch-aware, resumable, timed.

    Args:
        loader: The :class:`fastssl.data.loader.Loader`.
        transform: The seeded transform given to the loader (its epoch is set too).

    Attributes:
        epoch: Epoch of the next iterator (set by the training module).
        skip: Batches to drop from the start of the next iterator (mid-epoch resume).
        wait_s: Total seconds spent waiting for batches.
        batches: Batches handed out so far.
    """

    def __init__(self, loader: Loader, transform: EpochSeededTransform | None = None) -> None:
        self.loader = loader
        self.transform = transform
        self.epoch = 0
        self.skip = 0
        self.wait_s = 0.0
        self.batches = 0

    @property
    def batch_size(self) -> int:
        """Samples per batch on this process."""
        return self.loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # Lazy: nothing happens until the first next(). Lightning probes iter() once on
        # a loader that is not a DataLoader and drops it; an eager iterator would start
        # workers and use up the resume position.
        return self._batches()

    def close(self) -> None:
        """Stops the loader's worker processes (persistent workers outlive an epoch)."""
        batches = getattr(self.loader, "_batches", None)
        iterator = getattr(batches, "_iterator", None)  # a DataLoader's persistent iterator
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()

    def _batches(self) -> Iterator[Batch]:
        self.loader.set_epoch(self.epoch)
        if self.transform is not None:
            self.transform.set_epoch(self.epoch)
        iterator = iter(self.loader)
        skip, self.skip = self.skip, 0
        for _ in range(skip):  # replays the epoch's start: same order, same augmentation
            next(iterator, None)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - start
            self.batches += 1
            yield batch


__all__ = ["EpochSeededTransform", "ResumableLoader", "derive_seed", "seed_all"]
