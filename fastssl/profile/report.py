"""The verdict, the advice and the outputs of ``fastssl profile``.

* :func:`judge` says which half bounds the run (``input`` or ``compute``) and by how much.
* :func:`advise` turns measured alternatives (:class:`Option`) into advice with the gain
  each predicts: the pipeline's images/s after the change over before, both from the same
  model of the pipeline (:func:`pipeline_model`: the slower half when loading overlaps
  the steps, the harmonic sum when it runs in the step's own process). No gain is ever
  assumed; an option that was not measured carries its reason and no number.
* :class:`ProfileReport` is ``profile.json``; :func:`format_table` prints it and
  :func:`write_chart` draws ``profile.png``.

Example:
    >>> judge(loader=100.0, compute=400.0)[:2]
    ('input', 4.0)
    >>> pipeline_model(100.0, 400.0, overlap=True), pipeline_model(100.0, 400.0, overlap=False)
    (100.0, 80.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Share of the step spent waiting that contradicts a compute-bound verdict of the halves.
WAIT_CONTRADICTS = 0.25
#: A pipeline below this share of what its halves predict: they slow each other down.
CONTENTION = 0.75
#: Predicted gains below this are within measurement noise: not advice.
MIN_GAIN = 1.03


def pipeline_model(loader: float, compute: float, overlap: bool) -> float:
    """Images/s a pipeline of the two halves gives: ``min`` when they overlap (loader
    workers or threads), ``1 / (1/loader + 1/compute)`` when loading runs in the
    training process (torch backend with 0 workers)."""
    if loader <= 0 or compute <= 0:
        return 0.0
    return min(loader, compute) if overlap else 1.0 / (1.0 / loader + 1.0 / compute)


def judge(
    loader: float,
    compute: float,
    data_wait: float | None = None,
    pipeline: float | None = None,
    overlap: bool = True,
) -> tuple[str, float, str]:
    """Which half bounds the run, by how much, and a sentence that says it.

    Args:
        loader: The loader's images/s alone.
        compute: Training steps' images/s on in-memory batches.
        data_wait: Measured share of the step spent waiting for data in the pipeline.
        pipeline: Measured images/s of the pipeline, compared with what the halves predict.
        overlap: Whether loading overlaps the steps (see :func:`pipeline_model`).

    Returns:
        ``(bound, factor, verdict)``: ``bound`` is ``"input"`` when the loader is the
        slower half, else ``"compute"``; ``factor`` is the faster half over the slower.
    """
    bound = "input" if loader < compute else "compute"
    slow, fast = sorted((loader, compute))
    factor = fast / slow if slow > 0 else math.inf
    if bound == "input":
        text = (
            f"input-bound: the loader gives {loader:.1f} images/s, the steps could take "
            f"{compute:.1f} ({factor:.2f}x more)"
        )
    else:
        text = (
            f"compute-bound: the steps take {compute:.1f} images/s, the loader could give "
            f"{loader:.1f} ({factor:.2f}x more)"
        )
    if data_wait is not None:
        text += f"; steps wait {data_wait:.0%} of their time for data"
        if bound == "compute" and data_wait > WAIT_CONTRADICTS:
            text += " although the loader alone is faster"
    if pipeline is not None:
        predicted = pipeline_model(loader, compute, overlap)
        text += f"; the halves predict {predicted:.1f} images/s, the pipeline gives {pipeline:.1f}"
        if predicted > 0 and pipeline < CONTENTION * predicted:
            text += (
                f" ({pipeline / predicted:.0%}): loading and compute slow each other down "
                "(shared CPU cores or memory bandwidth)"
            )
    return bound, factor, text


@dataclass
class Option:
    """A change that was tried, and what it measured.

    ``half``: the half the change acts on (``"loader"`` or ``"compute"``); ``loader`` /
    ``compute``: images/s of that half after the change (None: left as it is);
    ``overlap``: whether loading overlaps the steps after the change (None: unchanged);
    ``unmeasured``: why no number could be measured (the advice then has none).
    """

    change: str
    half: str
    measured: str = ""
    loader: float | None = None
    compute: float | None = None
    overlap: bool | None = None
    unmeasured: str | None = None


@dataclass
class Advice:
    """One piece of advice: the change, its predicted gain and what it rests on."""

    change: str
    predicted_gain: float | None  # images/s of `of` after / before; None: not measured
    of: str  # "pipeline", "loader" or "compute": what the gain is the gain of
    measured: str
    loader_images_per_s: float | None = None  # the loader's images/s after the change
    compute_images_per_s: float | None = None  # the steps' images/s after the change


def advise(
    options: list[Option],
    loader: float | None,
    compute: float | None,
    overlap: bool,
) -> list[Advice]:
    """The options as advice, best predicted gain first (unmeasured ones last).

    With both halves measured the gain is of the pipeline (:func:`pipeline_model` after
    over before); with one half, of that half (options on the other half are dropped).

    Example:
        >>> [a.predicted_gain for a in advise(
        ...     [Option("bf16", "compute", "200 -> 300 images/s", compute=300.0)],
        ...     loader=250.0, compute=200.0, overlap=True)]
        [1.25]
    """
    both = loader is not None and compute is not None
    advice = []
    for option in options:
        of = "pipeline" if both else option.half
        if not both and (loader if option.half == "loader" else compute) is None:
            continue
        gain: float | None = None
        if option.unmeasured is None:
            if loader is not None and compute is not None:
                after = pipeline_model(
                    option.loader or loader,
                    option.compute or compute,
                    overlap if option.overlap is None else option.overlap,
                )
                gain = after / pipeline_model(loader, compute, overlap)
            elif option.half == "loader" and loader and option.loader is not None:
                gain = option.loader / loader
            elif option.half == "compute" and compute and option.compute is not None:
                gain = option.compute / compute
        measured = option.measured if option.unmeasured is None else option.unmeasured
        advice.append(Advice(option.change, gain, of, measured, option.loader, option.compute))
    return sorted(advice, key=lambda a: (a.predicted_gain is None, -(a.predicted_gain or 0.0)))


@dataclass
class ProfileReport:
    """``profile.json``: what was measured and what it means.

    The six keys scripts read first are ``loader_images_per_s``, ``compute_images_per_s``,
    ``pipeline_images_per_s``, ``data_wait_fraction``, ``bound`` and ``stages``; a mode
    that does not measure a quantity leaves it None.
    """

    mode: str  # "full", "loader" or "compute"
    loader_images_per_s: float | None
    compute_images_per_s: float | None
    pipeline_images_per_s: float | None
    data_wait_fraction: float | None
    bound: str | None  # "input" or "compute"; None unless both halves were measured
    bound_factor: float | None  # the faster half's images/s over the slower's
    verdict: str
    stages: dict[str, Any]  # "loader": ms per batch; "compute": ms per step; "pipeline"
    advice: list[Advice] = field(default_factory=list)  # gain >= MIN_GAIN, or unmeasured
    not_advised: list[Advice] = field(default_factory=list)  # measured, predicting no gain
    setup: dict[str, Any] = field(default_factory=dict)
    loader: dict[str, Any] | None = None  # the loader measurement (LoaderReport fields)
    compute: dict[str, Any] | None = None  # "current" and "variants" (ComputeResult)
    pipeline: dict[str, Any] | None = None  # PipelineResult
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Adds a warning when the pipeline measured faster than its slower half (which
        only noise can do: a slower half bounds the whole)."""
        halves = [r for r in (self.loader_images_per_s, self.compute_images_per_s) if r]
        if self.pipeline_images_per_s is not None and halves:
            slower = min(halves)
            if self.pipeline_images_per_s > slower:
                self.warnings.append(
                    f"the pipeline measured {self.pipeline_images_per_s:.1f} images/s, above "
                    f"its slower half ({slower:.1f}): measurement noise; use more --steps"
                )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; in ``loader`` mode the loader's fields are also at the top
        level (the format ``--loader-only`` has always written)."""
        document = asdict(self)
        if self.mode == "loader" and self.loader is not None:
            document = {**self.loader, **document}
        return document


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(report: ProfileReport) -> str:
    """The report as a table a person can read on the terminal."""
    rows: list[tuple[str, str]] = [("mode", report.mode)]
    setup = report.setup
    if setup:
        data = ""
        if setup.get("backend") not in (None, "-"):
            data = f", {setup['backend']} backend with {setup.get('workers')} workers"
        rows.append(
            (
                "setup",
                f"{setup.get('method')} on {setup.get('device')}, batch "
                f"{setup.get('batch_size')}{data}, precision {setup.get('precision')}, "
                f"compile {setup.get('compile')}, channels_last {setup.get('channels_last')}",
            )
        )
    if report.loader is not None:
        loader = report.loader
        rows += [
            ("images/s", _rate(report.loader_images_per_s) + " (loader alone)"),
            ("backend", f"{loader.get('backend')} ({loader.get('source_kind')})"),
            ("transform", f"{loader.get('transform')} [{loader.get('transform_from')}]"),
            ("views", ", ".join("x".join(map(str, v)) for v in loader.get("views", []))),
            ("batch size / workers", f"{loader.get('batch_size')} / {loader.get('workers')}"),
            (
                "batches (warm-up)",
                f"{loader.get('batches_measured')} ({loader.get('warmup_batches')})",
            ),
            (
                "batch ms median / p90",
                f"{_ms(loader.get('batch_ms_median'))} / {_ms(loader.get('batch_ms_p90'))}",
            ),
            ("cpus / load average", f"{loader.get('cpu_count')} / {loader.get('load_average')}"),
        ]
    if report.compute_images_per_s is not None:
        rows.append(("compute images/s", _rate(report.compute_images_per_s)))
    if report.pipeline_images_per_s is not None:
        rows.append(("pipeline images/s", _rate(report.pipeline_images_per_s)))
    if report.data_wait_fraction is not None:
        rows.append(("data wait", f"{report.data_wait_fraction:.1%} of each step"))
    for name, stages in report.stages.items():
        if isinstance(stages, dict):
            parts = [
                f"{key.removesuffix('_ms')} {_ms(value)}"
                for key, value in stages.items()
                if key.endswith("_ms")
            ]
            unit = "ms/step" if name != "loader" else "ms/batch"
            rows.append((f"{name} stages ({unit})", ", ".join(parts)))
    rows.append(("verdict", report.verdict))
    for index, item in enumerate(report.advice):
        gain = "not measured" if item.predicted_gain is None else f"x{item.predicted_gain:.2f}"
        label = "advice" if index == 0 else ""
        rows.append((label, f"{item.change}: {gain} ({item.of}); {item.measured}"))
    if report.not_advised:
        tried = ", ".join(f"{a.change} (x{a.predicted_gain:.2f})" for a in report.not_advised)
        rows.append(("no gain", tried))
    rows += [("warning", text) for text in report.warnings]
    rows += [(name, path) for name, path in report.files.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


#: One color per stage, the same in every row of the chart.
STAGE_COLORS: dict[str, str] = {
    "read": "#4c72b0",
    "decode": "#55a868",
    "augment": "#c44e52",
    "collate": "#8172b2",
    "iterator": "#937860",
    "copy_to_device": "#ccb974",
    "forward": "#64b5cd",
    "loss": "#dd8452",
    "backward": "#da8bc3",
    "optimizer": "#8c8c8c",
    "wait_for_data": "#3b3b3b",
    "copy": "#ccb974",
    "compute": "#9ecae1",
}


def chart_rows(report: ProfileReport) -> list[tuple[str, dict[str, float]]]:
    """The bars of the chart's left panel: a label and ms per stage, for one step."""
    rows: list[tuple[str, dict[str, float]]] = []
    loader = report.stages.get("loader")
    if isinstance(loader, dict):
        parts = {
            key.removesuffix("_ms"): float(value)
            for key, value in loader.items()
            if key.endswith("_ms") and isinstance(value, int | float)
        }
        workers = int(report.setup.get("workers") or 0)
        label = "loader batch"
        if loader.get("parallel", True) and workers > 1:
            label = f"loader batch\n(stages / {workers} workers)"
            parts = {k: v / workers if k != "copy_to_device" else v for k, v in parts.items()}
        rows.append((label, parts))
    compute = report.stages.get("compute")
    if isinstance(compute, dict):
        parts = {
            key.removesuffix("_ms"): float(value)
            for key, value in compute.items()
            if key.endswith("_ms") and isinstance(value, int | float)
        }
        rows.append(("compute step", parts))
    pipeline = report.stages.get("pipeline")
    if isinstance(pipeline, dict):
        rows.append(
            (
                "pipeline step",
                {
                    "wait_for_data": float(pipeline["wait_for_data_ms"]),
                    "copy": float(pipeline["copy_ms"]),
                    "compute": float(pipeline["compute_ms"]),
                },
            )
        )
    return rows


