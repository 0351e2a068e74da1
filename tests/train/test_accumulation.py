"""Gradient accumulation: the effective batch scales the learning rate, schedules and
checkpoints count optimizer steps, and B x 2 accumulated equals 2B at once."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.cli import main
from fastssl.methods.base import StepInfo
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.cli import add_arguments, flag_values
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import build_trainer, pretrain
from fastssl.train.module import PretrainModule
from fastssl.train.optim import scaled_lr
from tests.train._tiny import TINY, TinyMethod, make_folder, tiny_config

PER_SAMPLE = f"{__name__}:PerSampleMethod"


class PerSampleMethod(TinyMethod):
    """TinyMethod without BatchNorm and with a per-sample loss (negative cosine similarity
    of the two views' projections): nothing depends on how a batch is split, so 2 batches
    of B accumulated must train exactly as one batch of 2B."""

    def __init__(self, input_size: int = 8) -> None:
        super().__init__(input_size=input_size)
        self.backbone[1] = nn.Identity()

    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:  # noqa: B008
        z0, z1 = (self.head(self.backbone(v)) for v in views[:2])
        return -F.cosine_similarity(z0, z1.detach(), dim=1).mean() + z0.pow(2).mean()


class _FakeLoader:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    return tiny_config(
        data, out, "data.batch_size=8", "trainer.max_epochs=2", "trainer.logger=csv", *overrides
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return method_state_dict(read_checkpoint(path))


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("batch", "accumulate", "batches", "epochs", "scaling", "steps_per_epoch"),
    [
        (4, 1, 5, 2, "linear", 5),  # no accumulation: as before
        (4, 2, 5, 2, "linear", 3),  # 5 batches -> 3 steps (the epoch's last batch steps)
        (8, 4, 8, 3, "sqrt", 2),
        (2, 3, 9, 1, "linear", 3),
    ],
)
def test_lr_scales_with_the_effective_batch_and_schedules_count_optimizer_steps(
    batch: int, accumulate: int, batches: int, epochs: int, scaling: str, steps_per_epoch: int
) -> None:
    module = PretrainModule(
        TINY,
        {},
        optimizer={"lr_scaling": scaling},
        batch_size=batch,
        accumulate_grad_batches=accumulate,
        max_epochs=epochs,
    )
    module.loader = _FakeLoader(batches)  # type: ignore[assignment]
    config = module.configure_optimizers()
    assert module.effective_batch_size == batch * accumulate
    # TinyMethod: lr 0.2 at a reference batch of 8.
    expected = scaled_lr(0.2, batch * accumulate, 8, scaling)
    assert module.peak_lr() == pytest.approx(expected)
    if accumulate > 1:  # the forward batch alone would give another learning rate
        assert module.peak_lr() != pytest.approx(scaled_lr(0.2, batch, 8, scaling))
    assert module.steps_per_epoch() == steps_per_epoch
    assert module.schedule_steps == steps_per_epoch * epochs
    assert module.warmup_steps() == steps_per_epoch  # TinyMethod warms up for 1 epoch
    scheduler = config["lr_scheduler"]["scheduler"]
    assert scheduler.max_epochs == module.schedule_steps  # the cosine ends at the last step


@pytest.mark.parametrize("value", [0, -2])
def test_accumulate_below_one_is_refused(images: Path, tmp_path: Path, value: int) -> None:
    config = _config(images, tmp_path, f"trainer.accumulate_grad_batches={value}")
    with pytest.raises(ValueError, match=rf"accumulate_grad_batches must be >= 1, got {value}"):
        pretrain(config)


def test_flag_sets_the_recipe_key_and_reaches_lightning(images: Path, tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["recipe.yaml", "--accumulate-grad-batches", "4"])
    assert flag_values(args) == {"trainer.accumulate_grad_batches": 4}
    config = _config(images, tmp_path, "trainer.accumulate_grad_batches=4")
    trainer, _ = build_trainer(config, tmp_path)
    assert trainer.accumulate_grad_batches == 4


def test_two_accumulated_batches_train_as_one_batch_of_twice_the_size(
    images: Path, tmp_path: Path
) -> None:
    """B=4 x 2 accumulated == B=8: same weights, learning rates, steps and schedule.

    A per-sample loss without BatchNorm makes the gradient of the mean over 8 images the
    mean of the two halves' gradients (Lightning divides each half's loss by 2), and the
    loader's seeded permutation does not depend on the batch size, so both runs see the
    same 8 images per step. A learning rate scaled by the forward batch (4) or a schedule
    counting batches (a 4-batch warm-up instead of 2 steps) would train differently.
    """
    common = (f"method={PER_SAMPLE}", "trainer.seed=3")
    one = pretrain(_config(images, tmp_path / "one", *common, "data.batch_size=8"))
    two = pretrain(
        _config(
            images,
            tmp_path / "two",
            *common,
            "data.batch_size=4",
            "trainer.accumulate_grad_batches=2",
        )
    )
    for key in ("steps", "epochs", "peak_lr", "schedule_steps", "effective_batch_size"):
        assert one[key] == two[key], key
    assert two["steps"] == 4 and two["effective_batch_size"] == 8
    assert two["accumulate_grad_batches"] == 2 and two["batch_size"] == 4
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-5)
    a, b = _weights(tmp_path / "one" / "last.ckpt"), _weights(tmp_path / "two" / "last.ckpt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=2e-6, rtol=0, msg=key)
    # One metrics row per optimizer step, with the same learning rates.
    lrs = [[float(r["train/lr"]) for r in _rows(out) if r.get("train/lr")] for out in (
        tmp_path / "one", tmp_path / "two")]  # fmt: skip
    assert lrs[0] == pytest.approx(lrs[1]) and len(lrs[1]) == 4
    assert lrs[1][:2] == pytest.approx([0.1, 0.2])  # 1 warm-up epoch = 2 optimizer steps
    # Throughput is logged once per optimizer step too, over all of its batches.
    perf = [r for r in _rows(tmp_path / "two") if r.get("perf/images_per_s")]
    assert [int(r["step"]) for r in perf] == [0, 1, 2, 3]
    # Without accumulation the same batch of 4 trains differently (the test can tell).
    pretrain(_config(images, tmp_path / "four", *common, "data.batch_size=4"))
    c = _weights(tmp_path / "four" / "last.ckpt")
    assert not torch.allclose(c["head.weight"], a["head.weight"], atol=1e-4)


def test_checkpoints_fall_on_optimizer_steps_and_resume_exactly(
    images: Path, tmp_path: Path
) -> None:
    # 4 batches of 4 per epoch, 2 accumulated: 2 steps per epoch, 3 epochs.
    args = (
        "method_kwargs.random_aug=true",
        "data.batch_size=4",
        "trainer.accumulate_grad_batches=2",
        "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.keep_step_checkpoints=true",
    )
    full = tmp_path / "full"
    summary = pretrain(_config(images, full, *args))
    assert summary["steps"] == 6
    # One checkpoint per optimizer step, none in the middle of an accumulation (step 0).
    assert sorted(p.name for p in full.glob("step-*.ckpt")) == [
        f"step-{step:08d}.ckpt" for step in range(1, 7)
    ]
    for step in (1, 3):  # each 2 batches into an epoch
        state = read_checkpoint(full / f"step-{step:08d}.ckpt")["fastssl"]
        assert state["batches_in_epoch"] == 2 and state["batches_per_epoch"] == 4
    expected = _weights(full / "last.ckpt")
    for step in (1, 2, 3):  # mid-epoch, epoch boundary, mid-epoch
        out = tmp_path / f"resumed{step}"
        resumed = pretrain(_config(images, out, *args), resume=str(full / f"step-{step:08d}.ckpt"))
        assert resumed["steps"] == 6
        got = _weights(out / "last.ckpt")
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0, msg=key)


def test_final_loss_is_the_mean_over_the_last_steps_batches(images: Path, tmp_path: Path) -> None:
    config = _config(images, tmp_path, "data.batch_size=4", "trainer.accumulate_grad_batches=2")
    losses: list[float] = []
    original = PretrainModule.training_step

    def spy(self: PretrainModule, batch: object, batch_idx: int) -> Tensor:
        loss = original(self, batch, batch_idx)
        losses.append(float(loss.detach()))
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PretrainModule, "training_step", spy)
        summary = pretrain(config)
    assert len(losses) == 8
    assert summary["final_loss"] == pytest.approx((losses[-2] + losses[-1]) / 2)
    assert summary["final_loss"] != pytest.approx(losses[-1])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["final_loss"] == pytest.approx(summary["final_loss"])
    assert math.isfinite(on_disk["final_loss"])


def test_cli_flag_trains_with_the_effective_batch(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"method: {TINY}\ndata: {{input_size: 8, num_workers: 0, batch_size: 4}}\n"
        "trainer: {accelerator: cpu, logger: csv}\n"
    )
    code = main(
        [
            "pretrain", str(recipe), "--data", str(images), "--max-steps", "2",
            "--accumulate-grad-batches", "2", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["effective_batch_size"] == 8
    assert summary["peak_lr"] == pytest.approx(0.2)  # 0.2 x 8 / 8, not 0.2 x 4 / 8
    assert "2 steps" in capsys.readouterr().out
