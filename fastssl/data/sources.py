"""Where WebDataset shards come from: any tars, local or remote, with their sample counts.

A *shard spec* names a set of WebDataset tars. :func:`resolve_shards` accepts

* a ``fastssl shards`` folder (``manifest.json``: counts, classes and sha256s from it);
* a folder of ``.tar`` files without a manifest (img2dataset output, ``webdataset.ShardWriter``
  output, ...), a single ``.tar`` file, or a text file (``.txt``) listing one shard per line
  (``#`` starts a comment; relative paths are relative to the list's folder);
* brace patterns, local or remote: ``shards/train-{000000..000099}.tar``;
* URLs: ``http(s)://``, ``pipe:CMD`` (opened by WebDataset's ``gopen``: curl, or the
  command's stdout), and every protocol fsspec knows (``s3://`` through s3fs, with the
  endpoint and credentials from the usual ``AWS_*`` environment variables; ``gs://``, ...);
* a list of any of these (from Python).

Exactly-once splitting needs each shard's sample count: from the manifest; else from a DALI
index beside a local tar (``NAME.idx``, as ``fastssl shards`` and DALI's ``wds2idx`` write
it); else from one scan of the tar's headers, cached in ``$XDG_CACHE_HOME/fastssl`` (keyed
by path, size and mtime, or by URL) so that it is paid once per machine. A stream that
cannot be scanned (or should not be) is read in resampled mode instead, with an epoch
length given (``num_samples``).

Example:
    >>> shards = resolve_shards("shards/train-{000000..000003}.tar")  # doctest: +SKIP
    >>> shards.num_samples, shards.shards[0].url  # doctest: +SKIP
    (40000, 'shards/train-000000.tar')
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from fastssl.data.manifest import (
    MANIFEST_NAME,
    CorruptShardError,
    ManifestError,
    check_webdataset_manifest,
    read_manifest,
    shard_path,
)
from fastssl.utils.cache import user_cache_dir

__all__ = [
    "Shard",
    "ShardSet",
    "count_samples",
    "expand_spec",
    "is_remote",
    "is_shard_spec",
    "member_key",
    "open_shard",
    "open_tar",
    "resolve_shards",
]

ShardSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Shard:
    """One tar of a shard set.

    Attributes:
        url: Local path or URL, as given (or resolved from a manifest).
        num_samples: Samples in it; None when unknown (resampled reading only).
        sha256: Its checksum when a manifest records one.
        file: The manifest's entry for it (a name inside the manifest's folder), or None.
    """

    url: str
    num_samples: int | None
    sha256: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class ShardSet:
    """The shards a spec names, with what is known about them.

    Attributes:
        spec: The spec, for messages.
        shards: The tars, in the spec's order.
        classes: Class names from a ``fastssl shards`` manifest; empty otherwise (targets
            are then the integers found in the samples).
        manifest: The path of the manifest the set came from, or None.
    """

    spec: str
    shards: tuple[Shard, ...]
    classes: tuple[str, ...] = ()
    manifest: str | None = None

    @property
    def counted(self) -> bool:
        """Whether every shard's sample count is known (exactly-once reading)."""
        return all(s.num_samples is not None for s in self.shards)

    @property
    def num_samples(self) -> int:
        """Samples in all shards (0 when a count is unknown)."""
        return sum(s.num_samples or 0 for s in self.shards) if self.counted else 0


def is_remote(url: str) -> bool:
    """Whether ``url`` is read through a protocol (``scheme://`` or ``pipe:``), not a path."""
    return "://" in url or url.startswith("pipe:")


def _has_braces(spec: str) -> bool:
    return "{" in spec and ".." in spec and "}" in spec


def is_shard_spec(spec: ShardSpec) -> bool:
    """Whether ``spec`` names WebDataset tars *without* a manifest (a list, a pattern, a
    URL, a ``.tar`` or ``.txt`` file, or a folder holding ``.tar`` files and no images)."""
    if not isinstance(spec, str | os.PathLike):
        return True
    text = os.fspath(spec)
    if is_remote(text) or _has_braces(text):
        return True
    if os.path.isfile(text):
        return text.endswith((".tar", ".txt"))
    if os.path.isdir(text) and not os.path.exists(os.path.join(text, MANIFEST_NAME)):
        names = os.listdir(text)
        return any(n.endswith(".tar") for n in names)
    return False


