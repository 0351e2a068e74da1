"""One entry point for training data: ``make_loader(source, transform, backend=...)``.

Sources: an image folder (with or without class subfolders), a ``fastssl shards``
WebDataset output folder (``manifest.json`` + tars), or an FFCV ``.beton``. Every backend
yields batches with one structure, ``(views, targets, keys)``: ``views`` a list of
(B, 3, h, w) float tensors (one per view), ``targets`` a (B,) long tensor, ``keys`` a list
of B strings (file names or shard keys).

Engines (side by side in :mod:`fastssl.data.engines`, each turning ViewSpecs and a source
into batches; this module only picks one):

* ``"torch"`` (:mod:`~fastssl.data.engines.batched`): DataLoader workers, for folders and
  shards; works everywhere. A transform built from ViewSpecs runs batched (crop while
  decoding, then color and blur on whole batches, several times faster than torchvision
  per sample); any other callable runs per sample, as in lightly.
* ``"dali"`` (:mod:`~fastssl.data.engines.dali`): the ViewSpecs compiled into an NVIDIA
  DALI pipeline, for folders and local shards; ``dali_device="mixed"`` decodes on the GPU.
* ``"ffcv"`` (:mod:`~fastssl.data.engines.ffcv`): one FFCV loader over a ``.beton`` that
  reads and decodes each image once and makes all its views in numba-compiled code (every
  ViewSpec operation). A transform without ViewSpecs (views made per sample, e.g. with
  grids or masks) falls back to torch workers calling it on the ``.beton``'s images.
* ``"auto"``: the fastest engine for the source and the training device
  (:func:`resolve_backend`): FFCV for a ``.beton``; DALI (decoding on the GPU) when
  training on a GPU and DALI is installed; the batched torch engine on a CPU, where it
  outran DALI's CPU mode (750 vs 286 images/s, 224 px SimCLR pairs from shards, 2 workers).
  A GPU run that falls back to torch (DALI missing, a transform without ViewSpecs) warns.

Every engine replaces an image it cannot read by a readable one, warns once naming the
file and counts it (``Loader.num_unreadable``).

Example:
    >>> from fastssl.transforms import SimCLRTransform
    >>> transform = SimCLRTransform(input_size=32)
    >>> loader = make_loader("images/", transform, batch_size=64)  # doctest: +SKIP
    >>> for views, targets, keys in loader: ...  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fastssl.data.dataset import LightlyDataset
from fastssl.data.engines.base import Loader, SourceKind
from fastssl.data.engines.batched import (
    BatchedViewCollate,
    BatchRecycler,
    EpochSampler,
    SeededItems,
    ViewDecoder,
)
from fastssl.data.engines.ffcv import FFCVViews
from fastssl.data.manifest import MANIFEST_NAME, read_manifest
from fastssl.data.multi_view_collate import MultiViewCollate
from fastssl.data.sources import ShardSpec, is_shard_spec
from fastssl.data.webdataset_source import WebDatasetSource
from fastssl.transforms.view_spec import ViewSpec
from fastssl.utils import dist

Backend = Literal["auto", "torch", "dali", "ffcv"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "dali", "ffcv")


def detect_source(source: ShardSpec) -> SourceKind:
    """Tells what kind of data ``source`` is.

    ``"webdataset"`` for a ``fastssl shards`` folder and for every shard spec of
    :func:`fastssl.data.sources.resolve_shards` (tars local or remote, patterns, lists);
    ``"ffcv"`` for a ``.beton``; ``"folder"`` for an image folder.

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If it is an empty folder or a file of an unknown kind.
    """
    if is_shard_spec(source):
        return "webdataset"
    assert isinstance(source, str | os.PathLike)  # a list is a shard spec
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix == ".beton":
            return "ffcv"
        raise ValueError(
            f"data path {str(path)!r} is a file: pass an image folder, shards (a folder, "
            f".tar, .txt list, pattern or URL of WebDataset tars) or a .beton"
        )
    manifest = path / MANIFEST_NAME
    if manifest.exists():
        kind = read_manifest(path).get("format")  # ManifestError names a damaged file
        if kind in ("webdataset", "ffcv"):
            return kind
        raise ValueError(f"{manifest}: unknown format {kind!r}")
    if next(path.iterdir(), None) is None:
        raise ValueError(f"data path {str(path)!r} is an empty folder: no images to train on")
    return "folder"


@dataclass(frozen=True)
class BackendChoice:
    """The data engine that runs, and why (for the start-of-run report and summaries).

    Attributes:
        name: ``"torch"``, ``"dali"`` or ``"ffcv"``.
        reason: Why this engine, in a few words.
        fallback: True when a faster engine was wanted but cannot run here (the caller
            announces it); False for the first choice.
    """

    name: str
    reason: str
    fallback: bool = False


def _on_gpu(device: str | torch.device) -> bool:
    """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"gpu"``, a torch.device)
    is a GPU."""
    return str(device) == "gpu" or torch.device(device).type == "cuda"


def resolve_backend(
    backend: str,
    kind: SourceKind,
    device: str | torch.device = "cpu",
    transform: Any = None,
    source: ShardSpec | None = None,
    label_key: str = "cls",
) -> BackendChoice:
    """The engine that ``backend`` means for a ``kind`` source trained on ``device``.

    The one rule behind ``backend="auto"`` (``make_loader``, ``fastssl pretrain`` and
    ``fastssl profile`` all call it):

    * a ``.beton``: FFCV; for a transform without ViewSpecs (FFCV compiles ViewSpecs), torch
      workers calling it per sample on the ``.beton``'s images (a fallback when FFCV was
      asked for, or when training on a GPU);
    * a transform without ViewSpecs: torch, calling it per sample (DALI and the batched
      engine compile ViewSpecs);
    * training on a GPU: DALI when installed (decoding and augmenting on the GPU), else
      torch, marked as a fallback;
    * training on a CPU: the batched torch engine, faster there than DALI's CPU mode
      (750 vs 286 images/s measured for 224 px SimCLR pairs from shards, 2 workers).

    An explicit backend is honoured (checked against the source kind), but for DALI on
    tars it cannot read: DALI reads image folders, ``fastssl shards`` folders and local tars
    with DALI index files whose samples all hold a ``.cls`` member
    (:func:`~fastssl.data.engines.dali.pipeline.dali_cannot_read`); other WebDataset tars
    (remote, without indexes) fall back to the torch engine, marked as a fallback so that
    the caller announces it.

    Args:
        backend: ``"auto"``, ``"torch"``, ``"dali"`` or ``"ffcv"``.
        kind: The source kind (:func:`detect_source`).
        device: Where training runs: ``"cpu"``, ``"cuda"`` (or ``"gpu"``, a torch.device).
        transform: The multi-view transform, when known: one without ViewSpecs keeps
            ``"auto"`` on torch.
        source: The data, when known: tars DALI cannot read keep it on torch.
        label_key: Where shard targets come from (``data.label_key``): DALI reads ``.cls``.

    Returns:
        A :class:`BackendChoice` (engine, reason, whether it is a fallback).

    Raises:
        ValueError: For an unknown backend or one that cannot read ``kind``.

    Example:
        >>> resolve_backend("auto", "folder", "cpu").name
        'torch'
        >>> resolve_backend("auto", "ffcv", "cuda").name
        'ffcv'
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
    per_sample = transform is not None and not _has_view_specs(transform)
    if (
        kind == "ffcv"
        and backend not in ("auto", "ffcv")
        and not (backend == "torch" and per_sample)
    ):
        raise ValueError(f"backend={backend!r} cannot read an FFCV .beton: use backend='ffcv'")
    if kind != "ffcv" and backend == "ffcv":
        raise ValueError(
            f"backend='ffcv' reads .beton files, not a {kind} source: convert it with "
            f"`fastssl shards --format ffcv`, or use backend='dali' or 'torch'"
        )

    def dali_cannot_read() -> str | None:
        if source is None or kind != "webdataset":
            return None
        from fastssl.data.engines.dali.pipeline import dali_cannot_read as reason

        return reason(source, label_key)

    if backend == "dali" and (why := dali_cannot_read()) is not None:
        return BackendChoice(
            "torch",
            f"backend=dali was asked for, but DALI cannot read these tars ({why}): "
            f"the torch engine reads them",
            fallback=True,
        )
    gpu = _on_gpu(device)
    if kind == "ffcv" and per_sample:
        return BackendChoice(
            "torch",
            f"{type(transform).__name__} is not built from ViewSpecs (it makes its views per "
            f"sample), so FFCV cannot compile it: torch workers call it on the .beton's images",
            fallback=backend == "ffcv" or gpu,
        )
    if backend != "auto":
        return BackendChoice(backend, f"backend={backend} was asked for")
    if kind == "ffcv":
        return BackendChoice("ffcv", "a .beton is read by FFCV")
    if transform is not None and not _has_view_specs(transform):
        return BackendChoice(
            "torch",
            "the transform has no ViewSpecs, so it runs per sample in torch workers"
            + (" (DALI cannot compile it)" if gpu else ""),
            fallback=gpu,
        )
    if not gpu:
        return BackendChoice(
            "torch", "training on CPU: the batched torch engine outruns DALI's CPU mode"
        )
    from fastssl.data.engines.dali.pipeline import dali_available

    if (why := dali_cannot_read()) is not None:
        return BackendChoice(
            "torch",
            f"training on a GPU, but DALI cannot read these tars ({why}): the torch engine "
            f"reads them",
            fallback=True,
        )
    if dali_available():
        return BackendChoice("dali", "training on a GPU: DALI decodes and augments on it")
    return BackendChoice(
        "torch",
        "training on a GPU but NVIDIA DALI is not installed (pip install "
        "nvidia-dali-cuda120): the batched torch engine on CPU workers instead",
        fallback=True,
    )


