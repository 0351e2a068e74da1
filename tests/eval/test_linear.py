from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fastssl.eval.features import eval_transform, extract_features, open_labeled
from fastssl.eval.linear import (
    LinearClassifier,
    cosine_lr,
    linear_probe,
    linear_probe_augmented,
    topk_accuracy,
)
from tests.eval.conftest import make_folder


def _clusters(n: int, seed: int, d: int = 16, c: int = 4, scale: float = 1.0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 3
    labels = torch.arange(c).repeat(n // c)
    return (centers[labels] + torch.randn(len(labels), d, generator=g)) * scale, labels


@pytest.mark.parametrize("batch_norm", [True, False])
def test_learns_separable_features_and_loss_decreases(batch_norm: bool) -> None:
    x, y = _clusters(400, seed=0)
    vx, vy = _clusters(200, seed=0)  # same centers (same seed), fresh noise below
    vx = vx + 0.1 * torch.randn(vx.shape, generator=torch.Generator().manual_seed(1))
    result = linear_probe(x, y, vx, vy, num_classes=4, epochs=15, lr=0.1, batch_norm=batch_norm)
    assert result.top1 > 0.95
    assert result.top5 == 1.0  # 4 classes: the top-5 holds them all
    assert len(result.losses) == 15
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert all(b <= a + 1e-3 for a, b in zip(result.losses, result.losses[1:], strict=False))


def test_batch_norm_makes_feature_scale_irrelevant() -> None:
    x, y = _clusters(200, seed=2, scale=1000.0)
    result = linear_probe(x, y, x, y, num_classes=4, epochs=10, lr=0.1, batch_norm=True)
    assert result.top1 > 0.95 and all(math.isfinite(v) for v in result.losses)


def test_deterministic_under_seed_and_seed_matters() -> None:
    x, y = _clusters(300, seed=3)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(9)) * 3  # overlap
    runs = [linear_probe(x, y, x, y, 4, epochs=3, batch_size=32, seed=s) for s in (0, 0, 1)]
    assert runs[0].losses == runs[1].losses
    assert runs[0].losses != runs[2].losses


def test_topk_accuracy_against_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    ranked = [sorted(range(7), key=lambda c: -float(row[c])) for row in logits]
    expected = [
        sum(int(lab) in r[:k] for r, lab in zip(ranked, labels, strict=True)) / 50 for k in (1, 5)
    ]
    assert topk_accuracy(logits, labels) == pytest.approx(expected)
    assert topk_accuracy(logits[:, :3], labels % 3, (1, 5))[1] == 1.0  # k clamped to C
    with pytest.raises(ValueError, match="labels is empty"):
        topk_accuracy(logits[:0], labels[:0])


@pytest.mark.parametrize("step", [0, 1, 25, 50, 99, 150])
@pytest.mark.parametrize("warmup", [0, 10])
def test_cosine_schedule_is_lightlys_cosine_warmup_scheduler(step: int, warmup: int) -> None:
    # lightly's CosineWarmupScheduler (end_value 0.001), stepped once per optimizer step.
    from lightly.utils.scheduler import CosineWarmupScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=warmup, max_epochs=100)
    for _ in range(min(step, 99)):
        optimizer.step()
        scheduler.step()
    expected = optimizer.param_groups[0]["lr"]
    assert cosine_lr(0.4, step, 100, warmup) == pytest.approx(expected, rel=1e-6)
    assert cosine_lr(0.4, 99, 100, end_factor=0.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_classifier_shape_and_non_affine_norm(batch_norm: bool) -> None:
    model = LinearClassifier(6, 3, batch_norm=batch_norm)
    assert model(torch.randn(5, 6)).shape == (5, 3)
    assert sum(p.numel() for p in model.parameters()) == 6 * 3 + 3  # BatchNorm: no weights
    assert isinstance(model.norm, torch.nn.BatchNorm1d) is batch_norm
    assert isinstance(LinearClassifier(6, 3).norm, torch.nn.Identity)  # lightly's: none


def test_every_epoch_is_scored_and_the_best_kept() -> None:
    x, y = _clusters(200, seed=4)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 4  # overlap
    result = linear_probe(x, y, x[:100], y[:100], 4, epochs=6, batch_size=16)
    assert len(result.val_top1) == 6 and result.val_top1[-1] == result.top1
    assert result.best_top1 == max(result.val_top1) >= result.top1


class _Recorder(nn.Module):
    """A frozen "backbone" (mean colour per channel) that records the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.detach().clone())
        return self.norm(images.mean(dim=(2, 3)))


def test_augmented_probe_reads_new_crops_every_epoch_through_the_frozen_backbone(
    tmp_path: Path,
) -> None:
    folder = make_folder(tmp_path / "train", per_class=4, size=24)
    val = extract_features(_Recorder(), open_labeled(folder, eval_transform(16)))
    backbone = _Recorder()
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.seen.clear()
    result = linear_probe_augmented(
        backbone, open_labeled(folder), val.features, val.labels, num_classes=3,
        input_size=16, epochs=3, lr=1.0, batch_size=5, batch_norm=True,
    )  # fmt: skip
    # 12 images in batches of 5, the last incomplete one dropped: 2 steps x 3 epochs.
    assert [len(images) for images in backbone.seen] == [5, 5] * 3
    assert all(images.shape[-2:] == (16, 16) for images in backbone.seen)
    first, later = torch.cat(backbone.seen[:2]), torch.cat(backbone.seen[2:4])
    assert not torch.allclose(first.sort(dim=0).values, later.sort(dim=0).values)  # new crops
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())  # frozen
    assert backbone.training  # its mode is restored
    assert len(result.losses) == 3 and len(result.val_top1) == 3
    assert result.best_top1 == 1.0  # mean colours separate the classes


def test_augmented_probe_uses_lightlys_crops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastssl.eval.features as features_module

    seen: list[tuple[int, float]] = []
    real = features_module.train_transform

    def spy(input_size: int, min_scale: float = 0.08):  # type: ignore[no-untyped-def]
        seen.append((input_size, min_scale))
        return real(input_size, min_scale)

    monkeypatch.setattr(features_module, "train_transform", spy)
    folder = make_folder(tmp_path / "train", per_class=2)
    data = open_labeled(folder)
    linear_probe_augmented(
        _Recorder(), data, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 3, 12, epochs=1
    )
    assert seen == [(12, 0.08)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"val_features": torch.zeros(4, 5)}, "D=4 but val features D=5"),
        ({"val_labels": torch.zeros(3)}, "exactly one label"),
        ({"train_features": torch.zeros(4)}, r"must be \(N, D\)"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {
        "train_features": torch.zeros(4, 4),
        "train_labels": torch.zeros(4, dtype=torch.long),
        "val_features": torch.zeros(4, 4),
        "val_labels": torch.zeros(4, dtype=torch.long),
        "num_classes": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        linear_probe(**args)
