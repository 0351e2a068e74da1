from __future__ import annotations

import math

import lightly.loss
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.byol import BYOL
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16}


def make(**kwargs: object) -> BYOL:
    return BYOL(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_the_online_network_only() -> None:
    torch.manual_seed(0)
    model = make()
    pairs = [
        (model.backbone, model.backbone_momentum, "backbone"),
        (model.projection_head, model.projection_head_momentum, "projection_head"),
    ]
    check_default_step(model, pairs, m=0.996)
    assert model.prediction_head in model.trainable_modules()


@pytest.mark.parametrize("step", [0, 5, 9])
def test_target_moves_by_the_cosine_tau(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.9)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    # Paper: tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2.
    tau = 1 - 0.1 * (math.cos(math.pi * step / 9) + 1) / 2
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), tau)


def test_loss_is_the_papers_symmetrised_normalised_mse() -> None:
    torch.manual_seed(0)
    model = make()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1], StepInfo(step=3, max_steps=10))
    p0, p1 = (model.prediction_head(model.projection_head(model.backbone(v))) for v in (v0, v1))
    t0, t1 = (model.projection_head_momentum(model.backbone_momentum(v)) for v in (v0, v1))
    # Paper, eq. 2 and L + L~: ||q/|q| - z'/|z'|||^2 averaged over the batch, both directions.
    mse = lambda q, z: (F.normalize(q, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()  # noqa: E731
    torch.testing.assert_close(loss, mse(p0, t1) + mse(p1, t0), rtol=1e-4, atol=1e-5)
    # lightly's benchmark loss (2 x NegativeCosineSimilarity per direction) up to the constant.
    oracle = lightly.loss.NegativeCosineSimilarity()
    lightly_loss = 2 * oracle(p0, t1) + 2 * oracle(p1, t0)
    torch.testing.assert_close(loss, lightly_loss + 4, rtol=1e-4, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.backbone_momentum.parameters())


def test_defaults_are_the_papers() -> None:
    model = BYOL(backbone=tiny_cnn(), input_size=16)
    assert (model.momentum_start, model.momentum_end) == (0.996, 1.0)
    assert model.projection_head.layers[0].out_features == 4096
    assert model.prediction_head.layers[-1].out_features == 256
    opt = BYOL.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay) == ("lars", 0.2, 1.5e-6)


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"momentum_start": 1.1}, "momentum_start.*1.1"),
        ({"momentum_end": -1.0}, "momentum_end"),
        ({"hidden_dim": 0}, "hidden_dim"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