def expand_spec(spec: ShardSpec) -> list[str]:
    """The shard URLs a spec names, in order (brace patterns expanded, folders listed).

    Raises:
        FileNotFoundError: For a local path that does not exist.
        ValueError: When the spec names no shard.
    """
    if not isinstance(spec, str | os.PathLike):
        return [url for item in spec for url in expand_spec(item)]
    text = os.fspath(spec)
    if _has_braces(text):
        import braceexpand

        urls = list(braceexpand.braceexpand(text))
    elif is_remote(text):
        urls = [text]
    elif os.path.isdir(text):
        urls = sorted(os.path.join(text, n) for n in os.listdir(text) if n.endswith(".tar"))
        if not urls:
            raise FileNotFoundError(
                f"data path {text!r} holds neither a {MANIFEST_NAME} (a `fastssl shards` "
                f"output) nor .tar files: nothing to read as WebDataset shards"
            )
    elif os.path.isfile(text) and text.endswith(".txt"):
        with open(text) as handle:
            lines = [line.strip() for line in handle]
        # Relative paths in a list are relative to the list's folder, not the working one.
        here = os.path.dirname(text)
        entries = [
            line if is_remote(line) or os.path.isabs(line) else os.path.join(here, line)
            for line in lines
            if line and not line.startswith("#")
        ]
        urls = [url for entry in entries for url in expand_spec(entry)]
    elif os.path.isfile(text):
        urls = [text]
    else:
        raise FileNotFoundError(f"data path {text!r} does not exist")
    if not urls:
        raise ValueError(f"data spec {text!r} names no shard")
    return urls


def open_shard(url: str) -> IO[bytes]:
    """Opens a shard for reading: a local file, WebDataset's ``gopen`` for ``http(s)://``
    and ``pipe:``, fsspec for every other protocol (``s3://``, ``gs://``, ...).

    Raises:
        FileNotFoundError: For a missing local file.
        ValueError: For a protocol nothing here can open (naming the package to install).
    """
    if not is_remote(url):
        return open(url, "rb")
    scheme = url.split(":", 1)[0]
    if scheme in ("http", "https", "pipe"):
        import webdataset

        stream: IO[bytes] = webdataset.gopen(url, "rb")
        return stream
    import fsspec

    try:
        opened = fsspec.open(url, "rb").open()
    except (ImportError, ValueError) as error:
        raise ValueError(
            f"shard {url}: cannot open the {scheme}:// protocol ({error}); install its fsspec "
            f"implementation (s3://: pip install s3fs)"
        ) from error
    stream_: IO[bytes] = opened
    return stream_


