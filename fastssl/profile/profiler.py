"""One profiling session: measure the halves, the pipeline and the alternatives, then judge.

:func:`profile_run` is what ``fastssl profile`` runs for a recipe:

1. the loader alone (images/s, and its per-stage split),
2. the compute alone, on in-memory batches of the loader's shapes (forward, loss,
   backward, optimizer),
3. the full pipeline (images/s, fraction of each step waiting for data),
4. the alternatives the advice quotes, each measured here: more loader workers or
   threads, the DALI backend, images shrunk to ``--max-side``, ``torch.compile``,
   channels_last, bf16 autocast, a doubled batch,
5. a ``torch.profiler`` trace of a few iterations,

and returns a :class:`~fastssl.profile.report.ProfileReport`. ``mode="loader"`` or
``"compute"`` runs only that half (and its alternatives).

Example:
    >>> from fastssl.train.config import load_config
    >>> report = profile_run(load_config("pipelines/simclr.yaml"), ProfileOptions())
    ... # doctest: +SKIP
    >>> report.bound, report.advice[0].change  # doctest: +SKIP
    ('input', '--backend dali')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import record_function

from fastssl.data.loader import Loader, detect_source
from fastssl.profile.compute import (
    PRECISIONS,
    ComputeHarness,
    ComputeResult,
    is_out_of_memory,
    resolve_device,
)
from fastssl.profile.loader import (
    LoaderReport,
    build_loader,
    close_loader,
    copy_ms,
    cpu_count,
    dali_stages,
    loader_rate,
    max_side_speedup,
    resolve_workers,
    torch_stages,
    view_shapes,
)
from fastssl.profile.pipeline import (
    PipelineResult,
    endless,
    measure_pipeline,
    to_device,
    write_trace,
)
from fastssl.profile.report import (
    MIN_GAIN,
    Option,
    ProfileReport,
    advise,
    judge,
)
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import choose_backend

#: Alternatives ``--variants`` can name; ``auto`` is all of them but compile on the CPU.
VARIANTS: tuple[str, ...] = (
    "workers",
    "dali",
    "max_side",
    "compile",
    "channels_last",
    "bf16",
    "batch",
)
MODES: tuple[str, ...] = ("full", "loader", "compute")


@dataclass
class ProfileOptions:
    """How to profile (what to measure, for how long, where to write)."""

    mode: str = "full"  # "full", "loader" (the loader alone) or "compute" (compute alone)
    steps: int = 20  # measured batches / steps of every measurement
    warmup: int = 3  # batches / steps run before each measurement
    variants: Sequence[str] | None = None  # alternatives measured (None: auto)
    trace_steps: int = 3  # iterations recorded in trace.json (0: no trace)
    out: Path | None = None  # folder of trace.json (the CLI writes the rest)
    transform: Any = None  # the transform to load with (None: the method's own)
    transform_from: str = "method"  # where it came from: method, table or class


def parse_variants(text: str) -> tuple[str, ...] | None:
    """``--variants``: ``auto`` (None), ``none`` or a comma list of :data:`VARIANTS`.

    Raises:
        ValueError: Naming the unknown entries.

    Example:
        >>> parse_variants("bf16, channels-last"), parse_variants("auto")
        (('bf16', 'channels_last'), None)
    """
    text = text.strip().lower()
    if text == "auto":
        return None
    if text in ("none", ""):
        return ()
    chosen = tuple(part.strip().replace("-", "_") for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in VARIANTS]
    if unknown:
        raise ValueError(
            f"--variants {', '.join(unknown)}: unknown; choose from auto, none or "
            f"{', '.join(VARIANTS)}"
        )
    return chosen


def method_transform(config: PretrainConfig) -> Any:
    """The default transform of the recipe's method, as ``fastssl pretrain`` builds it.

    The method is built whole, backbone included: its views may depend on the backbone
    (DINO's local crops are a whole number of patches), so a placeholder backbone could
    give other views than the run's.
    """
    from fastssl import methods
    from fastssl.train.engine import method_kwargs

    return methods.get(config.method)(**method_kwargs(config)).default_transform(**config.views)


def check_data(config: PretrainConfig) -> str:
    """The data's kind; a clear error for an empty, missing or unknown ``data.path``."""
    if not config.data.path:
        raise ValueError("data.path is empty: pass --data PATH (an image folder or shards)")
    return detect_source(config.data.path)


class _Session:
    """The state of one :func:`profile_run` (loaders are closed at the end)."""

    def __init__(self, config: PretrainConfig, options: ProfileOptions) -> None:
        self.config, self.options = config, options
        self.device = resolve_device(config.trainer.accelerator)
        self.loaders: list[Loader] = []
        self.warnings: list[str] = []
        # data.batch_size is the global batch: one process of N gets 1/N of it.
        processes = max(config.trainer.devices * config.trainer.num_nodes, 1)
        self.batch = max(config.data.batch_size // processes, 1)
        if processes > 1:
            self.warnings.append(
                f"profiled one of {processes} processes: a batch of {self.batch} of the "
                f"global {config.data.batch_size}, without their communication"
            )
        chosen = options.variants
        if chosen is None:
            chosen = [v for v in VARIANTS if v != "compile" or self.device.type == "cuda"]
        self.variants = set(chosen)

    def loader(self, transform: Any, **kwargs: Any) -> Loader:
        kwargs.setdefault("batch_size", self.batch)
        loader = build_loader(self.config, transform, device=self.device, **kwargs)
        self.loaders.append(loader)
        return loader

    def rate_of(self, transform: Any, workers: int, **kwargs: Any) -> dict[str, float]:
        """Images/s of another loader, closed at once (its prefetched batches are freed)."""
        loader = build_loader(
            self.config, transform, device=self.device, workers=workers, batch_size=self.batch,
            **kwargs,
        )  # fmt: skip
        try:
            return loader_rate(loader, self.options.steps, self.options.warmup, workers)
        finally:
            close_loader(loader)

    def close(self) -> None:
        for loader in self.loaders:
            close_loader(loader)


def profile_run(config: PretrainConfig, options: ProfileOptions) -> ProfileReport:
    """Profiles ``config`` as one training process (see the module docstring).

    Raises:
        ValueError: For a bad option, an empty data folder or a batch the data cannot fill.
        FileNotFoundError: For a missing data path.
    """
    if options.mode not in MODES:
        raise ValueError(f"mode={options.mode!r} is unknown: choose one of {', '.join(MODES)}")
    if options.steps < 1 or options.warmup < 0:
        raise ValueError(f"--steps {options.steps} must be >= 1 and --warmup >= 0")
    session = _Session(config, options)
    try:
        return _profile(session)
    finally:
        session.close()


def _profile(s: _Session) -> ProfileReport:
    options = s.options
    harness: ComputeHarness | None = None
    transform, origin = options.transform, options.transform_from
    if options.mode != "loader":
        harness = ComputeHarness(s.config, s.device)
        transform, origin = harness.method.default_transform(**s.config.views), "method"
    elif transform is None:
        transform = method_transform(s.config)
    stages: dict[str, Any] = {}
    tried: list[Option] = []
    loader_report, loader, overlap = None, None, True
    if options.mode in ("full", "loader"):
        loader, loader_report, stages["loader"], loader_options = _loader_half(s, transform, origin)
        tried += loader_options
        overlap = not (loader.backend == "torch" and loader_report.workers == 0)
    compute: ComputeResult | None = None
    variants: dict[str, Any] = {}
    if harness is not None:
        harness.shapes, harness.template = _shapes(s, transform, loader)
        if loader_report is not None and not loader_report.views:
            loader_report.views = [list(shape) for shape in harness.shapes]
        compute = harness.measure(s.batch, options.steps, options.warmup)
        stages["compute"] = {f"{k}_ms": v for k, v in compute.stages_ms.items()}
        stages["compute"]["loss_timing"] = compute.loss_timing
        compute_options, variants = _compute_options(s, harness, compute)
        tried += compute_options
    pipeline = None
    if harness is not None and loader is not None:
        pipeline = measure_pipeline(loader, harness, options.steps, options.warmup)
        stages["pipeline"] = _pipeline_stages(pipeline)
    files: dict[str, str] = {}
    if options.out is not None and options.trace_steps > 0:
        iteration = _iteration(s, harness, loader)
        path = write_trace(options.out / "trace.json", iteration, options.trace_steps, s.device)
        files["trace"] = str(path)
    loader_ips = loader_report.loader_images_per_s if loader_report else None
    compute_ips = compute.images_per_s if compute else None
    bound, factor, verdict = _verdict(loader_ips, compute_ips, pipeline, overlap)
    advice = advise(tried, loader_ips, compute_ips, overlap)
    report = ProfileReport(
        mode=options.mode,
        loader_images_per_s=loader_ips,
        compute_images_per_s=compute_ips,
        pipeline_images_per_s=pipeline.images_per_s if pipeline else None,
        data_wait_fraction=pipeline.data_wait_fraction if pipeline else None,
        bound=bound,
        bound_factor=factor,
        verdict=verdict,
        stages=stages,
        advice=[a for a in advice if a.predicted_gain is None or a.predicted_gain >= MIN_GAIN],
        not_advised=[
            a for a in advice if a.predicted_gain is not None and a.predicted_gain < MIN_GAIN
        ],
        setup=_setup(s, harness, loader),
        loader=asdict(loader_report) if loader_report else None,
        compute=(
            {"current": asdict(compute), "variants": variants} if compute is not None else None
        ),
        pipeline=asdict(pipeline) if pipeline else None,
        warnings=list(s.warnings),
        files=files,
    )
    report.check()
    return report


def _loader_half(
    s: _Session, transform: Any, origin: str
) -> tuple[Loader, LoaderReport, dict[str, Any], list[Option]]:
    """The training loader, its measurement, its stage split and its alternatives."""
    config = s.config
    kind = check_data(config)
    workers = resolve_workers(config)
    loader = s.loader(transform, backend=choose_backend(config, transform).name)
    rate = loader_rate(loader, s.options.steps, s.options.warmup, workers)
    report = LoaderReport(
        loader_images_per_s=rate["images_per_s"],
        backend=loader.backend,
        source_kind=loader.kind,
        data=os.fspath(config.data.path),
        transform=type(transform).__name__,
        transform_from=origin,
        views=view_shapes(transform),
        batch_size=s.batch,
        workers=workers,
        batches_measured=int(rate["batches"]),
        warmup_batches=int(rate["warmup"]),
        seconds=rate["seconds"],
        batch_ms_median=rate["batch_ms_median"],
        batch_ms_p90=rate["batch_ms_p90"],
        cpu_count=cpu_count(),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    stages = _loader_stages(s, loader, kind, rate)
    return loader, report, stages, _loader_options(s, transform, kind, rate["images_per_s"])


def _pipeline_stages(pipeline: PipelineResult) -> dict[str, float]:
    """Mean milliseconds of a pipeline step: waiting, copying, computing."""
    step_ms = 1000 * pipeline.seconds / pipeline.steps
    wait_ms = step_ms * pipeline.data_wait_fraction
    copy = step_ms * pipeline.copy_fraction
    return {
        "wait_for_data_ms": wait_ms,
        "copy_ms": copy,
        "compute_ms": max(step_ms - wait_ms - copy, 0.0),
        "data_wait_fraction": pipeline.data_wait_fraction,
    }


def _verdict(
    loader: float | None, compute: float | None, pipeline: PipelineResult | None, overlap: bool
) -> tuple[str | None, float | None, str]:
    """``(bound, factor, verdict)``; no bound unless both halves were measured."""
    if loader is not None and compute is not None:
        wait = pipeline.data_wait_fraction if pipeline else None
        measured = pipeline.images_per_s if pipeline else None
        return judge(loader, compute, wait, measured, overlap)
    if loader is not None:
        return None, None, f"the loader alone gives {loader:.1f} images/s (compute not measured)"
    return None, None, f"the steps alone take {compute:.1f} images/s (loader not measured)"


def _setup(s: _Session, harness: ComputeHarness | None, loader: Loader | None) -> dict[str, Any]:
    config = s.config
    return {
        "method": config.method,
        "method_kwargs": dict(config.method_kwargs),
        "data": config.data.path,
        "device": str(s.device),
        "batch_size": s.batch,
        "input_size": config.data.input_size,
        "backend": loader.backend if loader is not None else None,
        "workers": resolve_workers(config) if loader is not None else None,
        "precision": harness.precision if harness is not None else config.trainer.precision,
        "compile": harness.compiled if harness is not None else None,
        "channels_last": config.trainer.channels_last,
        "steps": s.options.steps,
        "warmup": s.options.warmup,
        "variants": sorted(s.variants),
        "cpu_count": cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "note": "one training process, without Lightning's own per-step overhead",
    }


def _shapes(
    s: _Session, transform: Any, loader: Loader | None
) -> tuple[list[tuple[int, ...]], list[Tensor] | None]:
    """``(3, h, w)`` of every view from the ViewSpecs; else the shapes of one loader batch
    and that batch, which the compute half then steps on (a transform without ViewSpecs
    may return grids or masks beside its images, which random values cannot stand for)."""
    shapes = view_shapes(transform)
    if shapes and all(min(shape) > 0 for shape in shapes):
        return [tuple(shape) for shape in shapes], None
    if loader is None:
        if not s.config.data.path:
            raise ValueError(
                f"the views of {type(transform).__name__} have no fixed size: pass --data so "
                "one batch tells their shapes"
            )
        check_data(s.config)
        loader = s.loader(transform, workers=0, batch_size=min(s.batch, 4))
    views, _, _ = next(endless(loader))
    return [tuple(int(d) for d in view.shape[1:]) for view in views], [v.clone() for v in views]


def _loader_stages(
    s: _Session, loader: Loader, kind: str, rate: dict[str, float]
) -> dict[str, Any]:
    config, steps, warmup = s.config, s.options.steps, s.options.warmup
    if loader.backend == "torch":
        stages = torch_stages(loader, config.data.path, kind, s.device)
        return {**stages, "parallel": True}
    views, _, _ = next(endless(loader))
    copy = copy_ms(list(views), s.device)
    if loader.backend == "dali":
        stages = dali_stages(loader, steps, warmup, rate["batch_ms_median"])
        return {**stages, "copy_to_device_ms": copy, "parallel": False}
    reason = "unavailable: FFCV compiles read, decode and augment into one pipeline"
    return {
        "read_ms": reason,
        "decode_ms": reason,
        "augment_ms": reason,
        "collate_ms": reason,
        "copy_to_device_ms": copy,
        "parallel": False,
    }


def _more_workers(current: int, cores: int) -> int | None:
    """The worker count the advice tries: twice as many, at most the cores."""
    target = min(max(1, 2 * current), cores)
    return target if target > current else None


def _loader_options(s: _Session, transform: Any, kind: str, current: float) -> list[Option]:
    config = s.config
    options: list[Option] = []
    workers, cores = resolve_workers(config), cpu_count()
    backend = choose_backend(config, transform).name
    unit = "threads" if backend in ("dali", "ffcv") else "workers"
    if "workers" in s.variants:
        more = _more_workers(workers, cores)
        if more is None:
            options.append(
                Option(
                    "more workers",
                    "loader",
                    unmeasured=f"not measured: the {workers} {unit} already use all {cores} cores",
                )
            )
        else:
            rate = _try(s, lambda: s.rate_of(transform, more))
            options.append(
                _loader_option(
                    f"--num-workers {more}",
                    rate,
                    f"loader {current:.1f} -> {{rate:.1f}} images/s with {more} instead of "
                    f"{workers} {unit}",
                    overlap=True,
                )
            )
    if "dali" in s.variants and backend == "torch":
        from fastssl.data.engines.dali.pipeline import dali_available
        from fastssl.data.loader import view_specs_of

        try:
            view_specs_of(transform)
            reason = None if dali_available() else "not measured: DALI is not installed"
        except ValueError:
            reason = "not measured: the transform has no ViewSpecs for DALI to compile"
        if reason is not None:
            options.append(Option("--backend dali", "loader", unmeasured=reason))
        else:
            threads = max(workers, 1)
            rate = _try(s, lambda: s.rate_of(transform, threads, backend="dali"))
            options.append(
                _loader_option(
                    "--backend dali",
                    rate,
                    f"loader {current:.1f} -> {{rate:.1f}} images/s with DALI ({threads} threads)",
                    overlap=True,
                )
            )
    if "max_side" in s.variants and backend == "torch" and kind != "ffcv":
        side = 2 * config.data.input_size
        found = _try(s, lambda: max_side_speedup(transform, config.data.path, kind, side))
        change = f"shards with --max-side {side} (fastssl shards SRC DST --max-side {side})"
        if isinstance(found, dict):
            after = current * found["speedup"]
            before, shrunk = found["before_ms"], found["after_ms"]
            measured = (
                f"loader CPU time per image {before:.2f} -> {shrunk:.2f} ms at {side} px "
                f"(median long side now {found['median_long_side']} px): loader "
                f"{current:.1f} -> {after:.1f} images/s"
            )
            options.append(Option(change, "loader", measured, loader=after))
        elif isinstance(found, str):
            options.append(Option(change, "loader", unmeasured=found))
    return options


def _loader_option(change: str, rate: Any, template: str, overlap: bool) -> Option:
    if isinstance(rate, str):
        return Option(change, "loader", unmeasured=rate)
    value = float(rate["images_per_s"])
    return Option(change, "loader", template.format(rate=value), loader=value, overlap=overlap)


def _try(s: _Session, measure: Callable[[], Any]) -> Any:
    """``measure()``, or the reason it failed (an alternative must not end the profile)."""
    try:
        return measure()
    except Exception as error:  # a failed alternative is reported, not raised
        if is_out_of_memory(error) and torch.cuda.is_available():
            torch.cuda.empty_cache()
            return "not measured: out of memory"
        return f"not measured: {type(error).__name__}: {error}"


def _compute_options(
    s: _Session, harness: ComputeHarness, current: ComputeResult
) -> tuple[list[Option], dict[str, Any]]:
    steps, warmup, batch = s.options.steps, s.options.warmup, s.batch
    base = current.images_per_s
    options: list[Option] = []
    results: dict[str, Any] = {}

    def add(change: str, name: str, measure: Callable[[], ComputeResult], note: str = "") -> None:
        result = _try(s, measure)
        if isinstance(result, str):
            options.append(Option(change, "compute", unmeasured=result))
            results[name] = result
            return
        results[name] = asdict(result)
        text = f"steps {base:.1f} -> {result.images_per_s:.1f} images/s{note}"
        options.append(Option(change, "compute", text, compute=result.images_per_s))

    if not harness.compiled:
        if "compile" in s.variants:
            add(
                "--compile",
                "compile",
                lambda: ComputeHarness(s.config, s.device, harness.shapes, compile=True).measure(
                    batch, steps, max(warmup, 2), variant="compile"
                ),
                " (compilation excluded)",
            )
        elif s.options.variants is None:
            options.append(
                Option(
                    "--compile",
                    "compute",
                    unmeasured="not measured on the CPU by default (inductor compiles for "
                    "minutes): add --variants compile",
                )
            )
    if "channels_last" in s.variants and not harness.channels_last:
        add(
            "--set trainer.channels_last=true",
            "channels_last",
            lambda: harness.measure(
                batch, steps, warmup, variant="channels_last", channels_last=True
            ),
        )
    if "bf16" in s.variants and PRECISIONS[harness.precision] == (None, None):
        if s.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            options.append(
                Option("--precision bf16-mixed", "compute", unmeasured="this GPU has no bf16")
            )
        elif s.device.type == "cpu" and not _cpu_supports_bf16():
            why = "this CPU has no native bf16: PyTorch emulates it, about 50x slower"
            options.append(Option("--precision bf16-mixed", "compute", unmeasured=why))
        else:
            add(
                "--precision bf16-mixed",
                "bf16-mixed",
                lambda: harness.measure(
                    batch, steps, warmup, variant="bf16-mixed", precision="bf16-mixed"
                ),
            )
    if "batch" in s.variants:
        add(
            f"--batch-size {2 * batch}",
            "batch x2",
            lambda: harness.measure(2 * batch, steps, warmup, variant="batch x2"),
            " (the loader's images/s taken as unchanged; the learning rate follows the batch)",
        )
    return options, results


def _cpu_supports_bf16() -> bool:
    from fastssl.train.engine import cpu_supports

    return cpu_supports(torch.bfloat16)


def _iteration(
    s: _Session, harness: ComputeHarness | None, loader: Loader | None
) -> Callable[[], None]:
    """One loop iteration of the mode, for the trace."""
    if loader is not None:
        batches = endless(loader)

        def iteration() -> None:
            with record_function("fastssl/wait_for_data"):
                views, _, _ = next(batches)
            if harness is not None:
                moved = to_device(
                    list(views), harness.device, harness.channels_last, harness.input_dtype
                )
                harness.step(moved)

        return iteration
    assert harness is not None
    views = harness.views(s.batch)

    def step() -> None:
        harness.step(views)

    return step


__all__ = [
    "MODES",
    "VARIANTS",
    "ProfileOptions",
    "check_data",
    "method_transform",
    "parse_variants",
    "profile_run",
]
