"""Reads WebDataset shards (``fastssl shards`` output, or any tars: :mod:`fastssl.data.sources`)
for a torch ``DataLoader``.

:class:`WebDatasetSource` is an ``IterableDataset`` yielding ``(sample, target, key)``
like LightlyDataset's ``(sample, target, filename)``. Each epoch every sample is
delivered exactly once across all ranks x DataLoader workers:

* **Order.** The shard order is shuffled with ``seed + epoch`` (the same on every rank),
  and the shards' samples, concatenated in that order, form the epoch's sequence of N
  samples (N from the manifest, a DALI index or a cached scan).
* **Split.** The sequence is cut into ``world_size`` contiguous ranges, one per rank,
  each cut again into one contiguous range per DataLoader worker. Ranges are split at
  sample granularity (a worker may start in the middle of a shard: it skips the tar
  headers before its first sample), so nothing is lost or repeated when the counts do
  not divide. By default range sizes differ by at most one (rank r gets
  ``[r*N//R, (r+1)*N//R)``); with ``drop_last=True`` every rank gets exactly
  ``N // world_size`` samples and the last ``N % world_size`` samples of the epoch's
  sequence (different ones each epoch) are left out of that epoch, so that all ranks run
  the same number of steps under DDP. Given the loader's ``batch_size``, a rank's range
  is cut among workers at whole batches, so no worker ends on a partial batch that a
  DataLoader with ``drop_last`` would throw away.
* **Shuffle.** Each worker passes its samples through a shuffle buffer seeded by
  ``(seed, epoch, rank, worker)``. Call :meth:`set_epoch` before each epoch; the epoch
  lives in shared memory, so persistent DataLoader workers see it too.
* **Augmentation.** A transform with ``decodes_lazily = True`` (fastssl's
  :class:`~fastssl.data.engines.batched.ViewDecoder`) gets the opened, undecoded image; one
  with a ``reseed(seed, epoch, key)`` method is reseeded before each sample, so that its
  draws depend on the seed, epoch and key only.
* **Resume.** :meth:`state_dict` records how many samples each worker of this rank has
  delivered this epoch; :meth:`load_state_dict` makes the next iteration skip exactly
  those (their bytes are read to replay the shuffle buffer, but not decoded). With
  ``num_workers=0`` the count is kept automatically; with workers the main process
  cannot see them, so pass the keys of each delivered batch to :meth:`mark_delivered`
  (each key tells which worker produced it). Resume with the same ``world_size`` and
  ``num_workers``.

Safety: a tar member with an absolute path, a ``..`` component, a (hard or symbolic)
link or a device/FIFO raises :class:`UnsafeShardError` naming the shard and member, and
so does a manifest ``file`` entry that resolves outside the shards folder (symbolic links
followed) or to anything but a regular file: nothing outside the folder is read. A
malformed manifest (not JSON, no ``classes`` or ``shards`` list, a bad entry) raises
:class:`ManifestError` naming the field; a tar that cannot be read, or a member declaring
more bytes than its shard holds (or than :data:`MAX_MEMBER_BYTES`), raises
:class:`CorruptShardError`. All are :class:`ShardError` (a ``ValueError``) and say what
to do.

With ``verify=True`` (default) each process hashes a shard the first time it opens it
and raises :class:`ShardChecksumError` naming it when the sha256 differs from the
manifest; this reads a shard twice on first use (the second read hits the page cache),
once per process lifetime, so use ``persistent_workers=True`` to pay it once per run,
or ``verify=False`` to skip it.

Unreadable samples: an image member that does not decode, a ``.cls`` that is not a class
index of the manifest, or a sample without an image member. With ``strict=False``
(default) such a sample is replaced by the previous sample of the same worker (the next
one when it is the worker's first), a warning names the shard and member (once per
process) and :attr:`WebDatasetSource.num_unreadable` counts them over all processes
(``num_skipped``: this process's); so every rank still
delivers ``len(source)`` samples and DDP ranks run the same number of steps. With
``strict=True`` a :class:`CorruptShardError` naming the shard and member is raised.
Images are decoded by :mod:`fastssl.data.images` (EXIF orientation applied, 16-bit data
scaled to 8 bits), as for folders.

Why a tar member reader of our own beside the ``webdataset`` package: shards are *opened*
by WebDataset's ``gopen`` (http(s), ``pipe:``) or fsspec (``s3://``, ...), see
:mod:`fastssl.data.sources`, but *read* here, because exact-once splitting at sample
granularity, the member-type and member-size checks and the resumable position need
control over where a worker starts and stops inside a shard, which the package's
shard-level pipeline stages do not give. It is also faster: reading the 1000-photo shards
of ``benchmarks/loaders.py`` (4 tars of 250, page cache warm, no decoding) took 56 ms here
against 69 ms for ``webdataset.WebDataset(urls)``, and 50 ms against 70 ms for a worker
starting in the middle of each shard (it seeks over the samples before its range; the
package reads them) on a 2-core AMD EPYC (family 26).

Example:
    >>> from torch.utils.data import DataLoader
    >>> from fastssl.data.webdataset_source import WebDatasetSource
    >>> source = WebDatasetSource("shards/", transform=my_transform, seed=0)
    >>> loader = DataLoader(source, batch_size=256, num_workers=8, persistent_workers=True)
    >>> for epoch in range(10):
    ...     source.set_epoch(epoch)
    ...     for views, targets, keys in loader:
    ...         ...
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import tarfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from fastssl.data import images
from fastssl.data.manifest import (
    _CONVERT_AGAIN,
    IMAGE_EXTENSIONS,
    CorruptShardError,
    ManifestError,
    ShardChecksumError,
    ShardError,
    UnsafeShardError,
    read_manifest,
    shard_path,
)
from fastssl.data.sources import (
    ShardSet,
    ShardSpec,
    is_remote,
    member_key,
    open_shard,
    open_tar,
    resolve_shards,
)
from fastssl.utils import dist

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_MEMBER_BYTES",
    "CorruptShardError",
    "ManifestError",
    "ShardChecksumError",
    "ShardError",
    "UnsafeShardError",
    "WebDatasetSource",
    "iter_shard",
    "read_manifest",
]

# The largest tar member read into memory; a fastssl shard's members are one image each.
MAX_MEMBER_BYTES = 1 << 30
# Slots of the shared unreadable-sample counter: the main process and up to 255 workers
# (more workers share slots, which sums the same).
_MAX_PROCESSES = 256


def _consumer_range(total: int, parts: int, index: int) -> tuple[int, int]:
    return index * total // parts, (index + 1) * total // parts


def _check_member(shard: str, member: tarfile.TarInfo) -> None:
    name = member.name
    problem = None
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "has an absolute path"
    elif ".." in name.replace("\\", "/").split("/"):
        problem = "has a '..' path component"
    elif member.issym() or member.islnk():
        problem = f"is a link (to {member.linkname!r})"
    elif member.ischr() or member.isblk() or member.isfifo():
        problem = "is a device or FIFO"
    elif not (member.isfile() or member.isdir()):
        problem = f"has unsupported tar type {member.type!r}"
    if problem is not None:
        raise UnsafeShardError(f"shard {shard}: member {name!r} {problem}; refusing to read it")


def iter_shard(
    path: str, start: int = 0, stop: int | None = None, max_member_bytes: int = MAX_MEMBER_BYTES
) -> Iterator[dict[str, Any]]:
    """Yields samples ``start..stop-1`` of a tar as ``{"__key__": key, ext: bytes, ...}``.

    ``path`` is a local file or a URL (:func:`fastssl.data.sources.open_shard`: http(s),
    ``pipe:``, s3 and the other fsspec protocols; read as a stream). Members are grouped
    into samples by key (:func:`fastssl.data.sources.member_key`), as WebDataset and DALI
    do; ``"__url__"`` is the shard. Every member header read, skipped ones included, is
    checked (see :class:`UnsafeShardError`) and its declared size too; in a local file
    the data of samples before ``start`` is seeked over, not read.

    Raises:
        UnsafeShardError: For an absolute, ``..``, link or device member.
        CorruptShardError: When the tar cannot be read, or a member declares more bytes
            than the shard holds after it or than ``max_member_bytes``.
    """
    index, current = -1, None
    sample: dict[str, Any] = {}
    remote = is_remote(path)
    try:
        with open_shard(path) as handle:
            size = None if remote else os.fstat(handle.fileno()).st_size
            with open_tar(handle, remote) as archive:
                for member in archive:
                    _check_member(path, member)
                    _check_size(path, member, size, max_member_bytes)
                    found = member_key(member.name) if member.isfile() else None
                    if found is None:
                        continue  # a folder, or no extension: not part of a sample
                    prefix, ext = found
                    if prefix != current:
                        if index >= start and sample:
                            yield sample
                        index, current = index + 1, prefix
                        sample = {"__key__": prefix, "__url__": path}
                        if stop is not None and index >= stop:
                            return
                    if index >= start:
                        data = archive.extractfile(member)
                        assert data is not None  # a regular file (checked above)
                        sample[ext] = data.read()
    except tarfile.TarError as error:
        raise CorruptShardError(
            f"shard {path}: not a readable tar ({error}); the shard is truncated or corrupt"
        ) from None
    except OSError as error:
        raise CorruptShardError(f"shard {path}: cannot be read ({error})") from None
    if index >= start and sample and (stop is None or index < stop):
        yield sample


def _check_size(path: str, member: tarfile.TarInfo, size: int | None, limit: int) -> None:
    problem = None
    if size is not None and member.offset_data + member.size > size:
        problem = f"only {max(size - member.offset_data, 0)} follow its header"
    elif member.size > limit:
        problem = f"more than the {limit} a member may have (MAX_MEMBER_BYTES)"
    if problem is not None:
        raise CorruptShardError(
            f"shard {path}: member {member.name!r} declares {member.size} bytes, {problem}; "
            f"the shard is truncated or crafted: {_CONVERT_AGAIN}"
        )


def sha256_file(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) hashed in this process


def _verify_shard(path: str, expected: str) -> None:
    stat = os.stat(path)
    token = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if token in _VERIFIED:
        return
    found = sha256_file(path)
    if found != expected:
        raise ShardChecksumError(
            f"shard {path}: sha256 {found} does not match the manifest's {expected}; "
            f"the file is corrupt or was replaced: convert again"
        )
    _VERIFIED.add(token)


def shuffle_buffer(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Streams ``items`` through a buffer of ``size``, yielding a random buffered item
    each step (WebDataset's ``shuffle``); ``size <= 1`` keeps the order."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        pick = rng.randrange(size)
        buffer[pick], item = item, buffer[pick]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def _where(sample: dict[str, Any]) -> str:
    return f"shard {sample.get('__url__', '?')}"


def image_member(sample: dict[str, Any]) -> str:
    """The extension of a sample's first image member (in :data:`IMAGE_EXTENSIONS` order).

    Raises:
        CorruptShardError: When the sample has none, naming the shard and its members.
    """
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return ext
    members = sorted(k for k in sample if not k.startswith("__"))
    raise CorruptShardError(
        f"{_where(sample)}: sample {sample['__key__']!r} has no image member (members: "
        f"{members}; image extensions: {', '.join(IMAGE_EXTENSIONS)}); {_CONVERT_AGAIN}"
    )


def _unreadable(sample: dict[str, Any], ext: str, error: BaseException) -> CorruptShardError:
    return CorruptShardError(
        f"{_where(sample)}: member '{sample['__key__']}.{ext}' is not a decodable image "
        f"({type(error).__name__}: {error}); {_CONVERT_AGAIN} (it skips such files), or "
        f"pass strict=False to replace such samples"
    )


def open_image(sample: dict[str, Any]) -> Image.Image:
    """A sample's first image member, opened (decoded only when it needs turning upright
    or 16-bit scaling, see :func:`fastssl.data.images.normalize`).

    Raises:
        CorruptShardError: When there is no image member or it is not an image.
    """
    ext = image_member(sample)
    try:
        return images.open_bytes(sample[ext])
    except images.DECODE_ERRORS as error:
        raise _unreadable(sample, ext, error) from error


def decode_image(sample: dict[str, Any]) -> Image.Image:
    """The upright, 8-bit RGB PIL image of a sample's first image member.

    Raises:
        CorruptShardError: When there is no image member or it does not decode.
    """
    image = open_image(sample)
    try:
        return images.decode_rgb(image)
    except images.DECODE_ERRORS as error:
        raise _unreadable(sample, image_member(sample), error) from error


def check_label_key(label_key: str) -> str:
    """Returns ``label_key`` if it is valid (see :func:`sample_target`), else raises.

    Raises:
        ValueError: Naming the accepted forms.
    """
    if label_key == "none" or (label_key and not label_key.startswith("json:")):
        return label_key
    if label_key.startswith("json:") and label_key[len("json:") :]:
        return label_key
    raise ValueError(
        f"label_key={label_key!r}: use a member extension holding the class index ('cls', "
        f"the default), 'json:FIELD' for an integer field of the .json member, or 'none'"
    )


def sample_target(sample: dict[str, Any], num_classes: int, label_key: str = "cls") -> int:
    """The class index of a sample, read as ``label_key`` says.

    ``label_key``: a member extension holding the index as decimal text (``"cls"``, the
    default; a sample without that member gets 0, as an unlabeled folder does),
    ``"json:FIELD"`` (an integer field of the ``.json`` member; 0 without the member or
    the field) or ``"none"`` (always 0).

    Raises:
        CorruptShardError: When the label is not an integer in ``[0, num_classes)`` (any
            non-negative integer when ``num_classes`` is 0), or the JSON does not parse.
    """
    if label_key == "none":
        return 0
    field = label_key[len("json:") :] if label_key.startswith("json:") else None
    member = "json" if field is not None else label_key
    if member not in sample:
        return 0
    where = f"{_where(sample)}: member '{sample['__key__']}.{member}'"
    raw: Any = sample[member]
    if field is not None:
        try:
            raw = json.loads(raw).get(field, 0)
        except (ValueError, AttributeError):
            raise CorruptShardError(
                f"{where} is not a JSON object with a field {field!r} (label_key={label_key!r})"
            ) from None
    try:
        if isinstance(raw, bool | float):
            raise ValueError
        target = int(raw)
    except (ValueError, TypeError):
        shown = raw[:40] if isinstance(raw, bytes | str) else raw
        raise CorruptShardError(
            f"{where} holds {shown!r}, not a class index (label_key={label_key!r}: pass "
            f"another label key, or 'none')"
        ) from None
    if target < 0 or (num_classes and target >= num_classes):
        raise CorruptShardError(
            f"{where} holds class {target}, but the manifest lists {num_classes} classes; "
            f"{_CONVERT_AGAIN}"
        )
    return target


class WebDatasetSource(IterableDataset):
    """Samples of WebDataset shards, exactly once per epoch across ranks x workers.

    Args:
        root: The shards: a ``fastssl shards`` folder, or any shard spec of
            :func:`fastssl.data.sources.resolve_shards` (a folder of tars, a ``.tar``, a
            brace pattern, ``http(s)://``, ``s3://`` or ``pipe:`` URLs, a list of them).
        transform: Applied to each RGB PIL image (e.g. a multi-view transform).
        seed: Seeds the shard order and shuffle buffers (with the epoch).
        shuffle: Shuffle shards and samples; False reads in write order, no buffer.
        shuffle_buffer: Samples held by each worker's shuffle buffer.
        rank: This process's rank (default: ``fastssl.utils.dist.rank()``).
        world_size: Number of ranks (default: ``fastssl.utils.dist.world_size()``).
        drop_last: Give every rank ``N // world_size`` samples (see the module doc).
        verify: Check each shard's sha256 (from a manifest) the first time a process opens
            it.
        strict: Raise :class:`CorruptShardError` on an unreadable sample instead of
            replacing it with a warning (see the module doc).
        label_key: Where a sample's class index is (:func:`sample_target`): ``"cls"``,
            ``"json:FIELD"`` or ``"none"``.
        resampled: Draw shards at random, with replacement (seeded per epoch, rank and
            worker), for streams whose sample counts are unknown: an epoch is then
            ``num_samples`` samples, not one pass over the data.
        num_samples: The epoch length in resampled mode (all ranks together).
        batch_size: The batch size of the DataLoader that reads this source, if known: the
            rank's samples are then split among loader workers at whole batches, so that the
            workers' streams give every full batch the rank's samples allow (each worker
            batches its own stream, and a DataLoader with ``drop_last`` drops each worker's
            partial batch: with 2 workers and 4,000 samples, 14 batches of 256 instead of 15).

    Attributes:
        shards: The :class:`~fastssl.data.sources.ShardSet` read.
        num_skipped: Unreadable samples replaced by this process (this object's copy in
            each DataLoader worker counts that worker's).

    Yields:
        ``(transform(image), target, key)``.

    Raises:
        FileNotFoundError: When ``root`` does not exist.
        ManifestError: When a manifest is malformed or lists a missing shard.
        UnsafeShardError: When a manifest lists a shard outside its folder or not a
            regular file.
        ValueError: For resampled mode without ``num_samples``, or a bad label key.

    Example:
        >>> source = WebDatasetSource("shards/", rank=0, world_size=2)
        >>> image, target, key = next(iter(source))
    """

    def __init__(
        self,
        root: ShardSpec,
        transform: Callable[[Image.Image], Any] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        verify: bool = True,
        strict: bool = False,
        label_key: str = "cls",
        resampled: bool = False,
        num_samples: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.world_size = dist.world_size() if world_size is None else world_size
        self.rank = dist.rank() if rank is None else rank
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank={self.rank} and world_size={self.world_size} are invalid; "
                f"need world_size >= 1 and 0 <= rank < world_size"
            )
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer={shuffle_buffer} must be >= 0")
        if resampled and (num_samples is None or num_samples < 1):
            raise ValueError(
                f"resampled=True reads shards at random without end: set num_samples (the "
                f"epoch length, data.num_samples), got {num_samples!r}"
            )
        self.label_key = check_label_key(label_key)
        self.shards: ShardSet = resolve_shards(root, count=not resampled, verify=verify)
        self.root = self.shards.spec
        self.manifest_path = self.shards.manifest
        self.transform = transform
        self.seed, self.shuffle, self.buffer_size = seed, shuffle, shuffle_buffer
        self.drop_last, self.verify, self.strict = drop_last, verify, strict
        self.resampled, self._epoch_length = resampled, num_samples
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1 (or None)")
        self.batch_size = batch_size
        self.num_skipped = 0
        # Unreadable samples of the current epoch, one slot per process (main, workers) in
        # shared memory, summed by num_unreadable in the main process.
        self._unreadable_slots = torch.zeros(_MAX_PROCESSES, dtype=torch.int64).share_memory_()
        self._warned: set[str] = set()  # unreadable members warned about in this process
        self.classes: list[str] = list(self.shards.classes)
        self._counts = [s.num_samples or 0 for s in self.shards.shards]
        # Keys are write positions and shards hold consecutive keys: shard s starts here.
        self._starts = [sum(self._counts[:s]) for s in range(len(self._counts))]
        # Shared memory: DataLoader workers (persistent ones too) read the current epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._delivered: dict[int, int] = {}  # worker -> samples delivered this epoch
        self._skip: dict[int, int] = {}  # worker -> samples to skip (from load_state_dict)
        self._num_workers: int | None = None  # of the DataLoader, once known

    # -- sizes and layout ------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Samples in an epoch, all ranks together (the shards' count, or the resampled
        epoch length)."""
        return self._epoch_length if self._epoch_length is not None else sum(self._counts)

    def _rank_range(self) -> tuple[int, int]:
        total = self.num_samples
        if self.drop_last:
            per = total // self.world_size
            return self.rank * per, (self.rank + 1) * per
        return _consumer_range(total, self.world_size, self.rank)

    def __len__(self) -> int:
        """Samples this rank delivers per epoch."""
        start, stop = self._rank_range()
        return stop - start

    def _shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self._counts)))
        if self.shuffle:
            random.Random(f"{self.seed}/{epoch}/shards").shuffle(order)
        return order

    def _worker_range(self, worker: int, num_workers: int) -> tuple[int, int]:
        start, stop = self._rank_range()
        if not self.batch_size:
            low, high = _consumer_range(stop - start, num_workers, worker)
            return start + low, start + high
        # Whole batches per worker; the last worker also takes the rank's remainder (its
        # one partial batch).
        first, last = _consumer_range((stop - start) // self.batch_size, num_workers, worker)
        low, high = first * self.batch_size, last * self.batch_size
        return start + low, stop if worker == num_workers - 1 else start + high

    @property
    def epoch(self) -> int:
        """The epoch whose order (and augmentation seeds) the next iteration uses."""
        return int(self._epoch)

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (reshuffles); clears delivery and unreadable counts of another
        epoch."""
        if epoch != self.epoch:
            self._delivered, self._skip = {}, {}
            self._unreadable_slots.zero_()
        self.epoch = epoch

    @property
    def num_unreadable(self) -> int:
        """Unreadable samples met in the current epoch by every process reading this source
        (each replaced by a readable one; an epoch reads every sample once, so these are
        distinct samples)."""
        return int(self._unreadable_slots.sum())

    # -- iteration -------------------------------------------------------------------------

    def _read(self, order: Sequence[int], start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Samples at positions [start, stop) of the epoch's concatenated shard sequence."""
        position = 0
        for index in order:
            count = self._counts[index]
            low, high = max(start - position, 0), min(stop - position, count)
            position += count
            if low >= high:
                continue
            path = self._open_path(index)
            found = 0
            for sample in iter_shard(path, low, high):
                found += 1
                yield sample
            if found != high - low:
                raise CorruptShardError(
                    f"shard {path}: holds fewer samples than the {count} counted for it; "
                    f"the shard is corrupt or changed since it was counted"
                )

    def _open_path(self, index: int) -> str:
        """Shard ``index``'s path or URL, checked again at each open where it can be: a
        manifest's folder may have changed since ``__init__``."""
        shard = self.shards.shards[index]
        if self.manifest_path is None or shard.file is None:
            return shard.url
        path = shard_path(self.root, self.manifest_path, index, shard.file)
        if self.verify and shard.sha256 is not None:
            _verify_shard(path, shard.sha256)
        return path

    def _read_resampled(
        self, rng: random.Random, start: int, stop: int
    ) -> Iterator[dict[str, Any]]:
        """``stop - start`` samples from shards drawn at random with replacement."""
        wanted = stop - start
        while wanted > 0:
            index = rng.randrange(len(self.shards.shards))
            found = 0
            for sample in iter_shard(self._open_path(index)):
                found += 1
                yield sample
                wanted -= 1
                if wanted == 0:
                    return
            if found == 0:
                raise CorruptShardError(f"shard {self.shards.shards[index].url}: holds no sample")

    def __iter__(self) -> Iterator[tuple[Any, int, str]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self._num_workers is not None and max(self._num_workers, 1) != num_workers:
            raise ValueError(
                f"this source was resumed or marked for num_workers={self._num_workers} "
                f"but runs in a DataLoader with num_workers={num_workers}"
            )
        epoch = self.epoch
        start, stop = self._worker_range(worker, num_workers)
        if self.resampled:
            draws = random.Random(f"{self.seed}/{epoch}/{self.rank}/{worker}/resampled")
            stream = self._read_resampled(draws, start, stop)
        else:
            stream = self._read(self._shard_order(epoch), start, stop)
        if self.shuffle:
            rng = random.Random(f"{self.seed}/{epoch}/{self.rank}/{worker}")
            stream = shuffle_buffer(stream, self.buffer_size, rng)
        skip = self._skip.get(worker, 0)
        delivered = skip
        last_good: dict[str, Any] | None = None  # stands in for unreadable samples
        pending: list[str] = []  # keys of unreadable samples before the first readable one
        for position, sample in enumerate(stream):
            if position < skip:
                continue  # delivered before the resume: replayed, not decoded
            key = sample["__key__"]
            try:
                item = self._item(sample, epoch, key)
            except CorruptShardError as error:
                if self.strict:
                    raise
                self._note_unreadable(error)
                if last_good is None:
                    pending.append(key)
                    continue
                item = self._item(last_good, epoch, key)
            else:
                # Unreadable samples before this one take its place first, in order, so
                # the delivered count stays a stream position (what resuming skips).
                for pending_key in pending:
                    delivered += 1
                    if info is None:
                        self._delivered[0] = delivered
                    yield self._item(sample, epoch, pending_key)
                pending, last_good = [], sample
            delivered += 1
            if info is None:
                self._delivered[0] = delivered
            yield item
        if pending:
            raise CorruptShardError(
                f"none of the {len(pending)} samples of rank {self.rank}, worker {worker} in "
                f"epoch {epoch} could be read (keys {pending[0]} .. {pending[-1]}); "
                f"{_CONVERT_AGAIN}"
            )

    def _item(self, sample: dict[str, Any], epoch: int, seed_key: str) -> tuple[Any, int, str]:
        """``(transform(image), target, key)`` of ``sample``, augmented as ``seed_key``.

        Raises:
            CorruptShardError: When the sample cannot be read (see the module doc).
        """
        lazy = getattr(self.transform, "decodes_lazily", False)
        image = open_image(sample) if lazy else decode_image(sample)
        target = sample_target(sample, len(self.classes), self.label_key)
        reseed = getattr(self.transform, "reseed", None)
        if reseed is not None:
            reseed(self.seed, epoch, seed_key)
        if self.transform is None:
            return image, target, sample["__key__"]
        if not lazy:
            return self.transform(image), target, sample["__key__"]
        try:  # the transform decodes: its decoding errors are the image's
            return self.transform(image), target, sample["__key__"]
        except images.PIXEL_ERRORS as error:
            raise _unreadable(sample, image_member(sample), error) from error

    def _note_unreadable(self, error: CorruptShardError) -> None:
        self.num_skipped += 1
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_MAX_PROCESSES - 1)
        self._unreadable_slots[slot] += 1
        if str(error) in self._warned:
            return
        self._warned.add(str(error))
        warnings.warn(
            f"WebDatasetSource: an unreadable sample is replaced by a readable one of the same "
            f"worker ({self.num_skipped} so far in this process): {error}",
            stacklevel=3,
        )

    # -- resumable position ------------------------------------------------------------------

    def mark_delivered(self, keys: Sequence[str], num_workers: int) -> None:
        """Records that the DataLoader (with ``num_workers``) delivered these keys.

        Call it with each batch's keys when iterating with workers, so that
        :meth:`state_dict` knows how far each worker got (each worker delivers its
        samples in order, so a count per worker is the whole position). With
        ``num_workers=0`` the source counts by itself and this does nothing.
        """
        if num_workers == 0:
            return
        self._num_workers = num_workers
        offsets, position = {}, 0
        for shard in self._shard_order(self.epoch):
            offsets[shard] = position
            position += self._counts[shard]
        bounds = [self._worker_range(w, num_workers)[0] for w in range(1, num_workers)]
        start, stop = self._rank_range()
        for key in keys:
            try:
                index = int(key.rsplit("/", 1)[-1])
            except ValueError:
                raise ValueError(
                    f"key {key!r} is not a `fastssl shards` key (a sample position); "
                    f"mark_delivered needs the keys this source yields"
                ) from None
            if not 0 <= index < self.num_samples:
                raise ValueError(f"key {key!r} is not a sample of {self.root}")
            shard = bisect.bisect_right(self._starts, index) - 1
            position = offsets[shard] + index - self._starts[shard]
            if not start <= position < stop:
                raise ValueError(
                    f"key {key!r} is not delivered to rank {self.rank} in epoch {self.epoch}"
                )
            worker = bisect.bisect_right(bounds, position)
            self._delivered[worker] = self._delivered.get(worker, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        """The epoch and, per worker, how many of its samples were delivered."""
        workers = max(self._num_workers or 0, 1)
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self._num_workers or 0,
            "delivered": [self._delivered.get(w, 0) for w in range(workers)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes: the next iteration skips what ``state`` says was delivered.

        Raises:
            ValueError: When ``state`` comes from another seed or world size.
        """
        for name in ("seed", "world_size", "rank"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"cannot resume: state has {name}={state[name]}, this source has "
                    f"{name}={getattr(self, name)}"
                )
        self.epoch = int(state["epoch"])
        self._num_workers = int(state["num_workers"]) if state["num_workers"] else None
        self._skip = dict(enumerate(int(n) for n in state["delivered"]))
        self._delivered = dict(self._skip)
