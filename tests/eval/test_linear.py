from __future__ import annotations

import math

import pytest
import torch

from fastssl.eval.linear import LinearClassifier, cosine_lr, linear_probe, topk_accuracy


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


def test_cosine_schedule() -> None:
    assert cosine_lr(0.4, 0, 100) == pytest.approx(0.4)
    assert cosine_lr(0.4, 50, 100) == pytest.approx(0.2)
    assert cosine_lr(0.4, 100, 100) == pytest.approx(0.0)
    assert cosine_lr(0.4, 25, 100) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)))


def test_classifier_shape_and_non_affine_norm() -> None:
    model = LinearClassifier(6, 3)
    assert model(torch.randn(5, 6)).shape == (5, 3)
    assert sum(p.numel() for p in model.parameters()) == 6 * 3 + 3  # BatchNorm: no weights


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