def member_key(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member as WebDataset and DALI group members: the key is
    the name up to the first dot of its last path component; None for a member without an
    extension or a hidden file (not part of a sample).

    Example:
        >>> member_key("train/000001.jpg"), member_key("train/000001.seg.png")
        (('train/000001', 'jpg'), ('train/000001', 'seg.png'))
    """
    base = name.rsplit("/", 1)[-1]
    dot = base.find(".")
    if dot <= 0:
        return None
    return name[: len(name) - len(base) + dot], base[dot + 1 :].lower()


def open_tar(handle: IO[bytes], stream: bool) -> tarfile.TarFile:
    """A tar over ``handle``: read forward only (``stream``: a URL) or with seeks (a file)."""
    if stream:
        return tarfile.open(fileobj=handle, mode="r|")
    return tarfile.open(fileobj=handle, mode="r:")


def _scan(url: str) -> int:
    """Samples in a tar, from its member headers (local data is seeked over, not read)."""
    keys, last = 0, None
    try:
        with open_shard(url) as handle, open_tar(handle, is_remote(url)) as archive:
            for member in archive:
                found = member_key(member.name) if member.isfile() else None
                if found is not None and found[0] != last:
                    keys, last = keys + 1, found[0]
    except tarfile.TarError as error:
        raise CorruptShardError(f"shard {url}: not a readable tar ({error})") from None
    return keys


def _index_count(url: str) -> int | None:
    """Samples from the DALI index beside a local tar (``NAME.idx``), or None."""
    if is_remote(url) or not url.endswith(".tar"):
        return None
    index = url[: -len(".tar")] + ".idx"
    try:
        with open(index) as handle:
            version, count = handle.readline().split()
        return int(count) if version.startswith("v") else None
    except (OSError, ValueError):
        return None


def _cache_file() -> str:
    return os.path.join(user_cache_dir(), "shard-counts.json")


def _cache_key(url: str) -> str:
    if is_remote(url):
        return url
    stat = os.stat(url)
    return f"{os.path.abspath(url)}:{stat.st_size}:{stat.st_mtime_ns}"


def count_samples(urls: Sequence[str], cache: bool = True) -> list[int]:
    """Samples per shard: from a DALI index beside a local tar, else a scan (cached).

    Args:
        urls: The shards.
        cache: Read and update the count cache (``$XDG_CACHE_HOME/fastssl/shard-counts.json``).

    Raises:
        CorruptShardError: When a shard is not a readable tar.
    """
    path = _cache_file()
    known: dict[str, int] = {}
    if cache and os.path.exists(path):
        try:
            with open(path) as handle:
                known = {k: int(v) for k, v in json.load(handle).items()}
        except (OSError, ValueError, AttributeError):
            known = {}  # a damaged cache is rebuilt, never trusted
    counts, added = [], False
    for url in urls:
        count = _index_count(url)
        if count is None:
            key = _cache_key(url)
            if key not in known:
                known[key], added = _scan(url), True
            count = known[key]
        counts.append(count)
    if cache and added:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            json.dump(known, handle)
        os.replace(tmp, path)
    return counts


def _from_manifest(root: str, verify: bool) -> ShardSet:
    manifest = read_manifest(root)
    where = os.path.join(root, MANIFEST_NAME)
    if manifest.get("format") != "webdataset":
        raise ManifestError(
            f"manifest {where}: holds format {manifest.get('format')!r}, not webdataset tars "
            f"(read an ffcv output with backend='ffcv')"
        )
    check_webdataset_manifest(manifest, where, verify)
    shards = tuple(
        Shard(
            shard_path(root, where, i, e["file"]), int(e["num_samples"]), e.get("sha256"), e["file"]
        )
        for i, e in enumerate(manifest["shards"])
    )
    return ShardSet(root, shards, tuple(manifest["classes"]), where)


def resolve_shards(
    spec: ShardSpec, *, count: bool = True, verify: bool = True, cache: bool = True
) -> ShardSet:
    """The shards ``spec`` names (see the module doc), with their sample counts.

    Args:
        spec: A ``fastssl shards`` folder, a folder / file / list / pattern of tars, URLs.
        count: Find every shard's sample count (index, cache or scan); False leaves unknown
            counts None (resampled reading).
        verify: For a manifest: require its sha256s (checked when the shards are read).
        cache: Use the count cache.

    Raises:
        FileNotFoundError: For a local path that does not exist.
        ManifestError: For a damaged manifest; UnsafeShardError for a manifest entry
            outside its folder.
        ValueError: When the spec names no shard.
        CorruptShardError: When a scanned shard is not a readable tar.
    """
    if isinstance(spec, str | os.PathLike):
        text = os.fspath(spec)
        if os.path.isdir(text) and os.path.exists(os.path.join(text, MANIFEST_NAME)):
            return _from_manifest(text, verify)
        description = text
    else:
        description = ", ".join(os.fspath(s) for s in spec)
    urls = expand_spec(spec)
    counts: Sequence[int | None] = count_samples(urls, cache) if count else [None] * len(urls)
    return ShardSet(description, tuple(Shard(u, c) for u, c in zip(urls, counts, strict=True)))
