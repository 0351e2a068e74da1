from __future__ import annotations

import math

import lightly.loss
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.mmcr import MMCR
from tests.methods._method_steps import trainable_parameters
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16, "k": 2}


def make(**kwargs: object) -> MMCR:
    return MMCR(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def views_of(k: int, batch_size: int = 6, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, 16, 16, generator=generator) for _ in range(k)]


def test_default_transform_step_trains_the_online_network_only() -> None:
    torch.manual_seed(0)
    model = make()
    pairs = [
        (model.backbone, model.backbone_momentum, "backbone"),
        (model.projection_head, model.projection_head_momentum, "projection_head"),
    ]
    check_default_step(model, pairs, m=0.99)


def test_default_transform_gives_k_views() -> None:
    model = make(k=5)
    specs = model.default_transform().view_specs
    assert len(specs) == 5 and all(s.crop_size == 16 for s in specs)
    with pytest.raises(ValueError, match=r"views\.k: .*method_kwargs"):
        model.default_transform(k=3)


@pytest.mark.parametrize("step", [0, 4, 9])
def test_momentum_encoder_moves_by_the_cosine_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.9, momentum_end=1.0)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    m = 1 - 0.1 * (math.cos(math.pi * step / 9) + 1) / 2
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), m)


@pytest.mark.parametrize("lmda", [0.0, 0.05])
def test_loss_is_lightlys_mmcr_loss_of_the_normalised_embeddings(lmda: float) -> None:
    torch.manual_seed(0)
    model = make(lmda=lmda)
    views = views_of(3)
    loss = model.training_step(views, StepInfo(step=2, max_steps=10))
    # All views are embedded as one batch (the reference code concatenates them).
    x = torch.cat(views)
    online = model.projection_head(model.backbone(x)).chunk(3)
    with torch.no_grad():
        momentum = model.projection_head_momentum(model.backbone_momentum(x)).chunk(3)
    z_o = F.normalize(torch.stack(online, dim=1), dim=-1)
    z_m = F.normalize(torch.stack(momentum, dim=1), dim=-1)
    assert z_o.shape == (6, 3, 16)
    expected = lightly.loss.MMCRLoss(lmda=lmda)(z_o, z_m)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    # Unit embeddings: centroid rows have norm <= 1, so ||C||_* <= sqrt(rank) ||C||_F <= B.
    assert loss >= -6 - 1e-4
    loss.backward()
    assert all(p.grad is None for p in model.backbone_momentum.parameters())
    assert model.projection_head.layers[0].weight.grad is not None


def test_defaults_are_the_reference_codes() -> None:
    model = MMCR(backbone=tiny_cnn(), input_size=16)
    assert (model.k, model.criterion.lmda) == (8, 0.0)
    assert (model.momentum_start, model.momentum_end) == (0.99, 0.99)
    linears = [m for m in model.projection_head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (8, 8192),
        (8192, 8192),
        (8192, 512),
    ]
    assert all(m.bias is None for m in linears)
    opt = MMCR.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay, opt.warmup_epochs) == ("lars", 0.8, 1e-6, 10)


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


def test_short_sgd_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make(k=4)
    views = views_of(4, batch_size=8)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05, momentum=0.9)
    losses = []
    for step in range(30):
        optimizer.zero_grad()
        loss = model.training_step(views, StepInfo(step=step, max_steps=30))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses


def test_any_number_of_views_and_none_is_an_error() -> None:
    model = make()
    assert model.training_step(views_of(1)).ndim == 0
    assert model.training_step(two_views()).ndim == 0
    with pytest.raises(ValueError, match="at least 1 view"):
        model.training_step([])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "'k'.*k=0"),
        ({"lmda": -0.1}, "lmda"),
        ({"momentum_start": 1.5}, "momentum_start"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
