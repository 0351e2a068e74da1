"""Image folder to WebDataset (or FFCV) shards: a deterministic plan, then crash-safe writes.

A conversion runs in two phases:

1. **Plan** (:func:`make_plan`). List ``SRC`` (classes are its top-level folders, sorted,
   as in torchvision's ``ImageFolder``), decode every file with Pillow in parallel to
   verify it, drop what does not decode (listed in ``skipped`` with the reason), put the
   rest in a seeded shuffled order and cut that order into shards (at most
   ``max_count`` samples and ``max_size`` bytes of tar each). The plan records, per
   sample, the size and sha256 of the bytes its image member will hold, so it fully
   determines every byte of every shard. It is saved as ``DST/.plan.json`` before any
   shard is written.
2. **Write** (:func:`write_shards`). Each shard is streamed to ``shard-NNNNNN.tar.tmp``
   (one image in memory at a time), fsynced and renamed; its DALI index follows the
   same way. A rerun after a crash (SIGKILL included) reloads the plan, keeps every
   finished shard that matches it byte for byte (headers compared, payloads checked
   against their sha256), deletes leftovers and ``*.tmp`` files, writes the rest and
   ends with the same bytes and ``manifest.json`` as an uninterrupted run.

Every file found is either a sample or a ``skipped`` entry with its reason: besides files
that do not decode, that covers dangling symbolic links, symbolic link loops (a link to a
folder that contains it is not followed), FIFOs, sockets and devices (never opened) and
unreadable folders. Links to files and to other folders are followed.

File names are bytes on POSIX; one that is not UTF-8 is read as it is, and shown in
``manifest.json`` and ``<key>.json`` with its undecodable bytes as ``\\xNN`` escapes
(``os.fsencode(path).decode("utf-8", "backslashreplace")``), so both stay valid UTF-8
JSON; ``<key>.json`` then also holds ``path_bytes``, the original bytes in hex.

Images are stored as they look: when ``max_side`` re-encodes an image, its EXIF
orientation is applied and 16-bit data scaled to 8 bits first (:mod:`fastssl.data.images`,
which the readers use for copied originals too); the recorded width and height are the
upright size. A file in a format that not every engine decodes (outside
:data:`fastssl.data.manifest.SHARD_IMAGE_EXTENSIONS`: a GIF or a TGA, say) is stored as a
lossless PNG.

One run at a time: a conversion holds an exclusive lock (``fcntl.flock``) on
``DST/.lock`` and a second run into the same DST stops at once with
:class:`DstLockedError`. The kernel releases the lock when its process ends, even when it
is killed, so a ``.lock`` file left behind is never stale: the next run takes it over.
Where the file system has no locks (some network mounts) a warning says the run goes
ahead unlocked.

Shard layout: per sample ``<key>.<ext>`` (the original bytes, or a JPEG re-encoded when
``max_side`` shrinks the image), ``<key>.cls`` (class index, ASCII) and ``<key>.json``
(``{"class", "height", "path", "width"}``: the class name, the source path relative to
``SRC`` and the original size, upright). ``<key>`` is the sample's position in the shuffled
order, zero padded (so a key never contains a dot, which WebDataset reads as an
extension separator). Tar headers are fixed (mtime 0, uid/gid 0, no user names, mode
0644, USTAR), so the same input and settings give byte-identical shards, whatever
``workers`` is. Next to each tar, ``shard-NNNNNN.idx`` is the index DALI's ``wds2idx``
writes (``v1.2 <samples>`` then one line per sample of ``<ext> <data offset> <size>
<member name>`` groups), so ``fn.readers.webdataset(index_paths=...)`` never scans a tar.

Example:
    >>> from fastssl.data.shards import ShardSettings, convert
    >>> manifest = convert("images/", "shards/", ShardSettings(max_count=1000, seed=0))
    >>> manifest["num_samples"], manifest["shards"][0]["file"]
    (12345, 'shard-000000.tar')
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import stat
import tarfile
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from PIL import Image, UnidentifiedImageError

from fastssl.data import images
from fastssl.data.manifest import FFCV_NAME, MANIFEST_NAME

PLAN_NAME = ".plan.json"
LOCK_NAME = ".lock"
TMP_SUFFIX = ".tmp"
PLAN_VERSION = 2  # 2: EXIF orientation and 16-bit scaling; a plan of another version is redone
_BLOCK = 512
_CHUNK = 1 << 20
_SHARD_RE = re.compile(r"^shard-(\d{6,})\.(tar|idx)$")
# Pillow's format name -> the extension WebDataset and DALI readers select members by
# (all in SHARD_IMAGE_EXTENSIONS); other formats (GIF: DALI cannot decode it) are stored
# re-encoded as PNG.
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
_FORMAT_EXT.update({"TIFF": "tiff", "PPM": "ppm", "MPO": "jpg"})

T = TypeVar("T")
R = TypeVar("R")

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """Parses a byte size such as ``"1GB"``, ``"500MB"``, ``"64KiB"`` or ``"1000"``.

    Decimal units (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB)
    powers of 1024.

    Args:
        text: The size, or an int already in bytes.

    Returns:
        The size in bytes, at least 1.

    Raises:
        ValueError: When ``text`` is not a positive size, naming it.

    Example:
        >>> parse_size("1.5GB"), parse_size("64KiB")
        (1500000000, 65536)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(
                f"max_size={text!r} is not a size; use a number with an optional unit "
                f"B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB, e.g. '1GB'"
            )
        value = float(match.group(1)) * _SIZE_UNITS[unit]
    if value < 1:
        raise ValueError(f"max_size={text!r} must be at least 1 byte")
    return int(value)


