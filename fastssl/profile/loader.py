"""The data side of ``fastssl profile``: the loader's images/s and where its time goes.

* :func:`measure_loader` times a loader (any backend) after a warm-up.
* :func:`torch_stages` splits the torch path into read, decode, augment, collate and
  copy to the device: each stage is timed per sample in this process, on one core, over a
  sample of images, and reported as milliseconds per batch.
* :func:`dali_stages` splits a DALI pipeline by ablation: DALI 2.4's
  ``executor_statistics()`` reports memory per operator, not time, so the pipeline is
  also run cut after its reader and after its decoder, and each stage costs the
  difference.
* :func:`max_side_speedup` measures what shrinking the images (``fastssl shards
  --max-side``) would save on decode and augmentation.

Example:
    >>> from fastssl.transforms import SimCLRTransform
    >>> loader = make_loader("images/", SimCLRTransform(input_size=32))  # doctest: +SKIP
    >>> images, seconds, per_batch = measure_loader(loader, batches=10, warmup=2)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import io
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from fastssl.data.loader import Loader, make_loader, view_specs_of
from fastssl.train.config import PretrainConfig

#: Images timed per stage by :func:`torch_stages` at most (scaled to the batch).
STAGE_SAMPLES = 64


@dataclass
class LoaderReport:
    """What ``--loader-only`` measured (the flat JSON report's fields)."""

    loader_images_per_s: float  # images (not views) per second after the warm-up
    backend: str  # the backend that ran ("auto" resolved)
    source_kind: str  # folder, webdataset or ffcv
    data: str
    transform: str  # class name of the transform
    transform_from: str  # "method" (its default_transform) or "class" (a transform class)
    views: list[list[int]]  # (3, h, w) of every view
    batch_size: int
    workers: int
    batches_measured: int
    warmup_batches: int
    seconds: float
    batch_ms_median: float
    batch_ms_p90: float
    cpu_count: int
    load_average: list[float] = field(default_factory=list)


def resolve_transform(method: str, input_size: int) -> tuple[Any, str]:
    """The multi-view transform ``method`` trains with at ``input_size``.

    A method name gives the method's own ``default_transform`` (what ``fastssl pretrain``
    runs), built as :func:`fastssl.profile.profiler.method_transform` builds it; a
    transform class name gives that class with its global views at ``input_size``.

    Args:
        method: A registered method name (``simclr``, ``dino``, ...) or a transform class
            name of :mod:`fastssl.transforms` (``SimCLRTransform``).
        input_size: Size of the (global) views in pixels.

    Returns:
        ``(transform, origin)``: origin is ``"method"`` or ``"class"``.

    Raises:
        ValueError: For a name that is neither, listing the known names.

    Example:
        >>> transform, origin = resolve_transform("SimCLRTransform", 32)
        >>> type(transform).__name__, origin
        ('SimCLRTransform', 'class')
    """
    from fastssl import methods
    from fastssl.profile.profiler import method_transform

    known = ", ".join(methods.list_methods())
    if is_transform_name(method):
        cls = getattr(importlib.import_module("fastssl.transforms"), method, None)
        if not isinstance(cls, type):
            raise ValueError(
                f"--method {method!r} is not a transform of fastssl.transforms; choose a method "
                f"({known}) or a *Transform class name"
            )
        return _build(cls, input_size), "class"
    try:
        methods.get(method)
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"--method {method!r} is unknown: choose one of {known} or a transform class "
            f"name such as SimCLRTransform"
        ) from error
    config = PretrainConfig(method=method)
    config.data.input_size = input_size
    return method_transform(config), "method"


def is_transform_name(name: str) -> bool:
    """Whether ``--method name`` names a transform class rather than a method."""
    return name[:1].isupper() or name.endswith("Transform")


# Keywords of the global view size, in the transform classes that do not call it input_size.
_SIZE_KEYWORDS = ("input_size", "global_crop_size", "random_size", "crop_sizes")


