from __future__ import annotations

import lightly.loss
import pytest
import torch

from fastssl.methods.barlowtwins import BarlowTwins
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 24}


def make(**kwargs: object) -> BarlowTwins:
    return BarlowTwins(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    check_default_step(make())


def test_loss_is_the_papers_cross_correlation_loss() -> None:
    torch.manual_seed(0)
    model = make()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    z0, z1 = (model.projection_head(model.backbone(v)) for v in (v0, v1))
    # Paper, Algorithm 1: standardise along the batch, cross-correlate, weigh the off-diagonal.
    n = z0.shape[0]
    a = (z0 - z0.mean(0)) / z0.std(0, unbiased=False)
    b = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    c = a.T @ b / n
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    expected = ((1 - c[eye]) ** 2).sum() + 5e-3 * (c[~eye] ** 2).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-4)
    oracle = lightly.loss.BarlowTwinsLoss(lambda_param=5e-3)(z0, z1)
    torch.testing.assert_close(loss, oracle, rtol=1e-4, atol=1e-5)


def test_defaults_are_the_papers() -> None:
    model = BarlowTwins(backbone=tiny_cnn(), input_size=16)
    assert [layer.out_features for layer in model.projection_head.layers[::3]] == [8192] * 3
    assert model.criterion.lambda_param == 5e-3 and model.criterion.gather_distributed
    opt = BarlowTwins.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay, opt.extra["lr_biases"]) == (
        "lars", 0.2, 1.5e-6, 0.0048,
    )  # fmt: skip


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lambda_param": -1.0}, "lambda_param.*-1"), ({"output_dim": 0}, "output_dim.*0")],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
