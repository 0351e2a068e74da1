"""--logger csv|tensorboard|wandb: metrics.csv always, TensorBoard by default, Weights &
Biases offline (WANDB_MODE=offline: files under OUT/wandb, nothing over the network)."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from fastssl.cli import main
from fastssl.train import engine
from fastssl.train.cli import add_arguments, flag_values
from fastssl.train.config import ConfigError, PretrainConfig, apply_overrides
from fastssl.train.engine import pretrain
from tests.train._tiny import TINY, make_folder, tiny_config

HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B without a network or the user's settings: offline, every folder under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    return tiny_config(data, out, "data.batch_size=8", "trainer.max_epochs=2", *overrides)


def _losses(out: Path) -> list[float]:
    with open(out / "metrics.csv") as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]


def _tensorboard_scalars(out: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb_runs(out: Path) -> list[Path]:
    return sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_tensorboard_is_the_default_and_installed() -> None:
    assert PretrainConfig().trainer.logger == "tensorboard"
    assert importlib.util.find_spec("tensorboard") is not None  # a base dependency


@pytest.mark.parametrize(
    "logger",
    [
        "csv",
        "tensorboard",
        pytest.param("wandb", marks=pytest.mark.skipif(not HAS_WANDB, reason="wandb")),
    ],
)
def test_each_logger_gets_the_metrics_and_metrics_csv_is_always_written(
    images: Path, tmp_path: Path, logger: str, request: pytest.FixtureRequest
) -> None:
    if logger == "wandb":
        request.getfixturevalue("wandb_offline")
    out = tmp_path / "run"
    summary = pretrain(_config(images, out, f"trainer.logger={logger}"))
    losses = _losses(out)
    assert len(losses) == 4 and losses[-1] == pytest.approx(summary["final_loss"])
    assert summary["logger"] == logger and "note" not in summary
    assert json.loads((out / "summary.json").read_text())["logger"] == logger
    assert (out / "tensorboard").exists() is (logger == "tensorboard")
    assert (out / "wandb").exists() is (logger == "wandb")
    if logger == "tensorboard":
        scalars = _tensorboard_scalars(out)
        assert scalars["train/loss"] == pytest.approx(losses)
        assert "perf/images_per_s" in scalars and "train/lr" in scalars
    if logger == "wandb":
        import wandb

        assert wandb.run is None  # the run was finished, not left open
        (run,) = _wandb_runs(out)
        run_id = (out / engine.WANDB_ID_FILE).read_text().strip()
        assert run.name == f"run-{run_id}.wandb"
        data = run.read_bytes()  # protobuf records: keys and strings are stored as they are
        for needle in (b"train/loss", b"perf/images_per_s", b"fastssl", TINY.encode()):
            assert needle in data, needle


@pytest.mark.skipif(not HAS_WANDB, reason="wandb")
@pytest.mark.usefixtures("wandb_offline")
def test_wandb_resume_continues_the_same_run(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("trainer.logger=wandb", "trainer.wandb_project=p36", "trainer.wandb_name=tiny")
    pretrain(_config(images, out, *args, "trainer.max_steps=2"))
    first_id = (out / engine.WANDB_ID_FILE).read_text().strip()
    pretrain(_config(images, out, *args, "trainer.max_steps=4"), resume="auto")
    assert (out / engine.WANDB_ID_FILE).read_text().strip() == first_id
    runs = _wandb_runs(out)
    assert len(runs) == 2 and {r.name for r in runs} == {f"run-{first_id}.wandb"}
    assert b"p36" in runs[0].read_bytes() and b"tiny" in runs[0].read_bytes()
    # A new run (--overwrite) gets a new id.
    pretrain(_config(images, out, *args, "trainer.max_steps=1"), overwrite=True)
    assert (out / engine.WANDB_ID_FILE).read_text().strip() != first_id


@pytest.mark.parametrize(
    ("logger", "package"), [("tensorboard", "tensorboard"), ("wandb", "wandb")]
)
def test_a_missing_logger_package_says_what_to_install(
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logger: str,
    package: str,
) -> None:
    monkeypatch.setattr(engine, "_installed", lambda *names: False)
    with pytest.raises(ModuleNotFoundError, match=rf"pip install {package}") as info:
        pretrain(_config(images, tmp_path / "out", f"trainer.logger={logger}"))
    assert info.value.name == package
    assert not (tmp_path / "out" / "last.ckpt").exists()
    # The CLI: a user error (exit 2) in one line.
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"method: {TINY}\ndata: {{input_size: 8, num_workers: 0}}\n")
    code = main(
        ["pretrain", str(recipe), "--data", str(images), "--logger", logger,
         "--out", str(tmp_path / "cli")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"pip install {package}" in err and "Traceback" not in err
    # metrics.csv needs no package.
    assert pretrain(_config(images, tmp_path / "csv", "trainer.logger=csv", "trainer.max_steps=1"))


def test_logger_flag_and_key_are_checked() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert flag_values(parser.parse_args(["r.yaml", "--logger", "wandb"])) == {
        "trainer.logger": "wandb"
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["r.yaml", "--logger", "mlflow"])
    with pytest.raises(ConfigError, match=r"trainer\.logger: 'mlflow' .*'csv', 'tensorboard'"):
        apply_overrides(PretrainConfig(), ["trainer.logger=mlflow"])


@pytest.mark.skipif(not HAS_WANDB, reason="wandb")
def test_wandb_without_credentials_online_says_how_to_log_in_or_go_offline(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No key anywhere (no network is used: wandb stops before connecting).
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with pytest.raises(ValueError, match=r"wandb login.*WANDB_MODE=offline"):
        pretrain(_config(images, tmp_path / "out", "trainer.logger=wandb"))
    assert not (tmp_path / "out" / "last.ckpt").exists()