class DstLockedError(RuntimeError):
    """Another conversion is writing into the same DST (it holds ``DST/.lock``)."""


def display_path(path: str) -> str:
    """A source path as valid Unicode: bytes of a non-UTF-8 name become ``\\xNN`` escapes.

    Example:
        >>> display_path(os.fsdecode(b"caf\\xe9.png"))
        'caf\\\\xe9.png'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ShardSettings:
    """What a conversion produces; everything here is recorded in the manifest.

    ``workers`` is deliberately not a setting: the output does not depend on it.
    """

    format: Literal["webdataset", "ffcv"] = "webdataset"
    max_count: int = 10_000  # samples per shard at most
    max_size: int = 10**9  # tar bytes per shard at most (a larger single sample gets its own)
    max_side: int | None = None  # re-encode images whose longer side exceeds this (pixels)
    quality: int = 90  # JPEG quality of re-encoded images (and of FFCV's jpg mode)
    seed: int = 0  # seeds the sample order

    def __post_init__(self) -> None:
        if self.format not in ("webdataset", "ffcv"):
            raise ValueError(f"format={self.format!r} is not supported; use 'webdataset' or 'ffcv'")
        if not isinstance(self.max_count, int) or self.max_count < 1:
            raise ValueError(f"max_count={self.max_count!r} must be a positive integer")
        if not isinstance(self.max_size, int) or self.max_size < 1:
            raise ValueError(f"max_size={self.max_size!r} must be a positive number of bytes")
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 1):
            raise ValueError(f"max_side={self.max_side!r} must be a positive number of pixels")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality={self.quality!r} must be an integer in [1, 100]")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SourceFile:
    """A file found under SRC: its path relative to SRC (POSIX), class index and size."""

    path: str
    label: int
    size: int


@dataclass(frozen=True)
class Sample:
    """A verified image and the exact image member it becomes."""

    path: str  # relative to SRC
    label: int
    width: int  # original size
    height: int
    ext: str  # extension of the image member
    size: int  # bytes of the image member
    sha256: str  # of the image member
    reencoded: bool  # False: the original bytes are copied


@dataclass(frozen=True)
class Skipped:
    """A file left out of the shards, and why."""

    path: str
    reason: str


@dataclass
class Plan:
    """Everything a conversion writes, decided before writing anything."""

    settings: ShardSettings
    fingerprint: str  # of the source listing (paths and sizes)
    classes: list[str]
    samples: list[Sample]  # in write order: sample i has key ``key(i)``
    shards: list[tuple[int, int]]  # [start, end) ranges of ``samples``
    skipped: list[Skipped]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "settings": self.settings.to_dict(),
            "fingerprint": self.fingerprint,
            "classes": self.classes,
            "samples": [dataclasses.astuple(s) for s in self.samples],
            "shards": [list(s) for s in self.shards],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            settings=ShardSettings(**data["settings"]),
            fingerprint=data["fingerprint"],
            classes=list(data["classes"]),
            samples=[Sample(*s) for s in data["samples"]],
            shards=[(int(a), int(b)) for a, b in data["shards"]],
            skipped=[Skipped(**s) for s in data["skipped"]],
        )


def key(index: int) -> str:
    """The sample key of the ``index``-th sample of the write order (no dots, sortable)."""
    return f"{index:09d}"


def shard_name(index: int, suffix: str = "tar") -> str:
    """``shard-000003.tar`` (or ``.idx``) for shard 3."""
    return f"shard-{index:06d}.{suffix}"


# ---------------------------------------------------------------------------------------
# Listing and verification
# ---------------------------------------------------------------------------------------


def list_source(src: str | os.PathLike[str]) -> tuple[list[str], list[SourceFile], list[Skipped]]:
    """Lists the files under ``src`` in sorted order; every entry found is in the result.

    Classes are the sorted top-level folders of ``src`` (files in a class folder's
    subfolders belong to it). A folder without subfolders is one class named ``"."``;
    otherwise files directly in ``src`` are skipped as outside any class folder.
    Symbolic links are followed, except a link to a folder that contains it (a loop).
    Whatever cannot become a sample (a dangling link, a link loop, a FIFO, socket or
    device, an unreadable folder) is returned as :class:`Skipped` with the reason.

    Raises:
        ValueError: When ``src`` does not exist, is not a folder or holds no file.
    """
    root = os.fspath(src)
    if not os.path.exists(root):
        raise ValueError(f"SRC {display_path(root)!r} does not exist")
    if not os.path.isdir(root):
        raise ValueError(f"SRC {display_path(root)!r} is not a folder")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    class_dirs = [e.name for e in entries if e.is_dir()]
    files: list[SourceFile] = []
    skipped: list[Skipped] = []
    root_id = _identity(os.stat(root))
    if not class_dirs:
        classes = ["."]
        _list_folder(root, "", 0, frozenset({root_id}), files, skipped)
    else:
        classes = class_dirs
        for entry in entries:
            if not entry.is_dir():
                skipped.append(Skipped(entry.name, "outside any class folder"))
        for label, name in enumerate(class_dirs):
            class_id = _identity(os.stat(os.path.join(root, name)))
            if class_id == root_id:
                skipped.append(Skipped(name, _LOOP))
                continue
            _list_folder(root, name, label, frozenset({root_id, class_id}), files, skipped)
    files.sort(key=lambda f: f.path)
    if not files and not skipped:
        raise ValueError(f"SRC {display_path(root)!r} holds no files to convert")
    return classes, files, skipped


_LOOP = "symbolic link loop (a link to a folder that contains it); not followed"
_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _list_folder(
    root: str,
    top: str,
    label: int,
    ancestors: frozenset[tuple[int, int]],
    files: list[SourceFile],
    skipped: list[Skipped],
) -> None:
    """Adds the files under ``root/top`` (recursively) to ``files``, the rest to ``skipped``.

    ``ancestors`` holds the (device, inode) of the folders above, to detect link loops.
    A stack rather than recursion: deep trees do not reach Python's recursion limit.
    """
    stack = [(top, ancestors)]
    while stack:
        folder, above = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, folder)), key=lambda e: e.name)
        except OSError as error:
            skipped.append(Skipped(folder, f"unreadable folder: {error.strerror or error}"))
            continue
        for entry in entries:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            try:
                info = os.stat(entry.path)  # follows links
            except OSError as error:
                if error.errno == errno.ELOOP:
                    reason = "symbolic link loop (the link resolves to itself)"
                elif entry.is_symlink():
                    reason = "dangling symbolic link (its target does not exist)"
                else:
                    reason = f"unreadable: {error.strerror or error}"
                skipped.append(Skipped(rel, reason))
                continue
            if stat.S_ISDIR(info.st_mode):
                if _identity(info) in above:
                    skipped.append(Skipped(rel, _LOOP))
                else:
                    stack.append((rel, above | {_identity(info)}))
            elif stat.S_ISREG(info.st_mode):
                files.append(SourceFile(rel, label, info.st_size))
            else:
                kind = _KINDS.get(stat.S_IFMT(info.st_mode), "special file")
                skipped.append(Skipped(rel, f"not a regular file ({kind}); not opened"))


def source_fingerprint(files: Sequence[SourceFile]) -> str:
    """sha256 over the sorted (path, size, label) listing: cheap, and changes when SRC does."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(os.fsencode(f.path) + f"\t{f.size}\t{f.label}\n".encode())
    return digest.hexdigest()


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """The shrunk size when the longer side exceeds ``max_side``; None to keep the bytes."""
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render(src: str, file: SourceFile, max_side: int | None, quality: int) -> Sample | Skipped:
    """Decodes one file fully (the verification) and computes the image member it becomes.

    Returns the :class:`Sample` or, when Pillow cannot decode the whole file, a
    :class:`Skipped` with the reason. Only one image is held in memory.
    """
    sample, _ = _render(src, file, max_side, quality)
    return sample