def _has_view_specs(transform: Any) -> bool:
    try:
        view_specs_of(transform)
    except ValueError:
        return False
    return True


def training_device(device: str | torch.device | None, dali_device: str | None) -> str:
    """The training device ``make_loader`` assumes: ``device``, else ``"cuda"`` when DALI
    decodes on the GPU (``dali_device="mixed"``) or CUDA is available, else ``"cpu"``."""
    if device is not None:
        return "cuda" if _on_gpu(device) else "cpu"
    if dali_device == "mixed" or torch.cuda.is_available():
        return "cuda"
    return "cpu"


def view_specs_of(transform: Any) -> list[ViewSpec]:
    """The ViewSpecs the DALI / FFCV engines compile from ``transform``.

    Accepts a multi-view transform (``.view_specs``), a single view (``.view_spec``), a
    ViewSpec or a list of ViewSpecs.

    Raises:
        ValueError: If ``transform`` carries no ViewSpec.
    """
    if isinstance(transform, ViewSpec):
        return [transform]
    if (
        isinstance(transform, Sequence)
        and transform
        and all(isinstance(spec, ViewSpec) for spec in transform)
    ):
        return list(transform)
    if hasattr(transform, "view_specs"):
        return list(transform.view_specs)
    spec = getattr(transform, "view_spec", None)
    if isinstance(spec, ViewSpec):
        return [spec]
    raise ValueError(
        f"transform={transform!r} has no view_specs: backends 'dali' and 'ffcv' compile "
        f"fastssl transforms built from ViewSpecs; use backend='torch' for other callables"
    )


