from __future__ import annotations

import lightly.loss
import pytest
import torch
import torch.nn.functional as F

from fastssl.methods.vicreg import VICReg
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 24}


def make(**kwargs: object) -> VICReg:
    return VICReg(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    check_default_step(make())


def test_loss_is_the_papers_formula() -> None:
    torch.manual_seed(0)
    model = make()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    z0, z1 = (model.projection_head(model.backbone(v)) for v in (v0, v1))

    def var_cov(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = z.shape
        std = torch.sqrt(z.var(dim=0) + 1e-4)
        z = z - z.mean(0)
        cov = z.T @ z / (n - 1)
        off = cov - torch.diag(torch.diag(cov))
        return F.relu(1 - std).mean(), (off**2).sum() / d

    (v_0, c_0), (v_1, c_1) = var_cov(z0), var_cov(z1)
    expected = 25 * F.mse_loss(z0, z1) + 25 * (v_0 + v_1) / 2 + 1 * (c_0 + c_1)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, lightly.loss.VICRegLoss()(z0, z1), rtol=1e-4, atol=1e-5)


def test_defaults_are_the_papers() -> None:
    model = VICReg(backbone=tiny_cnn(), input_size=16)
    assert [layer.out_features for layer in model.projection_head.layers[::3]] == [8192] * 3
    c = model.criterion
    assert (c.lambda_param, c.mu_param, c.nu_param, c.gather_distributed) == (25, 25, 1, True)
    opt = VICReg.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay) == ("lars", 0.2, 1e-6)


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"num_layers": 1}, "num_layers.*1"), ({"hidden_dim": 0}, "hidden_dim")]
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
