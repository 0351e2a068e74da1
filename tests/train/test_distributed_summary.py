"""Multi-process summaries: rank 0 alone prints and writes them, final_loss is the mean
over ranks (2 gloo processes)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor

from fastssl.methods.base import StepInfo
from fastssl.train.engine import mean_over_ranks
from fastssl.utils import dist
from tests._distributed import run_distributed
from tests.train._tiny import TinyMethod, make_folder
from tests.train.test_linear_probe import make_separable

ROOT = Path(__file__).resolve().parents[2]
OFFSET = f"{__name__}:RankOffsetMethod"


class RankOffsetMethod(TinyMethod):
    """TinyMethod whose loss on rank r is its own plus 100 x r (the gradient is TinyMethod's):
    the mean over 2 ranks is 50 above rank 0's, which the summary must report."""

    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:  # noqa: B008
        return super().training_step(views, info) + 100.0 * dist.rank()


def _means_of_rank_values(cases: list[list[float]]) -> list[float]:
    return [mean_over_ranks(values[dist.rank()]) for values in cases]


@pytest.mark.dist
def test_mean_over_ranks_on_two_processes() -> None:
    # One pair of processes for every case (starting them is most of the time).
    cases = [[1.0, 4.0], [-3.0, 3.0], [2.0, float("nan")]]
    expected = [2.5, 0.0, float("nan")]
    for results in run_distributed(_means_of_rank_values, 2, cases):  # each rank's answers
        for got, want in zip(results, expected, strict=True):
            assert math.isnan(got) if math.isnan(want) else got == pytest.approx(want)


def test_mean_over_ranks_in_one_process_is_the_value() -> None:
    assert mean_over_ranks(1.25) == 1.25


@pytest.mark.dist
def test_two_processes_print_and_write_one_summary_with_the_mean_loss(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "images", n=16, size=12)
    train = make_separable(tmp_path / "probe_train", n=16, seed=1)
    val = make_separable(tmp_path / "probe_val", n=8, seed=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": OFFSET,
                "data": {"input_size": 8, "num_workers": 0, "batch_size": 8},
                "trainer": {"accelerator": "cpu", "log_every_n_steps": 1, "logger": "csv"},
                "linear": {"train": str(train), "val": str(val), "batch_size": 8},
            }
        )
    )
    out = tmp_path / "two"
    command = [
        sys.executable, "-m", "fastssl", "pretrain", str(recipe), "--data", str(images),
        "--max-epochs", "2", "--devices", "2", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    closing = [line for line in done.stdout.splitlines() if line.startswith("fastssl pretrain: ")]
    # The setup block's first line and the closing line, each once (rank 0 only).
    heads = [line.removeprefix("fastssl pretrain: ").split()[0] for line in closing]
    assert heads == ["setup", OFFSET], closing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    with open(out / "metrics.csv") as handle:
        rank0 = [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]
    # metrics.csv logs rank 0's own loss; the summary the mean over ranks: 50 above it,
    # give or take half the difference of the two ranks' NT-Xent parts (each < 8 here).
    assert rank0[-1] < 10
    assert abs(summary["final_loss"] - (rank0[-1] + 50.0)) < 4.0
    assert f"final loss {summary['final_loss']:.4f}" in closing[-1]
    # The online linear probe trained and scored on rank 0 while rank 1 went on.
    assert summary["linear_top1"] is not None and summary["linear_top1"] > 0.5
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
