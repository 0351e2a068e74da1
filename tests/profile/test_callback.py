"""The pretrain-time measurement: ThroughputMonitor's logs and what they cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from fastssl.cli import main
from fastssl.train.callbacks import ThroughputMonitor
from tests.train._tiny import TINY


class FakeTrainer:
    world_size = 1
    should_stop = False

    def __init__(self, every: int) -> None:
        self.log_every_n_steps, self.global_step = every, 0


class FakeModule:
    """Records log_dict calls; its loader has waited ``wait_s`` seconds so far."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.loader = type("L", (), {"wait_s": 0.0})()
        self.step = 0

    def log_dict(self, values: dict[str, float], **kwargs: Any) -> None:
        self.logged.append((self.step, values))


def test_monitor_logs_window_averages_on_the_logged_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0])  # train start, then step ends
    monkeypatch.setattr("fastssl.train.callbacks.time.perf_counter", lambda: next(clock))
    trainer, module, monitor = FakeTrainer(every=3), FakeModule(), ThroughputMonitor()
    monitor.on_train_start(trainer, module)  # type: ignore[arg-type]
    batch = ([torch.zeros(4, 3, 2, 2)], None, None)
    for step in range(1, 8):
        trainer.global_step = module.step = step
        module.loader.wait_s += 0.5 if step <= 3 else 0.0  # waits only in the first window
        monitor.on_train_batch_end(trainer, module, None, batch, step)  # type: ignore[arg-type]
    assert [step for step, _ in module.logged] == [3, 6]
    first = module.logged[0][1]  # steps 1-3: 4 s, 12 images, 1.5 s waited
    assert first["perf/images_per_s"] == pytest.approx(12 / 4)
    assert first["perf/data_wait_fraction"] == pytest.approx(1.5 / 4)
    assert first["perf/step_time_s"] == pytest.approx(4 / 3)
    second = module.logged[1][1]  # steps 4-6: 4 s, no wait
    assert second["perf/data_wait_fraction"] == 0.0 and second["perf/images_per_s"] == 3.0
    assert monitor.images == 28 and monitor.steps == 7


def test_callback_costs_under_2_percent_of_the_step(images: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": TINY,
                "data": {"input_size": 16, "batch_size": 4, "num_workers": 0},
                "trainer": {"accelerator": "cpu", "log_every_n_steps": 20},
            }
        )
    )
    report = tmp_path / "overhead.json"
    argv = ["profile", str(recipe), "--data", str(images), "--callback-overhead"]
    assert main([*argv, "--steps", "60", "--json", str(report), "--out", str(tmp_path)]) == 0
    result = json.loads(report.read_text())
    assert result["steps"] == 60 and result["log_every_n_steps"] == 20
    assert result["callback_us_per_step_max"] > result["callback_us_per_step_median"]
    assert result["overhead_fraction"] < 0.02
    assert (tmp_path / "callback_overhead.json").exists()
