from __future__ import annotations

import lightly.loss
import pytest
import torch
import torch.nn.functional as F

from fastssl.methods.simsiam import SimSiam
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"proj_hidden_dim": 32, "pred_hidden_dim": 8, "output_dim": 16}


def make(**kwargs: object) -> SimSiam:
    return SimSiam(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    check_default_step(make())


def test_loss_is_algorithm_1_with_stop_gradient() -> None:
    torch.manual_seed(0)
    model = make()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    z0, z1 = (model.projection_head(model.backbone(v)) for v in (v0, v1))
    p0, p1 = model.prediction_head(z0), model.prediction_head(z1)
    expected = -0.5 * (
        F.cosine_similarity(p0, z1.detach()).mean() + F.cosine_similarity(p1, z0.detach()).mean()
    )
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    oracle = lightly.loss.NegativeCosineSimilarity()
    torch.testing.assert_close(loss, 0.5 * (oracle(p0, z1) + oracle(p1, z0)), rtol=1e-4, atol=1e-6)
    # The stop-gradient: the gradient equals that of the expected loss, not of one without it.
    params = list(model.parameters())
    got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(expected, params, retain_graph=True, allow_unused=True)
    without = -0.5 * (F.cosine_similarity(p0, z1).mean() + F.cosine_similarity(p1, z0).mean())
    plain = torch.autograd.grad(without, params, allow_unused=True)
    first = params.index(model.backbone[0].weight)
    torch.testing.assert_close(got[first], want[first], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got[first], plain[first], rtol=1e-3, atol=1e-7)


def test_defaults_are_the_papers() -> None:
    model = SimSiam(backbone=tiny_cnn(), input_size=16)
    assert model.projection_head.layers[-2].out_features == 2048
    assert model.prediction_head.layers[0].out_features == 512
    opt = SimSiam.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay, opt.momentum) == ("sgd", 0.05, 1e-4, 0.9)


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize("arg", ["proj_hidden_dim", "pred_hidden_dim", "output_dim"])
def test_bad_dimensions(arg: str) -> None:
    with pytest.raises(ValueError, match=f"{arg}.*-2"):
        make(**{arg: -2})
