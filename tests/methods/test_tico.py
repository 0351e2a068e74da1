from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.tico import TiCo
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16}


def make(**kwargs: object) -> TiCo:
    return TiCo(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_the_online_network_only() -> None:
    torch.manual_seed(0)
    model = make()
    pairs = [
        (model.backbone, model.backbone_momentum, "backbone"),
        (model.projection_head, model.projection_head_momentum, "projection_head"),
    ]
    check_default_step(model, pairs, m=0.996)


@pytest.mark.parametrize("step", [0, 9])
def test_momentum_encoder_moves_by_the_cosine_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.8)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    m = 1 - 0.2 * (math.cos(math.pi * step / 9) + 1) / 2
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), m)


def test_loss_is_algorithm_1_with_a_running_covariance() -> None:
    torch.manual_seed(0)
    model = make()
    covariance = torch.zeros(16, 16)
    for step in range(2):  # the second step uses the covariance of the first
        v0, v1 = two_views(seed=step)
        loss = model.training_step([v0, v1], StepInfo(step=step, max_steps=10))
        z0 = F.normalize(model.projection_head(model.backbone(v0)), dim=1)
        z1 = F.normalize(model.projection_head_momentum(model.backbone_momentum(v1)), dim=1)
        covariance = 0.9 * covariance + 0.1 * (z0.T @ z0).detach() / z0.shape[0]
        expected = 1 - (z0 * z1).sum(1).mean() + 8.0 * ((z0 @ covariance) * z0).sum(1).mean()
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    model.eval()
    before = model.criterion.C
    model.training_step(two_views(seed=5))
    assert model.criterion.C is before  # evaluation leaves the covariance alone


def test_defaults() -> None:
    model = TiCo(backbone=tiny_cnn(), input_size=16)
    assert (model.criterion.beta, model.criterion.rho) == (0.9, 8.0)
    assert (model.momentum_start, model.momentum_end) == (0.996, 1.0)
    assert model.projection_head.layers[0].out_features == 4096


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"beta": 1.5}, "beta.*1.5"), ({"momentum_start": 2.0}, "momentum_start")]
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