def render_payload(src: str, file: SourceFile, max_side: int | None, quality: int) -> bytes:
    """The bytes of a file's image member (what :func:`render` described)."""
    _, payload = _render(src, file, max_side, quality)
    if payload is None:
        raise RuntimeError(
            f"{display_path(file.path)} no longer decodes; SRC changed during the conversion"
        )
    return payload


def _render(
    src: str, file: SourceFile, max_side: int | None, quality: int
) -> tuple[Sample | Skipped, bytes | None]:
    try:
        with open(os.path.join(src, file.path), "rb") as handle:
            data = handle.read()
    except OSError as error:
        return Skipped(file.path, f"unreadable: {error.strerror or error}"), None
    if not data:
        return Skipped(file.path, "empty file"), None
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "unknown"
            turned = images.orientation(image) >= 5  # EXIF orientations 5-8 swap the sides
            width, height = image.size[::-1] if turned else image.size  # as a viewer shows it
            target = _target_size(width, height, max_side)
            if target is not None and fmt == "JPEG":
                # DCT-domain downscaling: the decoder skips detail the resize would drop,
                # still reading (and so verifying) every byte of the file.
                image.draft("RGB", target[::-1] if turned else target)
            image.load()  # decodes everything: truncated or corrupt data raises here
            known = _FORMAT_EXT.get(fmt)
            reencoded = target is not None or known is None
            if known is not None and not reencoded:
                payload, ext = data, known
            else:
                # Upright and 8-bit (the readers do the same to copied originals).
                rgb = images.decode_rgb(image)
                out = io.BytesIO()
                if target is not None:
                    rgb = rgb.resize(target, Image.Resampling.BICUBIC)
                    rgb.save(out, format="JPEG", quality=quality)
                    ext = "jpg"
                else:  # a format the readers do not list: stored losslessly
                    rgb.save(out, format="PNG")
                    ext = "png"
                payload = out.getvalue()
    except UnidentifiedImageError:
        return Skipped(file.path, "not an image (Pillow recognises no image format)"), None
    except Exception as error:  # Pillow raises many types for bad data; all mean "skip"
        # Object reprs carry memory addresses, which would make manifests differ per run.
        message = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<data>", str(error))
        reason = f"not a decodable image ({type(error).__name__}: {message})"
        return Skipped(file.path, reason), None
    sample = Sample(
        file.path,
        file.label,
        width,
        height,
        ext,
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        reencoded,
    )
    return sample, payload


