from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from fastssl.eval.features import open_labeled
from fastssl.eval.finetune import Classifier, finetune, finetune_transform
from tests.eval.conftest import TinyMethod, make_folder


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return make_folder(tmp_path / "train", 6), make_folder(tmp_path / "val", 2, seed=1)


def test_one_epoch_changes_the_backbone_and_scores(folders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    backbone = TinyMethod().backbone
    before = copy.deepcopy(backbone.state_dict())
    result = finetune(
        backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), input_size=16,
        epochs=1, lr=0.1, batch_size=4,
    )  # fmt: skip
    after = backbone.state_dict()
    assert not torch.equal(before["0.weight"], after["0.weight"])  # weights trained
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])  # BN stats
    assert len(result.losses) == 1 and result.losses[0] > 0
    assert 0.0 <= result.top1 <= result.top5 == 1.0  # 3 classes: top-5 holds all


def test_backbone_lr_scale_zero_freezes_the_weights(folders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    backbone = TinyMethod().backbone
    before = backbone.state_dict()["0.weight"].clone()
    finetune(
        backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), 16, epochs=1,
        backbone_lr_scale=0.0, weight_decay=0.0, optimizer="adamw", batch_size=6,
    )  # fmt: skip
    assert torch.equal(before, backbone.state_dict()["0.weight"])


def test_deterministic_under_seed(folders: tuple[Path, Path]) -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        backbone = TinyMethod().backbone
        result = finetune(
            backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), 16, epochs=2,
            batch_size=5, seed=3,
        )  # fmt: skip
        losses.append(result.losses)
    assert losses[0] == losses[1]


def test_augmentation_output() -> None:
    torch.manual_seed(0)
    out = finetune_transform(12)(Image.new("L", (30, 20)))
    assert out.shape == (3, 12, 12)
    crop = finetune_transform(12, min_scale=0.08).transforms[1]
    assert crop.scale == (0.08, 1.0)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4, 5)), 5, 2)
    assert model(torch.randn(3, 3, 2, 2)).shape == (3, 2)


def test_bad_arguments(folders: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = open_labeled(folders[0]), open_labeled(folders[1])
    backbone = TinyMethod().backbone
    with pytest.raises(ValueError, match="optimizer='lamb' is unknown"):
        finetune(backbone, 8, train, val, 16, optimizer="lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        finetune(backbone, 8, train, val, 16, epochs=0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"min_scale must be in \(0, 1\] .*got {bad}"):
            finetune(backbone, 8, train, val, 16, min_scale=bad)
    with pytest.raises(ValueError, match="no trainable parameters"):
        finetune(nn.Flatten(), 768, train, val, 16)
    other = open_labeled(make_folder(tmp_path / "other", 1, classes=("red",)))
    with pytest.raises(ValueError, match="training set does not have"):
        finetune(backbone, 8, other, val, 16)