def _build(cls: type, input_size: int) -> Any:
    """``cls`` with its global views at ``input_size`` (local views keep their ratio)."""
    parameters = inspect.signature(cls).parameters
    if "view_1_transform" in parameters:  # BYOL-style: two asymmetric view transforms
        transforms = importlib.import_module("fastssl.transforms")
        prefix = cls.__name__.removesuffix("Transform")
        view_1 = getattr(transforms, f"{prefix}View1Transform")(input_size=input_size)
        view_2 = getattr(transforms, f"{prefix}View2Transform")(input_size=input_size)
        return cls(view_1_transform=view_1, view_2_transform=view_2)
    keyword = next((k for k in _SIZE_KEYWORDS if k in parameters), None)
    if keyword is None:
        raise ValueError(f"--method {cls.__name__}: the class takes none of {_SIZE_KEYWORDS}")
    if keyword == "crop_sizes":  # SwaV: the small crops keep their ratio to the large ones
        return cls(crop_sizes=(input_size, max(1, round(input_size * 96 / 224))))
    return cls(**{keyword: input_size})


def spec_size(spec: Any) -> list[int]:
    """``[h, w]`` of a ViewSpec's crop (``[-1, -1]``: the whole image, no fixed size)."""
    size = spec.crop_size
    if size is None:
        return [-1, -1]
    return [size, size] if isinstance(size, int) else list(size)


def view_shapes(transform: Any) -> list[list[int]]:
    """``[3, h, w]`` of every view of ``transform`` (empty when it has no ViewSpecs)."""
    try:
        specs = view_specs_of(transform)
    except ValueError:
        return []
    return [[3, *spec_size(spec)] for spec in specs]


def measure_loader(
    loader: Any,
    batches: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float, list[float]]:
    """Iterates ``loader`` (epoch after epoch) and times ``batches`` batches after ``warmup``.

    Returns:
        ``(images, seconds, per-batch seconds)`` of the measured batches.

    Raises:
        ValueError: For bad counts or a loader without a batch.

    Example:
        >>> images, seconds, times = measure_loader(loader, batches=5, warmup=1)  # doctest: +SKIP
    """
    if batches < 1 or warmup < 0:
        raise ValueError(f"batches={batches} must be >= 1 and warmup={warmup} >= 0")
    if len(loader) == 0:
        raise ValueError("the loader yields no batch: use a smaller --batch-size or more data")
    images, seen, epoch, times = 0, 0, 0, []
    start = last = clock()
    while True:
        loader.set_epoch(epoch)
        for views, _, _ in loader:
            now = clock()
            if seen < warmup:
                start = last = now  # the clock starts when the last warm-up batch arrives
            else:
                times.append(now - last)
                images += int(views[0].shape[0])
                last = now
            seen += 1
            if seen == warmup + batches:
                return images, last - start, times
        epoch += 1