def _render_task(args: tuple[str, SourceFile, int | None, int]) -> Sample | Skipped:
    return render(*args)


def _payload_task(args: tuple[str, SourceFile, int | None, int]) -> bytes:
    return render_payload(*args)


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------


def sample_members(index: int, sample: Sample, classes: Sequence[str]) -> list[tuple[str, int]]:
    """(member name, size) of a sample's tar members, in write order."""
    return [
        (f"{key(index)}.{sample.ext}", sample.size),
        (f"{key(index)}.cls", len(_cls_bytes(sample))),
        (f"{key(index)}.json", len(_json_bytes(sample, classes))),
    ]


def _cls_bytes(sample: Sample) -> bytes:
    return str(sample.label).encode("ascii")


def _json_bytes(sample: Sample, classes: Sequence[str]) -> bytes:
    meta: dict[str, Any] = {
        "class": classes[sample.label],
        "path": display_path(sample.path),
        "width": sample.width,
        "height": sample.height,
    }
    if meta["path"] != sample.path:  # not UTF-8: the original bytes, to find the file again
        meta["path_bytes"] = os.fsencode(sample.path).hex()
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def sample_tar_bytes(index: int, sample: Sample, classes: Sequence[str]) -> int:
    """Bytes a sample takes in a tar: a 512-byte header plus padded data per member."""
    return sum(_BLOCK + _padded(size) for _, size in sample_members(index, sample, classes))


