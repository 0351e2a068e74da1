from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods.nnclr import NNCLR
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"proj_hidden_dim": 32, "pred_hidden_dim": 32, "output_dim": 16, "memory_bank_size": 64}


def make(**kwargs: object) -> NNCLR:
    return NNCLR(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    check_default_step(make())


def test_loss_uses_nearest_neighbours_of_the_support_set() -> None:
    torch.manual_seed(0)
    model = make()
    support = model.memory_bank.bank.clone()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    z0, z1 = (model.projection_head(model.backbone(v)) for v in (v0, v1))
    p0, p1 = model.prediction_head(z0), model.prediction_head(z1)

    def nearest(z: torch.Tensor) -> torch.Tensor:  # naive arg-max of cosine similarities
        rows = []
        for row in z.detach():
            sims = torch.stack([F.cosine_similarity(row, s, dim=0) for s in support])
            rows.append(support[int(sims.argmax())])
        return torch.stack(rows)

    ntxent = NTXentLoss(temperature=0.1)
    expected = 0.5 * (ntxent(nearest(z0), p1) + ntxent(nearest(z1), p0))
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    # Only the second view's projections enter the queue, after the look-ups.
    torch.testing.assert_close(model.memory_bank.bank[:6], z1.detach())
    torch.testing.assert_close(model.memory_bank.bank[6:], support[6:])


def test_evaluation_leaves_the_support_set_unchanged() -> None:
    model = make().eval()
    support = model.memory_bank.bank.clone()
    with torch.no_grad():
        model.training_step(two_views())
    assert torch.equal(model.memory_bank.bank, support)


def test_defaults_are_the_papers() -> None:
    model = NNCLR(backbone=tiny_cnn(), input_size=16)
    assert model.memory_bank.size == (98304, 256)
    assert model.criterion.temperature == 0.1 and model.criterion.gather_distributed
    assert model.prediction_head.layers[0].out_features == 4096
    assert NNCLR.optimizer_defaults.name == "lars" and NNCLR.optimizer_defaults.lr == 0.3


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize("arg", ["memory_bank_size", "output_dim"])
def test_bad_arguments(arg: str) -> None:
    with pytest.raises(ValueError, match=f"{arg}.*0"):
        make(**{arg: 0})
