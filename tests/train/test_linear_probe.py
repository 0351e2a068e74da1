"""The online linear probe: trained alongside on detached features, scored each epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.train.callbacks import OnlineLinearProbe
from fastssl.train.checkpoint import method_state_dict, read_checkpoint
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import pretrain
from tests.train._tiny import TinyMethod, make_folder, tiny_config


def make_separable(root: Path, n: int = 24, size: int = 12, seed: int = 0) -> Path:
    """``n`` images in 2 classes anyone can tell apart: dark (class ``dark``) or bright."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        name, low = ("dark", 0) if i % 2 == 0 else ("bright", 170)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(low, low + 86, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), n=16)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("labeled")
    return make_separable(root / "train", n=32, seed=1), make_separable(root / "val", seed=2)


def _config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    return tiny_config(
        data, out, "data.batch_size=4", "trainer.max_epochs=3", "trainer.logger=csv", *overrides
    )


def _probe_args(labeled: tuple[Path, Path]) -> list[str]:
    train, val = labeled
    return [f"linear.train={train}", f"linear.val={val}", "linear.batch_size=8"]


def test_probe_accuracy_rises_above_chance_and_is_logged_each_epoch(
    images: Path, labeled: tuple[Path, Path], tmp_path: Path
) -> None:
    summary = pretrain(_config(images, tmp_path, *_probe_args(labeled)))
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    top1 = [float(r["linear/top1"]) for r in rows if r.get("linear/top1")]
    losses = [float(r["linear/train_loss"]) for r in rows if r.get("linear/train_loss")]
    assert len(top1) == 3  # one per epoch
    assert len(losses) == 12  # a probe step (logged) per training batch: 4 x 3
    assert top1[-1] == pytest.approx(summary["linear_top1"])
    assert summary["linear_top1"] > 0.9  # 2 balanced classes: chance is 0.5
    assert max(losses[-4:]) < min(losses[:4]) / 2  # the probe learns as training goes on
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["linear_top1"] == pytest.approx(summary["linear_top1"])
    assert on_disk["knn_top1"] is None
    # The probe and its optimizer are in the checkpoint, for a resume.
    callbacks = read_checkpoint(tmp_path / "last.ckpt")["callbacks"]
    (state,) = [v for k, v in callbacks.items() if "OnlineLinearProbe" in k]
    assert state["probe"]["classification_head.weight"].shape == (2, 8)
    assert state["optimizer"]["state"]  # momentum buffers


def test_probe_leaves_pretraining_untouched(
    images: Path, labeled: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same run with and without the probe ends with bitwise equal weights and
    BatchNorm statistics. With 2 batches accumulated per step, a gradient leaking from the
    probe into the backbone between them, a BatchNorm update by the probe's forward pass,
    or a use of the global random state would all show."""
    args = ("method_kwargs.random_aug=true", "trainer.accumulate_grad_batches=2")
    pretrain(_config(images, tmp_path / "plain", *args))
    pretrain(_config(images, tmp_path / "probed", *args, *_probe_args(labeled)))
    plain = method_state_dict(read_checkpoint(tmp_path / "plain" / "last.ckpt"))
    probed = method_state_dict(read_checkpoint(tmp_path / "probed" / "last.ckpt"))
    assert plain.keys() == probed.keys()
    for key in plain:
        assert torch.equal(plain[key], probed[key]), key


def _callback(labeled: tuple[Path, Path], **kwargs: object) -> OnlineLinearProbe:
    train, val = labeled
    return OnlineLinearProbe(str(train), str(val), input_size=8, batch_size=8, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_probe_step_gives_no_gradient_and_no_state_change_to_the_method(
    labeled: tuple[Path, Path], mode: str
) -> None:
    method = TinyMethod(input_size=8)
    method.train(mode == "train")
    method.head.eval()  # a submodule in another mode than its parent keeps it
    before = {k: v.clone() for k, v in method.state_dict().items()}
    callback = _callback(labeled)
    for _ in range(3):
        loss = callback.train_step(method, torch.device("cpu"))
        assert np.isfinite(loss)
    assert all(p.grad is None for p in method.parameters())
    for key, value in method.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm running stats included
    assert method.training is (mode == "train") and not method.head.training
    assert method.backbone[1].training is (mode == "train")
    probe = callback.probe
    assert probe is not None
    assert all(p.grad is not None for p in probe.parameters())  # the probe itself learns


def test_probe_state_round_trips(labeled: tuple[Path, Path]) -> None:
    method = TinyMethod(input_size=8)
    first = _callback(labeled)
    for _ in range(2):
        first.train_step(method, torch.device("cpu"))
    state = first.state_dict()
    second = _callback(labeled)
    second.load_state_dict(state)  # before the probe exists: applied when it is built
    assert second.passes == first.passes
    second.train_step(method, torch.device("cpu"))
    third = _callback(labeled)
    third.load_state_dict(state)
    third._ensure_probe(8, torch.device("cpu"))
    assert first.probe is not None and third.probe is not None
    for a, b in zip(first.probe.parameters(), third.probe.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_run_continues_the_probe(
    images: Path, labeled: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (*_probe_args(labeled), "trainer.max_epochs=null")
    pretrain(_config(images, tmp_path, *args, "trainer.max_steps=2"))
    callbacks = read_checkpoint(tmp_path / "last.ckpt")["callbacks"]
    (saved,) = [v for k, v in callbacks.items() if "OnlineLinearProbe" in k]
    restored: list[dict[str, torch.Tensor]] = []
    load = OnlineLinearProbe._load

    def spy(self: OnlineLinearProbe, state: dict) -> None:
        load(self, state)
        assert self.probe is not None
        restored.append({k: v.clone() for k, v in self.probe.state_dict().items()})

    monkeypatch.setattr(OnlineLinearProbe, "_load", spy)
    summary = pretrain(_config(images, tmp_path, *args, "trainer.max_steps=4"), resume="auto")
    assert summary["steps"] == 4 and summary["linear_top1"] is not None
    (probe,) = restored
    for key, value in saved["probe"].items():
        assert torch.equal(probe[key], value), key


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["linear.val=VAL"], ValueError, r"needs both linear\.train and linear\.val"),
        (["linear.train=TRAIN"], ValueError, r"needs both linear\.train and linear\.val"),
        (["linear.train=MISSING", "linear.val=VAL"], FileNotFoundError, "linear.train="),
        (["linear.train=TRAIN", "linear.val=THREE"], ValueError, "class2"),
    ],
)
def test_bad_probe_folders_fail_before_training(
    images: Path,
    labeled: tuple[Path, Path],
    tmp_path: Path,
    overrides: list[str],
    error: type[Exception],
    match: str,
) -> None:
    three = make_folder(tmp_path / "three", n=9, classes=3)
    # class0/class1 folders against the dark/bright probe classes would fail too; use
    # make_folder's classes on both sides so that only class2 is unknown.
    train = make_folder(tmp_path / "train2", n=8)
    names = {
        "TRAIN": str(train),
        "VAL": str(labeled[1]),
        "THREE": str(three),
        "MISSING": str(tmp_path / "nowhere"),
    }
    resolved = [o.split("=")[0] + "=" + names[o.split("=")[1]] for o in overrides]
    with pytest.raises(error, match=match):
        pretrain(_config(images, tmp_path / "out", *resolved))
    assert not (tmp_path / "out" / "last.ckpt").exists()
