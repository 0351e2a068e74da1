from __future__ import annotations

import lightly.loss
import pytest
import torch
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.directclr import DirectCLR
from tests.methods._method_steps import trainable_parameters
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    tiny_cnn,
    two_views,
)

TINY = {"loss_dim": 4}


def make(**kwargs: object) -> DirectCLR:
    return DirectCLR(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step_trains_the_backbone() -> None:
    torch.manual_seed(0)
    model = make()
    check_default_step(model)
    # No projector: the backbone is all there is to train.
    assert {id(p) for p in model.parameters()} == {id(p) for p in model.backbone.parameters()}


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_is_lightlys_directclr_loss_of_the_backbone_features(temperature: float) -> None:
    torch.manual_seed(0)
    model = make(temperature=temperature)
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    r0, r1 = model.backbone(v0), model.backbone(v1)
    oracle = lightly.loss.DirectCLRLoss(loss_dim=4, temperature=temperature)
    torch.testing.assert_close(loss, oracle(r0, r1), rtol=1e-5, atol=1e-6)


def test_only_the_leading_sub_vector_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = make()
    features: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: features.append(out))
    loss = model.training_step(two_views())
    assert len(features) == 2  # one backbone pass per view
    grads = torch.autograd.grad(loss, features)
    for grad in grads:
        assert grad[:, :4].abs().sum() > 0
        assert torch.equal(grad[:, 4:], torch.zeros_like(grad[:, 4:]))


def test_defaults_are_the_reference_codes() -> None:
    model = DirectCLR(backbone="resnet18", input_size=32)
    assert model.loss_dim == 360 and model.criterion.loss_dim == 360
    assert model.criterion.temperature == 0.1
    assert isinstance(model.projection_head, nn.Identity)
    opt = DirectCLR.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay, opt.warmup_epochs) == ("lars", 0.3, 1e-6, 10)
    specs = model.default_transform().view_specs
    assert [s.blur_prob for s in specs] == [1.0, 0.1]  # BYOL's asymmetric pair


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


def test_short_sgd_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make()
    views = two_views(batch_size=8)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.training_step(views, StepInfo())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_dim": 9}, r"'loss_dim'.*feature dimension 8, got loss_dim=9"),
        ({"loss_dim": 0}, "'loss_dim'.*loss_dim=0"),
        ({"temperature": 0.0}, "'temperature'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_two_views_are_required() -> None:
    with pytest.raises(ValueError, match="exactly 2 views"):
        make().training_step(two_views() * 2)
