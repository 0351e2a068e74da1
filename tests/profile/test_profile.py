"""``fastssl profile CONFIG``: verdicts on runs slowed on purpose, the outputs, the errors."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastssl.cli import main
from fastssl.profile.cli import profile_config
from fastssl.profile.report import pipeline_model
from fastssl.train.cli import add_arguments as pretrain_arguments
from fastssl.train.cli import config_from_args
from tests.profile._slow import SLOW

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--steps", "3", "--warmup", "1", "--trace-steps", "2"]
HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None


def _recipe(tmp_path: Path, **method_kwargs: float) -> Path:
    path = tmp_path / "slow.yaml"
    recipe = {
        "method": SLOW,
        "method_kwargs": method_kwargs,
        "data": {"input_size": 8, "batch_size": 8, "num_workers": 0},
        "trainer": {"accelerator": "cpu", "precision": "32"},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _profile(recipe: Path, images: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = ["profile", str(recipe), "--data", str(images), *FAST, "--out", str(out), *extra]
    assert main(argv) == 0
    report: dict[str, Any] = json.loads((out / "profile.json").read_text())
    return report


SLOWED = [
    pytest.param({"augment_delay_s": 0.01}, "input", id="slow-loader"),
    pytest.param({"compute_delay_s": 0.06}, "compute", id="heavy-model"),
]


@pytest.mark.parametrize(("slowed", "bound"), SLOWED)
def test_a_run_slowed_on_purpose_is_judged_bound_by_that_half(
    slowed: dict[str, float], bound: str, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = _profile(_recipe(tmp_path, **slowed), images, out, "--variants", "none")
    loader, compute = report["loader_images_per_s"], report["compute_images_per_s"]
    pipeline, wait = report["pipeline_images_per_s"], report["data_wait_fraction"]
    assert report["bound"] == bound and report["verdict"].startswith(f"{bound}-bound")
    assert report["bound_factor"] == pytest.approx(max(loader, compute) / min(loader, compute))
    assert report["bound_factor"] > 3
    # The JSON agrees with itself: loading runs in the step's process (0 workers), so the
    # pipeline is slower than either half, and its wait is the loader's share.
    assert 0 < pipeline < min(loader, compute)
    assert pipeline == pytest.approx(1 / (1 / loader + 1 / compute), rel=0.35)
    assert (wait > 0.5) == (bound == "input")
    assert report["warnings"] == []
    stages = report["stages"]
    assert stages["pipeline"]["data_wait_fraction"] == wait
    if bound == "input":  # the sleep is in the augmentation, per image
        loader_stages = {k: v for k, v in stages["loader"].items() if k.endswith("_ms")}
        assert max(loader_stages, key=loader_stages.__getitem__) == "augment_ms"
    else:  # the sleep is in training_step, before the loss
        compute_stages = {k: v for k, v in stages["compute"].items() if k.endswith("_ms")}
        assert max(compute_stages, key=compute_stages.__getitem__) == "forward_ms"


def test_outputs_chart_trace_and_table(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    report = _profile(
        _recipe(tmp_path, augment_delay_s=0.005), images, out, "--variants", "none",
        "--json", str(tmp_path / "copy.json"),
    )  # fmt: skip
    assert json.loads((tmp_path / "copy.json").read_text())["bound"] == report["bound"]
    for key in ("loader_images_per_s", "compute_images_per_s", "pipeline_images_per_s",
                "data_wait_fraction", "bound", "stages"):  # fmt: skip
        assert report[key] is not None
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG"
    trace = json.loads((out / "trace.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert {"fastssl/wait_for_data", "fastssl/forward+loss", "fastssl/backward"} <= names
    table = capsys.readouterr().out
    for text in ("pipeline images/s", "data wait", "loader stages", "verdict", "input-bound"):
        assert text in table


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to try a second worker")
def test_advice_quotes_measured_gains(images: Path, tmp_path: Path) -> None:
    # Input-bound with 1 worker: a second worker doubles the loader; a doubled batch does
    # not help the loader-bound pipeline.
    recipe = _recipe(tmp_path, augment_delay_s=0.02)  # sleeps dwarf the CPU work
    report = _profile(
        recipe, images, tmp_path / "a", "--workers", "1", "--variants", "workers,batch"
    )
    loader, compute = report["loader_images_per_s"], report["compute_images_per_s"]
    (workers,) = report["advice"]
    assert workers["change"] == "--num-workers 2" and workers["of"] == "pipeline"
    assert "with 2 instead of 1 workers" in workers["measured"]
    assert 1.3 < workers["loader_images_per_s"] / loader < 2.5  # two sleepers, not one
    assert workers["predicted_gain"] == pytest.approx(
        pipeline_model(workers["loader_images_per_s"], compute, True)
        / pipeline_model(loader, compute, True)
    )
    assert [a["change"] for a in report["not_advised"]] == ["--batch-size 16"]
    # Compute-bound (a fixed 60 ms per step, loading in the step's process): a doubled
    # batch doubles the steps' images/s and predicts the serial pipeline's gain.
    recipe = _recipe(tmp_path, compute_delay_s=0.06)
    report = _profile(recipe, images, tmp_path / "b", "--variants", "batch")
    loader, compute = report["loader_images_per_s"], report["compute_images_per_s"]
    (batch,) = report["advice"]
    doubled = report["compute"]["variants"]["batch x2"]
    assert batch["change"] == "--batch-size 16" and doubled["batch_size"] == 16
    assert batch["compute_images_per_s"] == doubled["images_per_s"]
    assert 1.6 < doubled["images_per_s"] / compute < 2.4
    assert batch["predicted_gain"] == pytest.approx(
        pipeline_model(loader, doubled["images_per_s"], False)
        / pipeline_model(loader, compute, False)
    )


def test_loader_only_with_a_recipe_profiles_one_process(images: Path, tmp_path: Path) -> None:
    argv = ["--loader-only", "--devices", "2", "--batch-size", "8"]
    report = _profile(_recipe(tmp_path), images, tmp_path / "out", *argv)
    assert report["mode"] == "loader" and report["transform"] == "SleepyTransform"
    assert report["batch_size"] == 4 and "one of 2 processes" in report["warnings"][0]
    assert report["loader_images_per_s"] > 0 and report["batches_measured"] == 3
    assert report["compute_images_per_s"] is None and report["bound"] is None
    assert set(report["stages"]) == {"loader"}
    assert all(a["of"] == "loader" for a in report["advice"] + report["not_advised"])


def test_compute_only_needs_no_data_for_fixed_views(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "profile", str(ROOT / "pipelines" / "simclr.yaml"), "--compute-only",
        "--set", "method_kwargs.backbone=resnet18", "--input-size", "32", "--batch-size", "4",
        "--precision", "32", "--accelerator", "cpu", "--steps", "1", "--warmup", "1",
        "--variants", "none", "--trace-steps", "1", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "profile.json").read_text())
    assert report["mode"] == "compute" and report["loader_images_per_s"] is None
    assert report["compute"]["current"]["batch_size"] == 4
    assert report["stages"]["compute"]["loss_ms"] > 0  # NT-Xent timed by its hooks
    assert report["setup"]["method"] == "simclr" and report["setup"]["precision"] == "32"
    assert (out / "trace.json").exists()


@pytest.mark.parametrize("method", ["detcons", "vicregl"])
def test_compute_steps_on_a_real_batch_when_views_carry_masks_or_grids(
    method: str, images: Path, tmp_path: Path
) -> None:
    """DetCon's masks and VICRegL's grids cannot be random normal values: the compute half
    steps on one real loader batch (random masks would index out of range)."""
    out = tmp_path / "out"
    argv = [
        "profile", str(ROOT / "pipelines" / f"{method}.yaml"), "--compute-only",
        "--data", str(images), "--set", "method_kwargs.backbone=resnet18",
        "--input-size", "32", "--batch-size", "4", "--precision", "32", "--accelerator",
        "cpu", "--steps", "1", "--warmup", "1", "--variants", "none", "--trace-steps", "1",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "profile.json").read_text())
    assert report["compute"]["current"]["images_per_s"] > 0


@pytest.mark.dali
def test_loader_only_measures_the_dali_backend_for_the_advice(images: Path, tmp_path: Path) -> None:
    if not HAS_DALI:
        pytest.skip("needs DALI")
    out = tmp_path / "out"
    argv = [
        "profile", str(ROOT / "pipelines" / "simclr.yaml"), "--loader-only", "--data",
        str(images), "--backend", "torch", "--input-size", "32", "--batch-size", "4",
        "--workers", "1", "--variants", "dali", *FAST, "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "profile.json").read_text())
    assert report["backend"] == "torch" and report["views"] == [[3, 32, 32], [3, 32, 32]]
    (dali,) = report["advice"] + report["not_advised"]
    assert dali["change"] == "--backend dali" and dali["of"] == "loader"
    rate = float(dali["measured"].split("-> ")[1].split(" ")[0])
    assert dali["predicted_gain"] == pytest.approx(rate / report["loader_images_per_s"], rel=0.01)


@pytest.mark.parametrize(("accelerator", "backend"), [("cpu", "torch"), ("gpu", "dali")])
def test_profile_measures_the_backend_pretrain_chooses(
    accelerator: str, backend: str, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.profile.loader import build_loader
    from fastssl.train.engine import choose_backend
    from fastssl.transforms.simclr_transform import SimCLRTransform

    monkeypatch.setattr("fastssl.data.engines.dali.pipeline.dali_available", lambda: True)
    parser = argparse.ArgumentParser()
    pretrain_arguments(parser)
    recipe = str(ROOT / "pipelines" / "simclr.yaml")
    argv = [recipe, "--data", str(images), "--accelerator", accelerator]
    config = config_from_args(parser.parse_args(argv))
    transform = SimCLRTransform(input_size=32)
    assert choose_backend(config, transform).name == backend  # auto: DALI only on GPUs
    if accelerator == "cpu":  # the profiler's loader is built from that same choice
        assert build_loader(config, transform, workers=0, batch_size=4).backend == backend


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_errors_name_the_thing_and_exit_2(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(_recipe(tmp_path))
    out = ["--out", str(tmp_path / "out")]
    missing = str(tmp_path / "nope.yaml")
    assert missing in _error(["profile", missing, *out], capsys)
    err = _error(
        ["profile", recipe, "--data", str(images), "--set", "data.batch_sise=2", *out], capsys
    )
    assert "unknown key 'data.batch_sise'" in err and "did you mean 'data.batch_size'" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is an empty folder" in _error(["profile", recipe, "--data", str(empty), *out], capsys)
    assert "pass --data PATH" in _error(["profile", recipe, *out], capsys)
    err = _error(["profile", recipe, "--data", str(images), "--batch-size", "64", *out], capsys)
    assert "too few images for one batch of 64" in err
    err = _error(["profile", recipe, "--data", str(images), "--variants", "fp8", *out], capsys)
    assert "--variants fp8" in err
    err = _error(["profile", recipe, "--compute-only", "--method", "SimCLRTransform", *out], capsys)
    assert "names a transform" in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--batch-size", "12", "--input-size", "16"],
        ["--num-workers", "3", "--backend", "torch", "--seed", "7"],
        ["--precision", "bf16-mixed", "--no-compile", "--set", "optimizer.lr=0.5"],
    ],
)
def test_profile_reads_a_recipe_like_pretrain(flags: list[str], tmp_path: Path) -> None:
    recipe = str(ROOT / "pipelines" / "simclr.yaml")
    pretrain = argparse.ArgumentParser()
    pretrain_arguments(pretrain)
    expected = config_from_args(pretrain.parse_args([recipe, *flags]))
    profile = argparse.ArgumentParser()
    from fastssl.profile.cli import add_arguments

    add_arguments(profile)
    assert profile_config(profile.parse_args([recipe, *flags])) == expected


@pytest.mark.parametrize("native", [False, True])
def test_bf16_variant_is_measured_only_where_the_cpu_computes_bf16(
    native: bool, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.train import engine

    monkeypatch.setattr(engine, "cpu_supports", lambda dtype: native)
    recipe = _recipe(tmp_path, compute_delay_s=0.0)
    report = _profile(recipe, images, tmp_path, "--variants", "bf16")
    listed = [*report["advice"], *report["not_advised"]]
    (option,) = [a for a in listed if a["change"] == "--precision bf16-mixed"]
    if native:
        assert "bf16-mixed" in report["compute"]["variants"]
    else:
        assert "bf16-mixed" not in report["compute"]["variants"]
        assert "this CPU has no native bf16" in option["measured"]


def test_setup_names_the_precision_the_steps_ran_in(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastssl.train import engine

    monkeypatch.setattr(engine, "cpu_supports", lambda dtype: False)
    recipe = _recipe(tmp_path, compute_delay_s=0.0)
    with pytest.warns(UserWarning, match="32-true instead"):
        report = _profile(
            recipe, images, tmp_path, "--precision", "bf16-mixed", "--variants", "none"
        )
    assert report["setup"]["precision"] == "32-true"


def test_trace_drops_kineto_chatter_but_passes_other_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import torch

    from fastssl.profile.pipeline import write_trace

    def iteration() -> None:
        torch.randn(8).sum()
        os.write(2, b"a real problem\n")  # what a failing native library would print

    write_trace(tmp_path / "trace.json", iteration, steps=1, device=torch.device("cpu"))
    err = capfd.readouterr().err
    assert "a real problem" in err
    assert "USDT:" not in err and "gpuGetDeviceCount" not in err
    assert (tmp_path / "trace.json").stat().st_size > 0
