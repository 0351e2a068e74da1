"""``fastssl profile``: measures a data loader (and, later, compute and the full pipeline).

``fastssl profile --loader-only --data D --method M --input-size N --batch-size B
--workers W --backend K --json F`` builds the method's default multi-view transform,
loads ``D`` with backend ``K`` and measures images/s after ``--warmup`` batches (worker
start-up, pipeline build and JIT compilation excluded). It prints a table and writes
``{"loader_images_per_s": ..., "backend": ..., ...}`` to ``F``.

``--method`` takes a registered method name (its ``default_transform()``), or a
transform class name of :mod:`fastssl.transforms` (``SimCLRTransform``). Methods that
cannot be built here fall back to a table of their paper's transforms.

Example:
    $ fastssl profile --loader-only --data images/ --method simclr --batch-size 64 \\
        --backend dali --json loader.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Method name -> (transform class in fastssl.transforms, keyword of the global view size;
# "views:P" means the class takes PView1Transform / PView2Transform instances),
# used when the method's module is unavailable or cannot be built without a backbone.
METHOD_TRANSFORMS: dict[str, tuple[str, str]] = {
    "aim": ("AIMTransform", "input_size"),
    "barlowtwins": ("BYOLTransform", "views:BYOL"),
    "byol": ("BYOLTransform", "views:BYOL"),
    "dcl": ("SimCLRTransform", "input_size"),
    "dclw": ("SimCLRTransform", "input_size"),
    "densecl": ("DenseCLTransform", "input_size"),
    "dino": ("DINOTransform", "global_crop_size"),
    "mae": ("MAETransform", "input_size"),
    "moco": ("MoCoV2Transform", "input_size"),
    "msn": ("MSNTransform", "random_size"),
    "nnclr": ("SimCLRTransform", "input_size"),
    "pmsn": ("MSNTransform", "random_size"),
    "simclr": ("SimCLRTransform", "input_size"),
    "simmim": ("MAETransform", "input_size"),
    "simsiam": ("SimSiamTransform", "input_size"),
    "swav": ("SwaVTransform", "crop_sizes"),
    "tico": ("TiCoTransform", "views:TiCo"),
    "vicreg": ("VICRegTransform", "input_size"),
}


@dataclass
class LoaderReport:
    """What ``--loader-only`` measured (the JSON report's fields)."""

    loader_images_per_s: float  # images (not views) per second after the warm-up
    backend: str  # the backend that ran ("auto" resolved)
    source_kind: str  # folder, webdataset or ffcv
    data: str
    transform: str  # class name of the transform
    transform_from: str  # "method" (default_transform) or "table" / "class"
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

    Args:
        method: A method name (``simclr``, ``dino``, ...) or a transform class name of
            :mod:`fastssl.transforms` (``SimCLRTransform``).
        input_size: Size of the (global) views in pixels.

    Returns:
        ``(transform, origin)``: origin is ``"class"``, ``"method"`` or ``"table"``.

    Raises:
        ValueError: For a name that is neither, listing the known names.
    """
    transforms = importlib.import_module("fastssl.transforms")
    if method[:1].isupper() or method.endswith("Transform"):
        cls = getattr(transforms, method, None)
        if not isinstance(cls, type):
            raise ValueError(
                f"--method {method!r} is not a transform of fastssl.transforms; choose a method "
                f"({', '.join(sorted(METHOD_TRANSFORMS))}) or a *Transform class name"
            )
        return _build(cls, _size_keyword(method), input_size), "class"
    key = method.lower().replace("-", "").replace("_", "")
    try:
        from fastssl import methods

        built = methods.get(key)(backbone=_TinyBackbone(), input_size=input_size, feature_dim=8)
        return built.default_transform(), "method"
    except Exception:
        pass
    if key not in METHOD_TRANSFORMS:
        raise ValueError(
            f"--method {method!r} is unknown: choose one of {', '.join(sorted(METHOD_TRANSFORMS))} "
            f"or a transform class name such as SimCLRTransform"
        )
    name, keyword = METHOD_TRANSFORMS[key]
    return _build(getattr(transforms, name), keyword, input_size), "table"


def _size_keyword(class_name: str) -> str:
    for name, keyword in METHOD_TRANSFORMS.values():
        if name == class_name:
            return keyword
    return "input_size"


def _build(cls: type, keyword: str, input_size: int) -> Any:
    if keyword.startswith("views:"):  # BYOL-style: two asymmetric view transforms
        transforms = importlib.import_module("fastssl.transforms")
        prefix = keyword.split(":", 1)[1]
        view_1 = getattr(transforms, f"{prefix}View1Transform")(input_size=input_size)
        view_2 = getattr(transforms, f"{prefix}View2Transform")(input_size=input_size)
        return cls(view_1_transform=view_1, view_2_transform=view_2)
    if keyword == "crop_sizes":  # SwaV: the small crops keep their ratio to the large ones
        return cls(crop_sizes=(input_size, max(1, round(input_size * 96 / 224))))
    return cls(**{keyword: input_size})


class _TinyBackbone:
    """Placeholder backbone: methods are built only to ask for their transform."""

    def __new__(cls) -> Any:
        import torch

        return torch.nn.Flatten()


def measure_loader(
    loader: Any,
    batches: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float, list[float]]:
    """Iterates ``loader`` (epoch after epoch) and times ``batches`` batches after ``warmup``.

    Returns:
        ``(images, seconds, per-batch seconds)`` of the measured batches.
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl profile``."""
    parser.add_argument(
        "--loader-only", action="store_true", help="measure the data loader alone (images/s)"
    )
    parser.add_argument("--data", required=True, help="image folder, shards folder or .beton")
    parser.add_argument(
        "--method",
        default="simclr",
        help="method name (its default transform) or a fastssl.transforms class name",
    )
    parser.add_argument("--input-size", type=int, default=224, help="global view size (px)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    parser.add_argument(
        "--workers", type=int, default=None, help="loader processes / threads (default: cores)"
    )
    parser.add_argument(
        "--backend", default="auto", choices=("auto", "torch", "dali", "ffcv"), help="loader"
    )
    parser.add_argument("--batches", type=int, default=20, help="batches measured")
    parser.add_argument("--warmup", type=int, default=3, help="batches run before measuring")
    parser.add_argument("--seed", type=int, default=0, help="seed of order and augmentation")
    parser.add_argument("--json", default=None, metavar="F", help="write the report to F")


def run(args: argparse.Namespace) -> int:
    """Runs ``fastssl profile``; returns the exit code."""
    if not args.loader_only:
        print(
            "fastssl profile: only --loader-only is available in this version; compute and "
            "full-pipeline profiling are on the roadmap",
            file=sys.stderr,
        )
        return 2
    try:
        report = profile_loader(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"fastssl profile: error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(asdict(report), handle, indent=1)
            handle.write("\n")
    return 0


def profile_loader(args: argparse.Namespace) -> LoaderReport:
    """Builds the loader the arguments describe and measures it."""
    from fastssl.data.loader import make_loader

    transform, origin = resolve_transform(args.method, args.input_size)
    workers = len(os.sched_getaffinity(0)) if args.workers is None else args.workers
    loader = make_loader(
        args.data,
        transform,
        backend=args.backend,
        batch_size=args.batch_size,
        num_workers=workers,
        seed=args.seed,
        rank=0,
        world_size=1,
    )
    images, seconds, times = measure_loader(loader, args.batches, args.warmup)
    ordered = sorted(times) or [0.0]
    views = [[3, *spec_size(spec)] for spec in getattr(transform, "view_specs", [])]
    return LoaderReport(
        loader_images_per_s=images / seconds if seconds > 0 else float("inf"),
        backend=loader.backend,
        source_kind=loader.kind,
        data=os.fspath(args.data),
        transform=type(transform).__name__,
        transform_from=origin,
        views=views,
        batch_size=args.batch_size,
        workers=workers,
        batches_measured=len(times),
        warmup_batches=args.warmup,
        seconds=seconds,
        batch_ms_median=1000 * ordered[len(ordered) // 2],
        batch_ms_p90=1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        cpu_count=len(os.sched_getaffinity(0)),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )


def spec_size(spec: Any) -> list[int]:
    size = spec.crop_size
    if size is None:
        return [-1, -1]  # the whole image: no fixed size
    return [size, size] if isinstance(size, int) else list(size)


def format_table(report: LoaderReport) -> str:
    """The report as a two-column table a person can read."""
    rows = [
        ("images/s", f"{report.loader_images_per_s:.1f}"),
        ("backend", f"{report.backend} ({report.source_kind})"),
        ("transform", f"{report.transform} [{report.transform_from}]"),
        ("views", ", ".join("x".join(map(str, v)) for v in report.views)),
        ("batch size / workers", f"{report.batch_size} / {report.workers}"),
        ("batches (warm-up)", f"{report.batches_measured} ({report.warmup_batches})"),
        ("batch ms median / p90", f"{report.batch_ms_median:.1f} / {report.batch_ms_p90:.1f}"),
        ("cpus / load average", f"{report.cpu_count} / {report.load_average}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