def cpu_count() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def build_loader(
    config: PretrainConfig,
    transform: Any,
    *,
    backend: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> Loader:
    """The loader of one training process of ``config``, as ``fastssl pretrain`` builds it
    (:func:`fastssl.train.engine.build_training_loader`), for one process.

    Args:
        config: The recipe (data path, backend, workers, batch, seed).
        transform: The multi-view transform.
        backend: Overrides the recipe's backend (None: the one ``pretrain`` chooses).
        workers: Overrides ``data.num_workers`` (None: the recipe's, else all cores).
        batch_size: Overrides ``data.batch_size``.
        device: The training device; DALI decodes on it when it is a GPU.
    """
    from fastssl.train.engine import build_training_loader

    return build_training_loader(
        config,
        transform,
        backend=backend,
        num_workers=resolve_workers(config) if workers is None else workers,
        batch_size=batch_size or config.data.batch_size,
        device=device,
    )


def resolve_workers(config: PretrainConfig) -> int:
    """``data.num_workers``, or all cores when the recipe leaves it to the loader."""
    return cpu_count() if config.data.num_workers is None else config.data.num_workers


def close_loader(loader: Loader) -> None:
    """Stops the persistent worker processes of a torch loader now."""
    from fastssl.train.data import ResumableLoader

    ResumableLoader(loader).close()


def prefetch_depth(loader: Loader, workers: int) -> int:
    """Batches a loader prepares ahead (torch: 2 per worker; DALI: its queue of 2)."""
    return 2 * workers if loader.backend == "torch" else 2


def loader_rate(loader: Loader, batches: int, warmup: int, workers: int = 0) -> dict[str, float]:
    """Images/s of ``loader`` and its per-batch times (ms), via :func:`measure_loader`.

    The warm-up lasts at least the loader's prefetch depth: batches prepared ahead while
    the first one was awaited would otherwise arrive at once and inflate a short
    measurement. ``warmup`` in the result is the warm-up that ran.
    """
    warmup = max(warmup, prefetch_depth(loader, workers))
    images, seconds, times = measure_loader(loader, batches, warmup)
    ordered = sorted(times) or [0.0]
    return {
        "images_per_s": images / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "batches": len(times),
        "warmup": warmup,
        "batch_ms_median": 1000 * ordered[len(ordered) // 2],
        "batch_ms_p90": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


# ------------------------------------------------------------------------ stage split
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_ms(views: list[torch.Tensor], device: torch.device) -> float:
    """Milliseconds to move a batch's views to ``device`` (0 work on the CPU)."""
    _sync(device)
    start = time.perf_counter()
    moved = [view.to(device, non_blocking=True) for view in views]
    _sync(device)
    del moved
    return 1000 * (time.perf_counter() - start)


def _encoded_samples(source: str, kind: str, count: int) -> Iterator[tuple[float, bytes, int]]:
    """``(read seconds, encoded bytes, target)`` of ``count`` images of a source."""
    if kind == "folder":
        from fastssl.data.dataset import ImageFolderIndex

        samples = ImageFolderIndex(source).samples
        step = max(1, len(samples) // count)
        for i in range(count):
            path, target = samples[(i * step) % len(samples)]
            start = time.perf_counter()
            with open(path, "rb") as handle:
                data = handle.read()
            yield time.perf_counter() - start, data, target
        return
    from fastssl.data.manifest import (
        IMAGE_EXTENSIONS,
        MANIFEST_NAME,
        check_webdataset_manifest,
        read_manifest,
        shard_path,
    )
    from fastssl.data.webdataset_source import iter_shard

    manifest = read_manifest(source)
    where = os.path.join(source, MANIFEST_NAME)
    check_webdataset_manifest(manifest, where, verify=False)
    paths = [shard_path(source, where, i, s["file"]) for i, s in enumerate(manifest["shards"])]
    done = 0
    while done < count:
        before = done
        for path in paths:
            iterator = iter_shard(path)
            while done < count:
                start = time.perf_counter()
                sample = next(iterator, None)
                seconds = time.perf_counter() - start
                if sample is None:
                    break
                ext = next(e for e in IMAGE_EXTENSIONS if e in sample)
                yield seconds, sample[ext], int(sample.get("cls", b"0") or 0)
                done += 1
        if done == before:
            raise ValueError(f"{source}: the shards hold no sample")


def _loader_items(loader: Loader, count: int) -> tuple[list[float], list[Any]]:
    """Seconds per item of the loader's own dataset, run in this process, and the items.

    One more item than ``count`` is drawn and the first dropped: it warms the code paths
    (and fills a shard reader's shuffle buffer).
    """
    batches: Any = getattr(loader, "_batches")  # noqa: B009 (the Loader's DataLoader)
    dataset = batches.dataset
    if isinstance(dataset, IterableDataset):
        source: Iterator[Any] = iter(dataset)

        def item() -> Any:
            return next(source)
    else:
        keys = itertools.cycle(list(itertools.islice(iter(batches.sampler), count + 1)))

        def item() -> Any:
            return dataset[next(keys)]

    times, items = [], []
    for _ in range(count + 1):
        start = time.perf_counter()
        items.append(item())
        times.append(time.perf_counter() - start)
    return times[1:], items[1:]


def torch_stages(
    loader: Loader,
    source: str,
    kind: str,
    device: torch.device,
    samples: int = STAGE_SAMPLES,
) -> dict[str, Any]:
    """Per-batch milliseconds of read, decode, augment, collate and copy (torch path).

    The loader's own dataset and ``collate_fn`` run in this process on ``min(samples,
    batch size)`` images (one core, as in one worker), scaled to a batch: with W workers
    a batch takes about ``(read + decode + augment + collate) / W`` of wall time. Read and
    decode are timed apart on the same source's files (a plain read, a full PIL decode);
    augment is the rest of the dataset's per-sample time (decode is capped by it, as the
    batched engine decodes at reduced size). The batched engine augments color and blur in
    its ``collate_fn``, so there collate holds them.

    Args:
        loader: A ``backend="torch"`` :class:`~fastssl.data.loader.Loader`.
        source: Its image folder or ``fastssl shards`` WebDataset folder.
        kind: ``"folder"`` or ``"webdataset"``.
        device: Where the training step runs (the copy's destination).
        samples: Images timed at most.

    Returns:
        ``{"read_ms", "decode_ms", "augment_ms", "collate_ms", "copy_to_device_ms",
        "samples", "serial_images_per_s", "how"}``.
    """
    from PIL import Image

    batch_size = loader.batch_size
    count = max(1, min(samples, batch_size))
    item_times, items = _loader_items(loader, count)
    read = decode = 0.0
    for seconds, data, _ in _encoded_samples(source, kind, count):
        start = time.perf_counter()
        with Image.open(io.BytesIO(data)) as opened:
            opened.convert("RGB")
        decode += time.perf_counter() - start
        read += seconds
    per_item = sum(item_times) / count
    read_s = min(read / count, per_item)
    decode_s = min(decode / count, per_item - read_s)
    augment_s = per_item - read_s - decode_s
    collate_fn: Any = getattr(getattr(loader, "_batches"), "collate_fn")  # noqa: B009
    start = time.perf_counter()
    views, _, _ = collate_fn(items)
    collate_s = (time.perf_counter() - start) / count
    stages = {
        "read_ms": 1000 * read_s * batch_size,
        "decode_ms": 1000 * decode_s * batch_size,
        "augment_ms": 1000 * augment_s * batch_size,
        "collate_ms": 1000 * collate_s * batch_size,
        "copy_to_device_ms": copy_ms(list(views), device) * batch_size / count,
    }
    total = sum(stages.values())
    return {
        **stages,
        "samples": count,
        "serial_images_per_s": 1000 * batch_size / total if total > 0 else float("inf"),
        "how": (
            f"the loader's dataset and collate_fn timed in the main process on {count} "
            f"images (one core), scaled to a batch of {batch_size}; read and decode timed on "
            f"the files, augment is the rest of the per-sample time; copy to {device.type}"
            + (" is no copy" if device.type == "cpu" else "")
        ),
    }


def dali_stages(
    loader: Loader, batches: int, warmup: int, loader_batch_ms: float
) -> dict[str, Any]:
    """Per-batch milliseconds of a DALI loader's stages, by ablation.

    DALI 2.4's ``Pipeline.executor_statistics()`` reports the memory of each operator,
    not its time, so the pipeline is also run cut after its reader (read) and after its
    decoder (read + decode); each stage costs the difference with the previous cut, and
    ``iterator`` is the loader's batch time beyond the full graph (conversion to torch,
    and the pipeline's rebuild with a new seed at each epoch, which weighs on tiny
    datasets).

    Args:
        loader: A ``backend="dali"`` :class:`~fastssl.data.loader.Loader`.
        batches: Batches timed per cut pipeline.
        warmup: Batches run first.
        loader_batch_ms: The loader's measured median batch time.
    """
    from fastssl.data.engines.dali.pipeline import build_pipeline, import_dali
    from fastssl.data.manifest import DALI_IMAGE_EXTENSIONS

    dali = import_dali()
    fn, types = dali.fn, dali.types
    source: Any = getattr(loader, "_batches")  # noqa: B009 (the DaliBatches of the Loader)
    reader = source.reader
    common = {
        "random_shuffle": source.shuffle,
        "shard_id": source.shard_id,
        "num_shards": source.num_shards,
        "pad_last_batch": True,
        "name": "Reader",
        "seed": source.seed,
        "initial_fill": max(1, min(1024, reader.num_samples)),
    }

    def read() -> Any:
        if reader.kind == "folder":
            labels = list(range(reader.num_samples))
            encoded, _ = fn.readers.file(files=list(reader.files), labels=labels, **common)
            return encoded
        out = fn.readers.webdataset(
            paths=list(reader.tars),
            index_paths=list(reader.indexes),
            ext=[";".join(DALI_IMAGE_EXTENSIONS)],
            missing_component_behavior="error",
            **common,
        )
        return out[0] if isinstance(out, list | tuple) else out

    def decode() -> Any:
        return fn.decoders.image(read(), device=source.device, output_type=types.RGB)

    kwargs = {
        "batch_size": source.batch_size,
        "num_threads": source.num_threads,
        "device_id": source.device_id,
        "seed": source.seed,
    }
    cuts = {}
    for name, graph in (("read", read), ("decode", decode)):
        pipe = dali.pipeline_def(graph)(**kwargs)
        pipe.build()
        cuts[name] = _run_ms(pipe, batches, warmup)
    full = build_pipeline(
        reader,
        source.specs,
        batch_size=source.batch_size,
        num_threads=source.num_threads,
        device=source.device,
        device_id=source.device_id,
        seed=source.seed,
        fp16=source.dtype != torch.float32,
        roi_decode=source.roi_decode,
    )
    cuts["full"] = _run_ms(full, batches, warmup)
    return {
        "read_ms": cuts["read"],
        "decode_ms": max(cuts["decode"] - cuts["read"], 0.0),
        "augment_ms": max(cuts["full"] - cuts["decode"], 0.0),
        "collate_ms": "n/a: DALI assembles batches inside its graph",
        "iterator_ms": max(loader_batch_ms - cuts["full"], 0.0),
        "executor_statistics": (
            "unavailable: DALI 2.4's executor_statistics() reports memory per operator, not time"
        ),
        "how": (
            "ablation: the pipeline run cut after its reader and after its decoder "
            f"({batches} batches each, {source.num_threads} threads); a stage costs the "
            "difference with the previous cut (0 when within noise)"
        ),
    }


def _run_ms(pipe: Any, batches: int, warmup: int) -> float:
    for _ in range(warmup):
        pipe.run()
    start = time.perf_counter()
    for _ in range(batches):
        pipe.run()
    return 1000 * (time.perf_counter() - start) / max(batches, 1)


def max_side_speedup(
    transform: Callable[[Any], Any],
    source: str,
    kind: str,
    max_side: int,
    samples: int = 16,
) -> dict[str, Any] | None:
    """How much less CPU time a batch costs when the images are shrunk to ``max_side``.

    A sample of the source's images is written to a temporary folder twice, as is and
    re-encoded as ``fastssl shards --max-side`` would (JPEG, quality 90), and a torch
    loader of ``transform`` (the engine training uses) has its dataset and collate_fn
    timed on both, on one core.

    Args:
        transform: The training transform.
        source: Its image folder or shards folder.
        kind: ``"folder"`` or ``"webdataset"``.
        max_side: Longer side of the shrunk images, in pixels.
        samples: Images timed.

    Returns:
        ``{"max_side", "median_long_side", "before_ms", "after_ms", "speedup"}`` (ms per
        image), or None when the images are already no larger than ``max_side``.
    """
    from PIL import Image

    originals = [data for _, data, _ in _encoded_samples(source, kind, samples)]
    sides = []
    for data in originals:
        with Image.open(io.BytesIO(data)) as image:
            sides.append(max(image.size))
    median = sorted(sides)[len(sides) // 2]
    if median <= max_side:
        return None
    count = len(originals)

    def per_image_ms(folder: Path) -> float:
        copy = make_loader(
            folder, transform, backend="torch", batch_size=count, num_workers=0,
            shuffle=False, drop_last=False, seed=0, rank=0, world_size=1,
        )  # fmt: skip
        times, items = _loader_items(copy, count)
        start = time.perf_counter()
        getattr(copy, "_batches").collate_fn(items)  # noqa: B009
        return 1000 * (sum(times) + time.perf_counter() - start) / count

    with tempfile.TemporaryDirectory(prefix="fastssl-max-side-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        before.mkdir()
        after.mkdir()
        for index, data in enumerate(originals):
            with Image.open(io.BytesIO(data)) as image:
                ext = _EXTENSIONS.get(image.format or "", ".png")
                rgb = image.convert("RGB")
            (before / f"{index:05d}{ext}").write_bytes(data)
            scale = max_side / max(rgb.size)
            if scale < 1:
                size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
                rgb = rgb.resize(size, Image.Resampling.BICUBIC)
            rgb.save(after / f"{index:05d}.jpg", format="JPEG", quality=90)
        before_ms, after_ms = per_image_ms(before), per_image_ms(after)
    return {
        "max_side": max_side,
        "median_long_side": median,
        "before_ms": before_ms,
        "after_ms": after_ms,
        "speedup": before_ms / after_ms if after_ms > 0 else float("inf"),
    }


#: File extension of an image member by its PIL format (others are written as PNG).
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


__all__ = [
    "LoaderReport",
    "build_loader",
    "close_loader",
    "copy_ms",
    "cpu_count",
    "dali_stages",
    "loader_rate",
    "max_side_speedup",
    "measure_loader",
    "prefetch_depth",
    "resolve_transform",
    "resolve_workers",
    "spec_size",
    "torch_stages",
    "view_shapes",
]
