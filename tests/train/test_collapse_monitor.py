"""Collapse statistics during pretraining: logged on the log steps, left out of training."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from fastssl.train.callbacks import CollapseMonitor, detached_features, first_image_view
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import build_trainer, pretrain
from fastssl.utils.collapse import collapse_statistics
from tests.train._tiny import TinyMethod, make_folder, tiny_config


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    return tiny_config(
        data, out, "data.batch_size=4", "trainer.max_epochs=3", "trainer.logger=csv", *overrides
    )


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _collapse_rows(out: Path) -> list[tuple[int, float, float]]:
    return [
        (int(row["step"]), float(row["collapse/std"]), float(row["collapse/effective_rank"]))
        for row in _rows(out)
        if row.get("collapse/std")
    ]


def test_monitor_leaves_pretraining_untouched(images: Path, tmp_path: Path) -> None:
    """The same run with and without the statistics ends with bitwise equal weights and
    BatchNorm statistics (TinyMethod has a BatchNorm: a forward pass in training mode
    would move its running statistics). Two batches per step: a gradient leaking in
    between would show too."""
    args = ("method_kwargs.random_aug=true", "trainer.accumulate_grad_batches=2")
    pretrain(_config(images, tmp_path / "off", *args, "trainer.collapse_statistics=false"))
    pretrain(_config(images, tmp_path / "on", *args))
    assert _collapse_rows(tmp_path / "on") and not _collapse_rows(tmp_path / "off")
    off = method_state_dict(read_checkpoint(tmp_path / "off" / "last.ckpt"))
    on = method_state_dict(read_checkpoint(tmp_path / "on" / "last.ckpt"))
    assert off.keys() == on.keys()
    for key in off:
        assert torch.equal(off[key], on[key]), key


@pytest.mark.parametrize(("every", "expected_steps"), [(1, [1, 2, 3, 4, 5, 6]), (2, [2, 4, 6])])
def test_statistics_are_logged_on_the_log_steps(
    images: Path, tmp_path: Path, every: int, expected_steps: list[int]
) -> None:
    summary = pretrain(
        _config(images, tmp_path, "trainer.max_steps=6", f"trainer.log_every_n_steps={every}")
    )
    rows = _collapse_rows(tmp_path)
    # metrics.csv counts steps from 0: the row of step s is the one after s + 1 steps.
    assert [step + 1 for step, _, _ in rows] == expected_steps
    for _, std, rank in rows:
        assert 0.0 <= std <= 1.0
        assert 1.0 <= rank <= 4.0 + 1e-6  # batch 4, 8 features: rank <= min(4, 8)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["collapse_std"] == pytest.approx(rows[-1][1])
    assert on_disk["collapse_effective_rank"] == pytest.approx(rows[-1][2])
    assert summary["collapse_std"] == on_disk["collapse_std"]


def test_the_last_step_is_measured_between_log_steps(images: Path, tmp_path: Path) -> None:
    summary = pretrain(
        _config(images, tmp_path, "trainer.max_steps=7", "trainer.log_every_n_steps=5")
    )
    rows = _collapse_rows(tmp_path)
    assert [step + 1 for step, _, _ in rows] == [5]
    # Step 7 is measured for the summary (Lightning writes no row for it here).
    assert math.isfinite(summary["collapse_std"]) and summary["collapse_std"] != rows[0][1]
    assert 1.0 <= summary["collapse_effective_rank"] <= 4.0 + 1e-6


def test_off_writes_no_statistics(images: Path, tmp_path: Path) -> None:
    summary = pretrain(
        _config(images, tmp_path, "trainer.max_steps=2", "trainer.collapse_statistics=false")
    )
    assert summary["collapse_std"] is None and summary["collapse_effective_rank"] is None
    assert not any("collapse/std" in row for row in _rows(tmp_path))


@pytest.mark.parametrize(("enabled", "monitors"), [(True, 1), (False, 0)])
def test_the_switch_adds_the_monitor(
    images: Path, tmp_path: Path, enabled: bool, monitors: int
) -> None:
    config = _config(images, tmp_path, f"trainer.collapse_statistics={str(enabled).lower()}")
    _, callbacks = build_trainer(config, tmp_path)
    assert sum(isinstance(c, CollapseMonitor) for c in callbacks) == monitors


def test_negative_period_is_refused() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be >= 0"):
        CollapseMonitor(-2)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_measure_changes_nothing_and_matches_the_functions(mode: str) -> None:
    torch.manual_seed(0)
    method = TinyMethod(input_size=8)
    method.train(mode == "train")
    method.head.eval()  # a submodule in another mode than its parent keeps it
    before = {k: v.clone() for k, v in method.state_dict().items()}
    images = torch.rand(6, 3, 8, 8)
    rng = torch.get_rng_state()
    monitor = CollapseMonitor()
    stats = monitor.measure(method, images)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in method.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm running stats included
    assert all(p.grad is None for p in method.parameters())
    assert method.training is (mode == "train") and not method.head.training
    method.eval()
    expected = collapse_statistics(method.backbone(images).detach())
    assert stats == pytest.approx(expected)
    assert monitor.last == stats
    assert detached_features(method, images).dtype == torch.float32


@pytest.mark.parametrize(
    ("views", "index"),
    [
        ([torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)], 0),
        ([torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 3, 4, 4)], 1),  # a mask first
        ([torch.zeros(2, 5, 5, 2)[..., 0]], None),  # grids only
    ],
)
def test_first_image_view(views: list[torch.Tensor], index: int | None) -> None:
    found = first_image_view(views)
    if index is None:
        assert found is None
    else:
        assert found is views[index]


@pytest.mark.parametrize(
    "needle", ["collapse/std", "collapse/effective_rank", "trainer.collapse_statistics=false"]
)
def test_help_documents_the_statistics(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    from fastssl.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert needle in " ".join(capsys.readouterr().out.split())