def write_chart(report: ProfileReport, path: str | Path) -> Path:
    """Draws ``profile.png``: time per step split by stage, and images/s of each half.

    Example:
        >>> write_chart(report, "runs/profile/profile.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = chart_rows(report)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, 2.0 + 0.9 * max(len(rows), 1)), gridspec_kw={"width_ratios": [2.3, 1]}
    )
    seen: set[str] = set()
    for y, (_, parts) in enumerate(rows):
        start = 0.0
        for stage, ms in parts.items():
            name = stage if stage not in seen else None
            seen.add(stage)
            color = STAGE_COLORS.get(stage, "#999999")
            left.barh(y, ms, left=start, color=color, edgecolor="white", label=name)
            start += ms
        left.text(start, y, f" {start:.1f} ms", va="center", fontsize=8)
    left.set_yticks(range(len(rows)), [label for label, _ in rows])
    left.set_xlabel("milliseconds per step (one batch)")
    left.set_title("where a step's time goes")
    left.invert_yaxis()
    if rows:
        left.legend(
            fontsize=7, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False
        )
    left.margins(x=0.15)
    bars = [
        ("loader", report.loader_images_per_s),
        ("compute", report.compute_images_per_s),
        ("pipeline", report.pipeline_images_per_s),
    ]
    bars = [(name, value) for name, value in bars if value is not None]
    slower = {"input": "loader", "compute": "compute"}.get(report.bound or "")
    colors = ["#c44e52" if name == slower else "#4c72b0" for name, _ in bars]
    right.bar([n for n, _ in bars], [v or 0.0 for _, v in bars], color=colors)
    for x, (_, value) in enumerate(bars):
        right.text(x, value or 0.0, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    right.set_ylabel("images / s")
    title = "throughput"
    if report.bound is not None and report.bound_factor is not None:
        title = f"{report.bound}-bound ({report.bound_factor:.2f}x)"
    right.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = [
    "Advice",
    "Option",
    "ProfileReport",
    "advise",
    "chart_rows",
    "format_table",
    "judge",
    "pipeline_model",
    "write_chart",
]
