"""The one contract of a ``fastssl shards`` output: names, image extensions, manifest reading.

``fastssl shards`` writes a folder holding ``manifest.json`` and either WebDataset tars
(``shard-NNNNNN.tar``, each with a DALI index ``shard-NNNNNN.idx``) or one FFCV file
(``dataset.beton``). Every reader (the torch engine's :mod:`~fastssl.data.webdataset_source`,
the DALI and FFCV engines, the loader's source detection, the profiler) reads the manifest
through :func:`read_manifest` and resolves shard files through :func:`shard_path`, so a
damaged or hostile manifest gets the same clear error everywhere, and nothing outside the
folder is ever opened.

Manifest fields (written by :func:`fastssl.data.shards.build_manifest`): ``format``
("webdataset" or "ffcv"), ``num_samples``, ``classes`` (class names; targets index it),
``shards`` (webdataset: a list of ``{"file", "index", "num_samples", "sha256", "bytes"}``)
and the conversion settings. Sample keys are the tar member names up to the first dot, as
WebDataset and DALI group members; a sample holds one image member (an extension of
:data:`SHARD_IMAGE_EXTENSIONS`), ``cls`` (the target as decimal text) and ``json``.

Example:
    >>> from fastssl.data.manifest import read_manifest
    >>> read_manifest("shards/")["num_samples"]  # doctest: +SKIP
    60000
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from fastssl.data.images import IMAGE_EXTENSIONS

__all__ = [
    "DALI_IMAGE_EXTENSIONS",
    "FFCV_NAME",
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "SHARD_IMAGE_EXTENSIONS",
    "CorruptShardError",
    "ManifestError",
    "ShardChecksumError",
    "ShardError",
    "UnsafeShardError",
    "check_webdataset_manifest",
    "read_manifest",
    "shard_path",
]

MANIFEST_NAME = "manifest.json"
FFCV_NAME = "dataset.beton"
#: What DALI's image decoder reads: every extension fastssl reads but GIF.
DALI_IMAGE_EXTENSIONS: tuple[str, ...] = tuple(e for e in IMAGE_EXTENSIONS if e != "gif")
#: The image members ``fastssl shards`` writes: only formats every engine decodes (a GIF is
#: stored as PNG), so DALI never meets a sample without an image it can read.
SHARD_IMAGE_EXTENSIONS: tuple[str, ...] = DALI_IMAGE_EXTENSIONS
_CONVERT_AGAIN = "convert the images again with `fastssl shards`"


class ShardError(ValueError):
    """A shards folder that cannot be read as it is; the message names the file and member."""


class UnsafeShardError(ShardError):
    """What could escape or fool a reader: a tar member that is absolute, ``..``, a link or a
    device, or a manifest entry outside the shards folder or not a regular file."""


class ShardChecksumError(ShardError):
    """A shard's sha256 differs from the one in its manifest."""


class ManifestError(ShardError):
    """A ``manifest.json`` that is not valid JSON or lacks what a reader needs."""


class CorruptShardError(ShardError):
    """A shard or sample that cannot be read: a broken tar, an oversized member, an image
    that does not decode, a bad ``.cls``, a sample without an image."""


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``root/manifest.json`` (any format) as a JSON object.

    Raises:
        FileNotFoundError: When there is no ``manifest.json``.
        ManifestError: When it is not a regular file, not UTF-8 JSON or not an object.
    """
    path = os.path.join(os.fspath(root), MANIFEST_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: root={os.fspath(root)!r} is not a finished `fastssl shards` output"
        )
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ManifestError(f"manifest {path}: is not a regular file; {_CONVERT_AGAIN}")
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(
            f"manifest {path}: not valid UTF-8 JSON ({error}); the file is damaged: "
            f"{_CONVERT_AGAIN}"
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"manifest {path}: holds a JSON {type(data).__name__}, not an object; {_CONVERT_AGAIN}"
        )
    return data


def check_webdataset_manifest(manifest: dict[str, Any], path: str, verify: bool) -> None:
    """Checks the fields the WebDataset readers use; raises :class:`ManifestError`.

    Args:
        manifest: The parsed ``manifest.json`` (:func:`read_manifest`).
        path: Its path, for messages.
        verify: Also require each shard's ``sha256``.
    """

    def fail(problem: str) -> ManifestError:
        return ManifestError(f"manifest {path}: {problem}; {_CONVERT_AGAIN}")

    classes = manifest.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise fail("has no 'classes' list (of class names)")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise fail("has no 'shards' list")
    for index, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise fail(f"shard {index} is {entry!r}, not an object")
        count = entry.get("num_samples")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise fail(f"shard {index} has num_samples={count!r}, not a count")
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            raise fail(f"shard {index} has file={entry.get('file')!r}, not a file name")
        if verify and not isinstance(entry.get("sha256"), str):
            raise fail(f"shard {index} has no sha256 (pass verify=False to read it unchecked)")


def shard_path(root: str, manifest_path: str, index: int, file: str) -> str:
    """The resolved path of the manifest's shard ``index``, checked to be safe to open.

    Raises:
        UnsafeShardError: When ``file`` resolves (symbolic links followed) outside
            ``root`` or to anything but a regular file (a FIFO or ``/dev/zero`` would
            hang a reader).
        ManifestError: When the file is missing.
    """
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, file))
    where = f"manifest {manifest_path}: shard {index} file {file!r}"
    if os.path.commonpath([real_root, path]) != real_root or path == real_root:
        raise UnsafeShardError(
            f"{where} is outside the shards folder {real_root} (it resolves to {path}); "
            f"refusing to read it: a manifest lists shards inside its own folder"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ManifestError(f"{where} is missing; {_CONVERT_AGAIN}") from None
    if not stat.S_ISREG(mode):
        raise UnsafeShardError(f"{where} is not a regular file; refusing to read it")
    return path