def make_loader(
    source: ShardSpec,
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
    dali_device: Literal["cpu", "mixed"] | None = None,
    dtype: torch.dtype = torch.float32,
    batched: bool | None = None,
    device: str | torch.device | None = None,
    label_key: str = "cls",
    resampled: bool = False,
    num_samples: int | None = None,
) -> Loader:
    """Builds the training loader for ``source``.

    Args:
        source: Image folder, ``fastssl shards`` folder, ``.beton`` file, or any WebDataset
            tars (:func:`fastssl.data.sources.resolve_shards`: a folder, ``.tar``, ``.txt``
            list, brace pattern or list of them; ``http(s)://``, ``s3://``, ``pipe:`` URLs).
        transform: The multi-view transform (e.g. ``SimCLRTransform(...)``); engines other
            than torch compile its ``view_specs``.
        backend: ``"auto"``, ``"torch"``, ``"dali"`` or ``"ffcv"``; ``"auto"`` picks by
            source and training device (:func:`resolve_backend`) and warns when a GPU run
            falls back to torch.
        batch_size: Samples per batch on this process.
        num_workers: Loader processes (torch) or threads (DALI, FFCV); default: the usable
            CPU cores.
        shuffle: Shuffle every epoch (seeded by ``seed`` and the epoch).
        drop_last: Drop the last incomplete batch (contrastive losses want full batches).
        seed: Seed of the data order and of the augmentations (DALI; torch batched engine).
        rank: This process's rank (default: from torch.distributed).
        world_size: Number of processes (default: from torch.distributed).
        strict: Raise on an unreadable image or shard sample instead of replacing it with a
            warning (torch backend; folders and shards).
        dali_device: ``"cpu"`` or ``"mixed"`` (decode on the GPU of this rank) for DALI;
            None: ``"mixed"`` when ``device`` is a GPU or ``"auto"`` infers one, else
            ``"cpu"``.
        dtype: Dtype of the views: float32 (every backend), float16 or bfloat16 (DALI, FFCV,
            and torch's batched engine).
        batched: torch backend: run the batched engine (None: whenever ``transform`` is
            built from ViewSpecs) or, with False, call ``transform`` on every sample.
        device: The training device (``"cpu"``, ``"cuda"``), which ``"auto"`` and
            ``dali_device`` follow; None: ``"cuda"`` when ``dali_device="mixed"`` or CUDA
            is available (see :func:`training_device`).
        label_key: WebDataset tars: where the class index is (``"cls"``, ``"json:FIELD"``,
            ``"none"``; :func:`fastssl.data.webdataset_source.sample_target`).
        resampled: WebDataset tars: draw shards at random with replacement, an epoch being
            ``num_samples`` samples (streams whose counts are unknown).
        num_samples: The epoch length in resampled mode (all processes together).

    Returns:
        A :class:`Loader`.

    Raises:
        ValueError: For an unknown backend, one that cannot read this source, or a view
            the backend cannot express.
        FileNotFoundError: When ``source`` does not exist.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    kind = detect_source(source)
    on = training_device(device, dali_device)
    choice = resolve_backend(backend, kind, on, transform, source, label_key)
    if choice.fallback:
        warnings.warn(f"backend={backend} chose {choice.name}: {choice.reason}", stacklevel=2)
    chosen = choice.name
    # A list of shards is WebDataset tars, which only the torch engine reads (see above).
    path = cast("str | os.PathLike[str]", source)
    if dali_device is None:  # an explicit backend="dali" without a device keeps "cpu"
        dali_device = (
            "mixed" if on == "cuda" and (device is not None or backend == "auto") else "cpu"
        )
    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    workers = len(os.sched_getaffinity(0)) if num_workers is None else num_workers
    specs = _batched_specs(transform, batched) if chosen == "torch" and kind != "ffcv" else None
    if chosen == "torch" and specs is None and dtype != torch.float32:
        raise ValueError(
            f"dtype={dtype} needs backend='dali' or 'ffcv', or a transform built from "
            f"ViewSpecs (batched engine); backend='torch' per sample gives float32"
        )
    if chosen == "dali":
        from fastssl.data.engines.dali.iterator import dali_loader

        return dali_loader(
            path, view_specs_of(transform), kind, batch_size=batch_size, threads=workers,
            shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size,
            device=dali_device, dtype=dtype, strict=strict,
        )  # fmt: skip
    if chosen == "ffcv":
        batches = FFCVViews(
            path, view_specs_of(transform), batch_size=batch_size, num_workers=max(workers, 1),
            shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size,
            dtype=dtype,
        )  # fmt: skip
        return Loader(batches, kind, "ffcv", batches.set_epoch, batch_size)
    if kind == "ffcv":  # a transform FFCV cannot compile: called per sample on the images
        from fastssl.data.ffcv_source import BetonImages

        images = BetonImages(path, transform)
        beton_sampler: DistributedSampler[Any] = DistributedSampler(
            cast(Dataset[Any], images), num_replicas=world_size, rank=rank, shuffle=shuffle,
            seed=seed, drop_last=drop_last,
        )  # fmt: skip
        beton_loader: DataLoader[Any] = DataLoader(
            cast(Dataset[Any], images), sampler=beton_sampler, batch_size=batch_size,
            num_workers=workers, collate_fn=MultiViewCollate(), drop_last=drop_last,
            persistent_workers=workers > 0, worker_init_fn=_init_worker,
        )  # fmt: skip
        return Loader(beton_loader, kind, "torch", beton_sampler.set_epoch)
    decoder = None if specs is None else ViewDecoder(specs)
    recycler = BatchRecycler(workers) if specs is not None and workers > 0 else None
    collate: Any = MultiViewCollate()
    if specs is not None:
        collate = BatchedViewCollate(specs, dtype, recycler=recycler)
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": workers,
        "collate_fn": collate,
        "drop_last": drop_last,
        "persistent_workers": workers > 0,
        "worker_init_fn": _init_worker,
    }
    if kind == "webdataset":
        shards = WebDatasetSource(
            source,
            transform=transform if decoder is None else decoder,
            seed=seed,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
            strict=strict,
            label_key=label_key,
            resampled=resampled,
            num_samples=num_samples,
            batch_size=batch_size,  # workers split at whole batches: none is dropped
        )
        return Loader(
            DataLoader(shards, **common), kind, "torch", shards.set_epoch, recycler=recycler
        )
    # LightlyDataset (like lightly's) is a map-style dataset without the Dataset base class.
    folder = LightlyDataset(
        os.fspath(path), transform if decoder is None else decoder, strict=strict
    )
    dataset = cast(Dataset[Any], folder)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    generator = torch.Generator().manual_seed(seed)
    if decoder is not None:
        # Items (index, epoch): each sample's augmentation is seeded by (seed, epoch, index).
        items = EpochSampler(sampler)
        loader: DataLoader[Any] = DataLoader(
            SeededItems(folder, decoder, seed), sampler=items, generator=generator, **common
        )
        return Loader(loader, kind, "torch", items.set_epoch, recycler=recycler)
    loader = DataLoader(dataset, sampler=sampler, generator=generator, **common)
    return Loader(loader, kind, "torch", sampler.set_epoch)


def _batched_specs(transform: Any, batched: bool | None) -> list[ViewSpec] | None:
    """The ViewSpecs the batched engine runs, or None for per-sample ``transform`` calls.

    Raises:
        ValueError: With ``batched=True`` and a transform that carries no ViewSpecs.
    """
    if batched is False:
        return None
    try:
        return view_specs_of(transform)
    except ValueError as error:
        if batched:
            raise ValueError(
                f"batched=True needs a transform built from ViewSpecs, but {error}; pass "
                f"batched=None or False to call this transform on every sample"
            ) from error
        return None


def _init_worker(worker_id: int) -> None:
    # Intra-op threads in every worker would oversubscribe the cores the workers share.
    torch.set_num_threads(1)
