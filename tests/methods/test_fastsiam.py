from __future__ import annotations

import lightly.loss
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.fastsiam import FastSiam
from fastssl.methods.simsiam import SimSiam
from tests.methods._method_steps import default_views, optimizer_step, trainable_parameters
from tests.methods._two_view_steps import changed, tiny_cnn

TINY = {"proj_hidden_dim": 32, "pred_hidden_dim": 8, "output_dim": 16}


def make(**kwargs: object) -> FastSiam:
    return FastSiam(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def views_of(n: int, batch_size: int = 6, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, 16, 16, generator=generator) for _ in range(n)]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model, batch_size=4)
    assert len(views) == 4 and all(v.shape == (4, 3, 16, 16) for v in views)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    for prefix in ("backbone.", "projection_head.", "prediction_head."):
        assert changed(model, before, prefix), prefix


def test_loss_is_lightlys_example_with_the_mean_of_the_other_views_as_target() -> None:
    torch.manual_seed(0)
    model = make()
    views = views_of(4)
    loss = model.training_step(views)
    z = [model.projection_head(model.backbone(v)) for v in views]
    p = [model.prediction_head(z_i) for z_i in z]
    oracle = lightly.loss.NegativeCosineSimilarity()
    zs = torch.stack(z).detach()
    expected = torch.stack(
        [oracle(p[i], zs[torch.arange(4) != i].mean(dim=0)) for i in range(4)]
    ).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # Stop-gradient: the gradient is that of the loss with constant targets.
    params = list(model.parameters())
    got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(expected, params, retain_graph=True, allow_unused=True)
    plain = -torch.stack(
        [
            F.cosine_similarity(p[i], torch.stack(z)[torch.arange(4) != i].mean(dim=0)).mean()
            for i in range(4)
        ]
    ).mean()
    without = torch.autograd.grad(plain, params, allow_unused=True)
    first = 0  # the backbone's first convolution
    assert params[first] is next(model.backbone.parameters())
    torch.testing.assert_close(got[first], want[first], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got[first], without[first], rtol=1e-3, atol=1e-7)


def test_two_views_give_simsiams_loss() -> None:
    torch.manual_seed(0)
    fastsiam = make(num_views=2)
    simsiam = SimSiam(backbone=tiny_cnn(), input_size=16, **TINY)
    simsiam.load_state_dict(fastsiam.state_dict())
    views = views_of(2)
    torch.testing.assert_close(fastsiam.training_step(views), simsiam.training_step(views))


def test_defaults_are_simsiams_with_four_views() -> None:
    model = FastSiam(backbone=tiny_cnn(), input_size=16)
    assert model.num_views == 4 and len(model.default_transform().view_specs) == 4
    projector = [m for m in model.projection_head.modules() if isinstance(m, nn.Linear)]
    predictor = [m for m in model.prediction_head.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in projector] == [2048, 2048, 2048]
    assert [m.out_features for m in predictor] == [512, 2048]
    assert model.predictor_modules() == [model.prediction_head]
    assert FastSiam.optimizer_defaults == SimSiam.optimizer_defaults
    with pytest.raises(ValueError, match=r"views\.num_views: .*method_kwargs"):
        model.default_transform(num_views=3)


def test_deterministic_under_a_seed() -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = make()
        losses = [
            optimizer_step(model, views_of(4, seed=s), StepInfo(step=s, max_steps=2))[0]
            for s in range(2)
        ]
        runs.append(torch.stack(losses))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0][0], runs[0][1])


def test_short_sgd_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make()
    views = views_of(4, batch_size=8)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.training_step(views)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.1, losses


def test_bad_arguments_and_views() -> None:
    with pytest.raises(ValueError, match=r"'num_views'.*num_views=1"):
        make(num_views=1)
    with pytest.raises(ValueError, match=r"output_dim.*-2"):
        make(output_dim=-2)
    with pytest.raises(ValueError, match="at least 2 views"):
        make().training_step(views_of(1))