def assign_shards(sizes: Sequence[int], max_count: int, max_size: int) -> list[tuple[int, int]]:
    """Cuts a sequence of per-sample tar sizes into [start, end) shards, greedily.

    A shard closes when one more sample would exceed ``max_count`` samples or
    ``max_size`` bytes (counting the 1024-byte end-of-archive marker); a single sample
    larger than ``max_size`` gets a shard of its own.

    Example:
        >>> assign_shards([10, 10, 10], max_count=2, max_size=10**6)
        [(0, 2), (2, 3)]
    """
    shards: list[tuple[int, int]] = []
    start, used = 0, 2 * _BLOCK
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_count or used + size > max_size):
            shards.append((start, i))
            start, used = i, 2 * _BLOCK
        used += size
    if start < len(sizes):
        shards.append((start, len(sizes)))
    return shards


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool(workers: int) -> Any:
    # fork starts workers in milliseconds and they only run Pillow; spawn elsewhere.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return context.Pool(workers)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def make_plan(
    src: str | os.PathLike[str],
    settings: ShardSettings,
    workers: int | None = None,
    progress: bool = False,
    listing: tuple[list[str], list[SourceFile], list[Skipped]] | None = None,
) -> Plan:
    """Verifies every file of ``src`` (in parallel) and decides every shard's content.

    Deterministic: the same files and settings give the same plan, whatever ``workers``.

    Args:
        src: The image folder.
        settings: The conversion settings.
        workers: Decoding processes (default: the usable cores); 1 decodes in-process.
        progress: Show a tqdm bar with images/s.
        listing: A result of :func:`list_source` to reuse.

    Returns:
        The :class:`Plan`.
    """
    root = os.fspath(src)
    classes, files, skipped = listing if listing is not None else list_source(root)
    workers = _default_workers() if workers is None else workers
    tasks = [(root, f, settings.max_side, settings.quality) for f in files]
    results: list[Sample | Skipped] = []
    with _progress(len(tasks), "verify", progress) as bar:
        if workers <= 1:
            for task in tasks:
                results.append(_render_task(task))
                bar.update()
        else:
            with _pool(workers) as pool:
                chunk = max(1, min(64, len(tasks) // (workers * 8)))
                for result in pool.imap(_render_task, tasks, chunksize=chunk):
                    results.append(result)
                    bar.update()
    samples = [r for r in results if isinstance(r, Sample)]
    skipped = sorted(
        [*skipped, *(r for r in results if isinstance(r, Skipped))], key=lambda s: s.path
    )
    # Python's seeded shuffle is stable across versions; numpy's Generator makes no such promise.
    random.Random(settings.seed).shuffle(samples)
    sizes = [sample_tar_bytes(i, s, classes) for i, s in enumerate(samples)]
    shards = assign_shards(sizes, settings.max_count, settings.max_size)
    return Plan(settings, source_fingerprint(files), classes, samples, shards, skipped)


# ---------------------------------------------------------------------------------------
# Writing and verifying shards
# ---------------------------------------------------------------------------------------


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 0, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


@dataclass(frozen=True)
class _Image:
    """Placeholder for an image payload in a shard's byte layout."""

    sample: Sample


def shard_layout(plan: Plan, shard: int) -> Iterator[bytes | _Image]:
    """The bytes of a shard, in order, with image payloads left as placeholders.

    Writing and checking a shard both walk this one layout, so they cannot disagree.
    """
    start, end = plan.shards[shard]
    for index in range(start, end):
        sample = plan.samples[index]
        payloads: list[bytes | _Image] = [
            _Image(sample),
            _cls_bytes(sample),
            _json_bytes(sample, plan.classes),
        ]
        for (name, size), payload in zip(
            sample_members(index, sample, plan.classes), payloads, strict=True
        ):
            yield _tar_header(name, size)
            yield payload
            if size % _BLOCK:
                yield bytes(_BLOCK - size % _BLOCK)
    yield bytes(2 * _BLOCK)  # end-of-archive marker


def dali_index(plan: Plan, shard: int) -> str:
    """The shard's index in DALI's ``wds2idx`` format (v1.2), computed from the plan.

    ``v1.2 <samples>``, then per sample ``<ext> <data offset> <size> <member name>``
    for each of its members, space separated (offsets point past the 512-byte header).
    """
    start, end = plan.shards[shard]
    lines, offset = [f"v1.2 {end - start}"], 0
    for index in range(start, end):
        parts = []
        for name, size in sample_members(index, plan.samples[index], plan.classes):
            parts.append(f"{name.split('.', 1)[1]} {offset + _BLOCK} {size} {name}")
            offset += _BLOCK + _padded(size)
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def check_shard(path: str, plan: Plan, shard: int) -> str | None:
    """Checks a finished shard against the plan; returns its sha256, or None on mismatch.

    Headers, labels and metadata are compared byte for byte; image payloads by sha256.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for part in shard_layout(plan, shard):
                if isinstance(part, _Image):
                    part_digest, remaining = hashlib.sha256(), part.sample.size
                    while remaining:
                        chunk = handle.read(min(_CHUNK, remaining))
                        if not chunk:
                            return None
                        part_digest.update(chunk)
                        digest.update(chunk)
                        remaining -= len(chunk)
                    if part_digest.hexdigest() != part.sample.sha256:
                        return None
                else:
                    if handle.read(len(part)) != part:
                        return None
                    digest.update(part)
            if handle.read(1):
                return None  # trailing bytes
    except OSError:
        return None
    return digest.hexdigest()


def _write_shard(
    dst: str, plan: Plan, shard: int, src: str, payloads: Iterator[bytes | None]
) -> str:
    """Streams one shard to ``<name>.tmp``, fsyncs and renames it; returns its sha256.

    ``payloads`` yields, per sample in order, the re-encoded bytes or None to copy the
    source file (streamed in chunks, its sha256 checked against the plan).
    """
    final = os.path.join(dst, shard_name(shard))
    tmp = final + TMP_SUFFIX
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in shard_layout(plan, shard):
            if isinstance(part, _Image):
                sample = part.sample
                payload = next(payloads)
                check = hashlib.sha256()
                if payload is None:
                    with open(os.path.join(src, sample.path), "rb") as handle:
                        while chunk := handle.read(_CHUNK):
                            check.update(chunk)
                            digest.update(chunk)
                            out.write(chunk)
                else:
                    check.update(payload)
                    digest.update(payload)
                    out.write(payload)
                if check.hexdigest() != sample.sha256:
                    raise RuntimeError(
                        f"{display_path(sample.path)} changed since it was verified (sha256 "
                        f"differs from the plan); rerun the conversion into an empty DST"
                    )
            else:
                digest.update(part)
                out.write(part)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)
    _fsync_dir(dst)
    return digest.hexdigest()


def _ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, window: int
) -> Iterator[R]:
    """``map(fn, items)`` over a process pool, in order, with at most ``window`` in flight
    (``Pool.imap`` would run ahead without bound and hold every result in memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with _pool(workers) as pool:
        pending: deque[Any] = deque()
        iterator = iter(items)
        for item in iterator:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().get()
            item_next = next(iterator, _END)
            if item_next is not _END:
                pending.append(pool.apply_async(fn, (item_next,)))
            yield result


_END: Any = object()


def write_shards(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    plan: Plan,
    workers: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Writes the plan's shards that are not already in ``dst``; returns manifest entries.

    A shard already in ``dst`` is kept when it matches the plan (see :func:`check_shard`)
    and rewritten otherwise; so is its DALI index.
    """
    root, out = os.fspath(src), os.fspath(dst)
    workers = _default_workers() if workers is None else workers
    digests: dict[int, str] = {}
    todo: list[int] = []
    for shard in range(len(plan.shards)):
        path = os.path.join(out, shard_name(shard))
        found = check_shard(path, plan, shard) if os.path.exists(path) else None
        if found is None:
            if os.path.exists(path):
                os.remove(path)
            todo.append(shard)
        else:
            digests[shard] = found
    order = [i for shard in todo for i in range(*plan.shards[shard])]
    # Only re-encoded samples need a worker; copied ones are streamed from SRC here.
    tasks = (
        (root, _as_source(plan.samples[i]), plan.settings.max_side, plan.settings.quality)
        for i in order
        if plan.samples[i].reencoded
    )
    encoded = _ordered_map(_payload_task, tasks, workers, 4 * workers)
    payloads: Iterator[bytes | None] = (
        next(encoded) if plan.samples[i].reencoded else None for i in order
    )
    with _progress(len(order), "write", progress) as bar:
        for shard in todo:
            digests[shard] = _write_shard(out, plan, shard, root, _counted(payloads, bar))
        for shard in range(len(plan.shards)):
            index_path = os.path.join(out, shard_name(shard, "idx"))
            index = dali_index(plan, shard).encode()
            if not (os.path.exists(index_path) and _read(index_path) == index):
                _atomic_write(index_path, index)
    return [
        {
            "file": shard_name(shard),
            "index": shard_name(shard, "idx"),
            "num_samples": end - start,
            "bytes": os.path.getsize(os.path.join(out, shard_name(shard))),
            "sha256": digests[shard],
        }
        for shard, (start, end) in enumerate(plan.shards)
    ]


def _counted(items: Iterator[T], bar: Any) -> Iterator[T]:
    for item in items:
        yield item
        bar.update()


def _as_source(sample: Sample) -> SourceFile:
    return SourceFile(sample.path, sample.label, -1)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------------------------------
# FFCV
# ---------------------------------------------------------------------------------------


class _FFCVSamples:
    """The plan's samples as (HWC uint8 RGB array, label), the indexable FFCV's writer wants."""

    def __init__(self, src: str, plan: Plan) -> None:
        self.src, self.plan = src, plan

    def __len__(self) -> int:
        return len(self.plan.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import numpy as np

        sample = self.plan.samples[index]
        data = render_payload(
            self.src, _as_source(sample), self.plan.settings.max_side, self.plan.settings.quality
        )
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(images.decode_rgb(image)), sample.label


def write_ffcv(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    plan: Plan,
    workers: int | None = None,
) -> dict[str, Any]:
    """Writes the plan's samples, in plan order, to ``dst/dataset.beton``.

    Images are stored as FFCV's ``RGBImageField(write_mode="jpg")`` with the plan's
    quality, labels as ``IntField``. FFCV's writer is not byte-deterministic, so a rerun
    rewrites the file (under a temporary name, renamed when complete).

    Raises:
        ImportError: When FFCV is not installed, saying how to install it.
    """
    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as error:
        raise ImportError(
            "--format ffcv needs FFCV: pip install 'fastssl[ffcv]' (it builds against the "
            "system libraries libopencv-dev and libturbojpeg); or use --format webdataset"
        ) from error
    root, out = os.fspath(src), os.fspath(dst)
    final = os.path.join(out, FFCV_NAME)
    tmp = final + TMP_SUFFIX
    fields = {
        "image": RGBImageField(write_mode="jpg", jpeg_quality=plan.settings.quality),
        "label": IntField(),
    }
    workers = _default_workers() if workers is None else workers
    writer = DatasetWriter(tmp, fields, num_workers=max(1, workers))
    writer.from_indexed_dataset(_FFCVSamples(root, plan))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(out)
    digest = hashlib.sha256()
    with open(final, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {
        "file": FFCV_NAME,
        "num_samples": len(plan.samples),
        "bytes": os.path.getsize(final),
        "sha256": digest.hexdigest(),
    }


# ---------------------------------------------------------------------------------------
# The whole conversion
# ---------------------------------------------------------------------------------------


def build_manifest(plan: Plan, shards: list[dict[str, Any]], num_files: int) -> dict[str, Any]:
    """The ``manifest.json`` content (no paths or times, so reruns are byte-identical)."""
    return {
        "format": plan.settings.format,
        "num_samples": len(plan.samples),
        "classes": plan.classes,
        "shards": shards,
        "skipped": [{"path": display_path(s.path), "reason": s.reason} for s in plan.skipped],
        "settings": plan.settings.to_dict(),
        "source": {"num_files": num_files, "fingerprint": plan.fingerprint},
        "keys": "zero-padded position in the seeded order; <key>.json holds the source path",
    }


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _is_ours(name: str) -> bool:
    return (
        name in (MANIFEST_NAME, PLAN_NAME, LOCK_NAME, FFCV_NAME)
        or name.endswith(TMP_SUFFIX)
        or _SHARD_RE.match(name) is not None
    )


def _describe_difference(found: dict[str, Any], settings: ShardSettings, fingerprint: str) -> str:
    wanted = settings.to_dict()
    changed = [
        f"{k}: {found['settings'].get(k)!r} there, {v!r} now"
        for k, v in wanted.items()
        if found["settings"].get(k) != v
    ]
    if found.get("fingerprint", found.get("source", {}).get("fingerprint")) != fingerprint:
        changed.append("the files in SRC differ")
    return "; ".join(changed)


@contextlib.contextmanager
def lock_dst(dst: str | os.PathLike[str]) -> Iterator[None]:
    """Holds the exclusive lock of ``dst`` (created if missing) for one conversion.

    An ``fcntl.flock`` on ``DST/.lock``, which records the holder's pid; the file is
    removed on exit. The kernel drops the lock when the holder's process ends, however
    it ends, so a ``.lock`` file left by a killed run is not a lock: the next run takes
    it over. On a file system without locks the run goes ahead with a warning.

    Raises:
        DstLockedError: When another process holds the lock (naming its pid).
        ValueError: When ``dst`` exists and is not a folder.
    """
    out = os.fspath(dst)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"DST {display_path(out)!r} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_NAME)
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None  # type: ignore[assignment]
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DstLockedError(
                f"DST {display_path(out)!r} is being written by another `fastssl shards` run "
                f"(pid {holder}, which holds {LOCK_NAME} there); wait for it to finish or use "
                f"another DST. The lock goes when that process ends, even if it is killed."
            ) from None
        except OSError as error:  # ENOLCK, EOPNOTSUPP: e.g. some network file systems
            warnings.warn(
                f"cannot lock {display_path(path)} ({error.strerror or error}); converting "
                f"without a lock: do not start a second run into this DST meanwhile",
                stacklevel=3,
            )
        # The holder we raced with may have removed the file after we opened it: only a
        # lock on the file that is there now counts.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # before unlocking, so no one locks a file that is going away
        os.close(fd)


def prepare_dst(
    dst: str | os.PathLike[str], settings: ShardSettings, fingerprint: str
) -> tuple[Plan | None, dict[str, Any] | None]:
    """Creates or cleans ``dst`` and finds what a previous run left there.

    Removes ``*.tmp`` leftovers. Returns ``(plan, None)`` to resume an interrupted run
    with the same settings and source, ``(None, manifest)`` when a finished run with
    them is there, and ``(None, None)`` for a fresh start.

    Raises:
        ValueError: When ``dst`` holds files fastssl did not write, or the output of a
            conversion with other settings or another source (naming the differences).
    """
    out = os.fspath(dst)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"DST {out!r} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    names = sorted(os.listdir(out))
    foreign = [n for n in names if not _is_ours(n)]
    if foreign:
        raise ValueError(
            f"DST {out!r} is not empty and holds files fastssl shards did not write "
            f"({', '.join(foreign[:5])}); use an empty or new folder"
        )
    for name in names:
        if name.endswith(TMP_SUFFIX):
            os.remove(os.path.join(out, name))
    for name, kind in ((MANIFEST_NAME, "finished"), (PLAN_NAME, "interrupted")):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        data = json.loads(_read(path))
        if name == PLAN_NAME and data.get("version") != PLAN_VERSION:
            os.remove(path)  # written by another fastssl version: plan again
            continue
        found_fp = data.get("fingerprint", data.get("source", {}).get("fingerprint"))
        if data.get("settings") != settings.to_dict() or found_fp != fingerprint:
            difference = _describe_difference(data, settings, fingerprint)
            raise ValueError(
                f"DST {out!r} holds a {kind} conversion with a different plan ({difference}); "
                f"use an empty DST or the same SRC and settings"
            )
        if name == MANIFEST_NAME:
            return None, data
        return Plan.from_json(data), None
    return None, None


def _remove_leftovers(out: str, plan: Plan) -> None:
    """Removes shard files the plan does not have (from a run with more shards)."""
    for name in os.listdir(out):
        match = _SHARD_RE.match(name)
        if match and int(match.group(1)) >= len(plan.shards):
            os.remove(os.path.join(out, name))
    if plan.settings.format == "ffcv" and os.path.exists(os.path.join(out, FFCV_NAME)):
        os.remove(os.path.join(out, FFCV_NAME))  # no manifest: not known complete


def verify_manifest(dst: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Checks every file the manifest lists against its sha256 and size.

    Raises:
        ValueError: Naming the first file that is missing or differs.
    """
    out = os.fspath(dst)
    for entry in manifest["shards"]:
        path = os.path.join(out, entry["file"])
        if not os.path.exists(path):
            raise ValueError(f"{path} is listed in the manifest but missing")
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            raise ValueError(
                f"{path}: sha256 {digest.hexdigest()} does not match the manifest's "
                f"{entry['sha256']}; the shard is corrupt: delete DST and convert again"
            )


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    settings: ShardSettings | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Converts an image folder into shards; resumes an interrupted conversion.

    Args:
        src: The image folder (class folders inside, as for ``ImageFolder``).
        dst: The output folder: new, empty, or holding an interrupted or finished
            conversion with the same source and settings.
        settings: What to produce (default :class:`ShardSettings`).
        workers: Processes decoding images (default: the usable cores).
        progress: Show tqdm bars with images/s.

    Returns:
        The manifest (also written to ``dst/manifest.json``).

    Raises:
        ValueError: For a bad SRC or DST (see :func:`list_source`, :func:`prepare_dst`).
        DstLockedError: When another conversion is writing into ``dst``.
    """
    settings = settings or ShardSettings()
    root, out = os.fspath(src), os.fspath(dst)
    listing = list_source(root)
    fingerprint = source_fingerprint(listing[1])
    with lock_dst(out):
        return _convert_locked(root, out, settings, workers, progress, listing, fingerprint)


def _convert_locked(
    root: str,
    out: str,
    settings: ShardSettings,
    workers: int | None,
    progress: bool,
    listing: tuple[list[str], list[SourceFile], list[Skipped]],
    fingerprint: str,
) -> dict[str, Any]:
    plan, finished = prepare_dst(out, settings, fingerprint)
    if finished is not None:
        verify_manifest(out, finished)
        if os.path.exists(os.path.join(out, PLAN_NAME)):
            os.remove(os.path.join(out, PLAN_NAME))
        return finished
    if plan is None:
        plan = make_plan(root, settings, workers, progress, listing)
        _atomic_write(os.path.join(out, PLAN_NAME), _dump(plan.to_json()))
    _remove_leftovers(out, plan)
    if settings.format == "ffcv":
        shards = [write_ffcv(root, out, plan, workers)]
    else:
        shards = write_shards(root, out, plan, workers, progress)
    manifest = build_manifest(plan, shards, len(listing[1]))
    _atomic_write(os.path.join(out, MANIFEST_NAME), _dump(manifest))
    os.remove(os.path.join(out, PLAN_NAME))
    _fsync_dir(out)
    return manifest
