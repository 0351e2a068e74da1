"""LastCheckpoint never writes a non-finite state; metrics.csv survives a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.train.callbacks import NonFiniteStateError, non_finite_tensors
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig, apply_overrides
from fastssl.train.engine import pretrain
from fastssl.train.module import NonFiniteLossError
from tests.train._tiny import TinyMethod, make_folder

POISONED = f"{__name__}:PoisonedBatchNorm"


class PoisonedBatchNorm(TinyMethod):
    """From step ``poison_at_step`` on, the BatchNorm running variance is infinite while
    the loss (computed with batch statistics) stays finite: a diverged run that looks fine."""

    def __init__(self, input_size: int = 8, poison_at_step: int = 2) -> None:
        super().__init__(input_size=input_size)
        self.poison_at_step = poison_at_step

    def before_optimizer_step(self, info: StepInfo) -> None:
        super().before_optimizer_step(info)
        if info.step >= self.poison_at_step:  # after the backward pass of step info.step
            with torch.no_grad():
                self.backbone[1].running_var.fill_(float("inf"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    base = [
        f"method={POISONED}", f"data.path={data}", "data.input_size=8", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.max_steps=6",
        "trainer.checkpoint_every_n_steps=2", f"trainer.out={out}",
    ]  # fmt: skip
    return apply_overrides(PretrainConfig(), [*base, *overrides])


@pytest.mark.parametrize(
    ("log_every", "stopped_at"),
    [(1, 3), (100, 4)],  # checked every step / only before writing step 4's checkpoint
)
def test_non_finite_buffers_stop_the_run_and_keep_the_finite_checkpoint(
    images: Path, tmp_path: Path, log_every: int, stopped_at: int
) -> None:
    config = _config(images, tmp_path, f"trainer.log_every_n_steps={log_every}")
    with pytest.raises(NonFiniteStateError, match=rf"at step {stopped_at} .*running_var") as info:
        pretrain(config)
    assert isinstance(info.value, NonFiniteLossError)  # the same exit code as a NaN loss
    assert "last good checkpoint" in str(info.value) and "(step 2)" in str(info.value)
    checkpoint = read_checkpoint(tmp_path / "last.ckpt")
    assert checkpoint["global_step"] == 2
    for key, value in method_state_dict(checkpoint).items():
        assert torch.isfinite(value.float()).all(), key
    assert not (tmp_path / "last.ckpt.tmp").exists()


def test_non_finite_state_is_never_the_first_checkpoint(images: Path, tmp_path: Path) -> None:
    config = _config(images, tmp_path, "method_kwargs.poison_at_step=0")
    with pytest.raises(NonFiniteStateError, match="no checkpoint of this run was written"):
        pretrain(config)
    assert not (tmp_path / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, []), (float("nan"), ["1.running_var"]), (float("inf"), ["1.running_var"])],
)
def test_non_finite_tensors_names_them(value: float, expected: list[str]) -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net[1].running_var.fill_(value)
    assert non_finite_tensors(net) == expected


def test_metrics_before_a_resume_are_kept(images: Path, tmp_path: Path) -> None:
    args = ("method_kwargs.poison_at_step=1000", "trainer.log_every_n_steps=1")
    pretrain(_config(images, tmp_path, *args, "trainer.max_steps=2"))
    pretrain(_config(images, tmp_path, *args, "trainer.max_steps=4"), resume="auto")
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [int(float(row["step"])) for row in rows if row.get("train/loss")]
    assert losses == [0, 1, 2, 3]  # 2 steps, then 2 more after the resume, none lost


@pytest.mark.parametrize(("method", "network"), [("dino", "ema"), ("byol", "online")])
def test_online_probes_score_the_network_fastssl_eval_scores(method: str, network: str) -> None:
    """The online kNN and linear probe score what `fastssl eval` scores by default: DINO's
    teacher, BYOL's online backbone (a student perturbed away from its teacher shows it)."""
    from fastssl.train.callbacks import OnlineLinearProbe, scored_network
    from tests.methods.test_registry import BACKBONES, build

    model = build(method)
    with torch.no_grad():
        for param in model.backbone.parameters():
            param.add_(0.5 * torch.randn_like(param))
    expected = model.ema_backbone() if network == "ema" else model.backbone
    assert scored_network(model) is expected
    size = BACKBONES.get(method, (None, 16))[1]
    images = torch.randn(3, 3, size, size)
    features = OnlineLinearProbe.features(model, images)
    with torch.no_grad():
        want = expected.eval()(images).flatten(start_dim=1)
        other = (model.backbone if network == "ema" else model.ema_backbone()).eval()(images)
    torch.testing.assert_close(features, want)
    assert not torch.allclose(features, other.flatten(start_dim=1))


@pytest.mark.parametrize("section", ["knn", "linear"])
@pytest.mark.parametrize("missing", ["train", "val"])
def test_online_evaluations_name_a_missing_folder(
    section: str, missing: str, tmp_path: Path
) -> None:
    from fastssl.train.callbacks import OnlineKNN, OnlineLinearProbe

    folder = make_folder(tmp_path / "images", n=4, size=8)
    folders = {"train": str(folder), "val": str(folder), missing: str(tmp_path / "nowhere")}
    callback = OnlineKNN if section == "knn" else OnlineLinearProbe
    with pytest.raises(FileNotFoundError, match=rf"{section}\.{missing}=.*nowhere"):
        callback(folders["train"], folders["val"], input_size=8)
