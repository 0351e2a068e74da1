"""Verdict, advice, consistency check, table and chart of ``fastssl profile``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fastssl.profile.report import (
    MIN_GAIN,
    Advice,
    Option,
    ProfileReport,
    advise,
    chart_rows,
    format_table,
    judge,
    pipeline_model,
    write_chart,
)


@pytest.mark.parametrize(
    ("loader", "compute", "bound", "factor"),
    [(100.0, 400.0, "input", 4.0), (900.0, 300.0, "compute", 3.0), (50.0, 51.0, "input", 1.02)],
)
def test_judge_names_the_slower_half_and_by_how_much(
    loader: float, compute: float, bound: str, factor: float
) -> None:
    got, how_much, text = judge(loader, compute)
    assert got == bound and how_much == pytest.approx(factor)
    assert text.startswith(f"{bound}-bound") and f"{factor:.2f}x" in text


def test_judge_points_out_what_the_halves_do_not_explain() -> None:
    *_, calm = judge(900.0, 300.0, data_wait=0.01, pipeline=290.0)
    *_, contended = judge(900.0, 300.0, data_wait=0.6, pipeline=100.0)
    assert "wait 1%" in calm and "the halves predict 300.0 images/s" in calm
    assert "although" not in calm and "slow each other" not in calm
    assert "wait 60% of their time for data although the loader alone is faster" in contended
    assert "pipeline gives 100.0 (33%): loading and compute slow each other down" in contended
    *_, serial = judge(100.0, 400.0, pipeline=79.0, overlap=False)
    assert "predict 80.0" in serial and "slow each other" not in serial


@pytest.mark.parametrize(
    ("loader", "compute", "overlap", "expected"),
    [(100.0, 400.0, True, 100.0), (100.0, 400.0, False, 80.0), (300.0, 300.0, False, 150.0)],
)
def test_pipeline_model(loader: float, compute: float, overlap: bool, expected: float) -> None:
    assert pipeline_model(loader, compute, overlap) == pytest.approx(expected)
    assert pipeline_model(loader, compute, overlap) <= min(loader, compute)


def test_advice_gains_follow_the_measurements_and_the_bound() -> None:
    options = [
        Option("--num-workers 8", "loader", "measured", loader=300.0),
        Option("--precision bf16-mixed", "compute", "measured", compute=800.0),
        Option("--compile", "compute", unmeasured="not measured: no compiler"),
    ]
    # Input-bound (100 vs 400): a faster loader helps up to the compute's 400 ...
    advice = advise(options, loader=100.0, compute=400.0, overlap=True)
    assert [a.change for a in advice] == ["--num-workers 8", "--precision bf16-mixed", "--compile"]
    assert advice[0].predicted_gain == pytest.approx(3.0)
    assert advice[1].predicted_gain == pytest.approx(1.0)  # compute was not the bound
    assert advice[2].predicted_gain is None and advice[2].measured.startswith("not measured")
    assert {a.of for a in advice} == {"pipeline"}
    # ... loading in the step's own process: more workers also overlap it with compute.
    serial = advise(
        [Option("--num-workers 1", "loader", "m", loader=100.0, overlap=True)],
        loader=100.0,
        compute=400.0,
        overlap=False,
    )
    assert serial[0].predicted_gain == pytest.approx(100.0 / 80.0)


@pytest.mark.parametrize(
    ("loader", "compute", "kept", "of"),
    [
        (100.0, None, ["--num-workers 8"], "loader"),
        (None, 400.0, ["--precision bf16-mixed"], "compute"),
    ],
)
def test_advice_with_one_half_measured_is_about_that_half(
    loader: float | None, compute: float | None, kept: list[str], of: str
) -> None:
    options = [
        Option("--num-workers 8", "loader", "m", loader=300.0),
        Option("--precision bf16-mixed", "compute", "m", compute=800.0),
    ]
    advice = advise(options, loader=loader, compute=compute, overlap=True)
    assert [a.change for a in advice] == kept
    assert advice[0].of == of and advice[0].predicted_gain == pytest.approx(3.0 if loader else 2.0)


def _report(**changes: object) -> ProfileReport:
    values: dict[str, object] = {
        "mode": "full",
        "loader_images_per_s": 100.0,
        "compute_images_per_s": 400.0,
        "pipeline_images_per_s": 95.0,
        "data_wait_fraction": 0.7,
        "bound": "input",
        "bound_factor": 4.0,
        "verdict": "input-bound",
        "stages": {
            "loader": {
                "read_ms": 8.0,
                "decode_ms": 40.0,
                "augment_ms": 30.0,
                "collate_ms": 2.0,
                "copy_to_device_ms": 1.0,
                "how": "timed",
                "parallel": True,
            },
            "compute": {
                "forward_ms": 10.0,
                "loss_ms": 1.0,
                "backward_ms": 8.0,
                "optimizer_ms": 1.0,
                "loss_timing": "hooks",
            },
            "pipeline": {
                "wait_for_data_ms": 56.0,
                "copy_ms": 1.0,
                "compute_ms": 20.0,
                "data_wait_fraction": 0.7,
            },
        },
        "setup": {"workers": 4},
        "advice": [Advice("--backend dali", 2.5, "pipeline", "loader 100 -> 250")],
        "not_advised": [Advice("--batch-size 16", 1.0, "pipeline", "steps 400 -> 500")],
    }
    values.update(changes)
    return ProfileReport(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pipeline", "warned"), [(95.0, False), (100.0, False), (104.0, True)])
def test_check_warns_when_the_pipeline_beats_its_slower_half(pipeline: float, warned: bool) -> None:
    report = _report(pipeline_images_per_s=pipeline)
    report.check()
    assert bool(report.warnings) == warned
    if warned:
        assert "above its slower half (100.0)" in report.warnings[0]


def test_loader_mode_keeps_the_flat_document() -> None:
    report = _report(mode="loader", loader={"backend": "torch", "batches_measured": 4})
    document = report.to_dict()
    assert document["backend"] == "torch" and document["batches_measured"] == 4
    assert document["loader_images_per_s"] == 100.0 and document["mode"] == "loader"
    assert "backend" not in _report(loader={"backend": "torch"}).to_dict()  # nested in full


def test_table_lists_rates_stages_verdict_advice() -> None:
    table = format_table(_report())
    for text in ("pipeline images/s", "95.0", "70.0% of each step", "decode 40.0",
                 "forward 10.0", "--backend dali: x2.50", "--batch-size 16 (x1.00)"):  # fmt: skip
        assert text in table
    assert MIN_GAIN > 1.0


def test_chart_splits_the_loader_by_workers_and_writes_a_png(tmp_path: Path) -> None:
    report = _report()
    rows = dict(chart_rows(report))
    loader = next(v for k, v in rows.items() if k.startswith("loader"))
    assert loader["decode"] == pytest.approx(10.0)  # 40 ms on one core / 4 workers
    assert loader["copy_to_device"] == pytest.approx(1.0)  # main process: not divided
    assert math.isclose(sum(rows["pipeline step"].values()), 77.0)
    path = write_chart(report, tmp_path / "profile.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
