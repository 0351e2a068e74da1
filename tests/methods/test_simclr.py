from __future__ import annotations

import lightly.loss
import pytest
import torch
import torch.nn.functional as F

from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods.base import StepInfo
from fastssl.methods.simclr import SimCLR
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16}


def make(**kwargs: object) -> SimCLR:
    return SimCLR(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def naive_ntxent(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """The paper's Algorithm 1, one anchor at a time over the 2N views."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    total = torch.zeros(())
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        logits = torch.stack([z[i] @ z[k] for k in others]) / t
        total = total - (z[i] @ z[positive] / t - torch.logsumexp(logits, 0))
    return total / (2 * n)


def test_default_transform_step_trains_backbone_and_head() -> None:
    torch.manual_seed(0)
    check_default_step(make())  # type: ignore[arg-type]


def test_loss_is_ntxent_of_the_projections() -> None:
    torch.manual_seed(0)
    model = make()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    # Both views go through the network together, as in the reference implementation.
    z0, z1 = model.projection_head(model.backbone(torch.cat([v0, v1]))).chunk(2)
    expected = NTXentLoss(temperature=0.1)(z0, z1)
    torch.testing.assert_close(loss, expected)
    oracle = lightly.loss.NTXentLoss(temperature=0.1)(z0, z1)
    torch.testing.assert_close(loss, oracle, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss, naive_ntxent(z0, z1, 0.1), rtol=1e-4, atol=1e-6)


def test_defaults_are_the_papers() -> None:
    model = SimCLR(backbone=tiny_cnn(), input_size=16)
    assert model.criterion.temperature == 0.1 and model.criterion.gather_distributed
    assert model.projection_head.layers[0].out_features == 2048
    assert model.projection_head.layers[-2].out_features == 128
    opt = SimCLR.optimizer_defaults
    assert (opt.name, opt.lr, opt.lr_scaling, opt.weight_decay) == ("lars", 0.3, "linear", 1e-6)
    assert model.default_transform().view_specs[0].crop_size == 16


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_dim": 0}, "hidden_dim.*0"),
        ({"output_dim": -1}, "output_dim.*-1"),
        ({"num_layers": 1}, "num_layers.*1"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("n_views", [1, 3])
def test_needs_two_views(n_views: int) -> None:
    with pytest.raises(ValueError, match=f"SimCLR needs exactly 2 views.*got {n_views}"):
        make().training_step([torch.randn(4, 3, 16, 16)] * n_views, StepInfo())
