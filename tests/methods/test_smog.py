from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SMoGPrototypes as LightlySMoGPrototypes
from torch import Tensor, nn

from fastssl.loss.regularizer.dse import kmeans
from fastssl.methods.base import StepInfo
from fastssl.methods.smog import SMoG
from tests.methods._method_steps import default_views, optimizer_step, trainable_parameters
from tests.methods._two_view_steps import (
    changed,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16, "n_groups": 4, "memory_bank_size": 16}
TWO_VIEWS = {"n_global_views": 2, "n_local_views": 0}


def make(**kwargs: object) -> SMoG:
    return SMoG(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def crops(n_global: int, n_local: int, batch_size: int = 6, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = [16] * n_global + [7] * n_local
    return [torch.randn(batch_size, 3, s, s, generator=generator) for s in sizes]


def online(model: SMoG, views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Projections and predictions, each run of same-size views as one batch."""
    z: list[Tensor] = []
    p: list[Tensor] = []
    for size in sorted({v.shape[-1] for v in views}, reverse=True):
        run = [v for v in views if v.shape[-1] == size]
        projections = model.projection_head(model.backbone(torch.cat(run)))
        z.extend(projections.chunk(len(run)))
        p.extend(model.prediction_head(projections).chunk(len(run)))
    return z, p


def test_default_transform_step_trains_the_online_network_only() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model, batch_size=4)
    assert [v.shape[-1] for v in views] == [16] * 4 + [7] * 4
    momentum_before = [p.clone() for p in model.backbone_momentum.parameters()]
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    for prefix in ("backbone.", "projection_head.", "prediction_head."):
        assert changed(model, before, prefix), prefix
    online_before = [before[f"backbone.{n}"] for n, _ in model.backbone.named_parameters()]
    for after, ema, student in zip(
        model.backbone_momentum.parameters(), momentum_before, online_before, strict=True
    ):
        torch.testing.assert_close(after, 0.99 * ema + 0.01 * student)
        assert after.grad is None
    # The groups move by their momentum update, never by the optimizer.
    assert model.smog.group_features.grad is None
    assert id(model.smog.group_features) not in {id(q) for q in trainable_parameters(model)}


def test_two_global_views_are_lightlys_example_in_both_directions() -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS)
    views = two_views()
    groups_before = model.smog.group_features.detach().clone()
    loss = model.training_step(views, StepInfo(step=1, max_steps=10))
    z, p = online(model, views)
    with torch.no_grad():
        t = model.projection_head_momentum(model.backbone_momentum(torch.cat(views))).chunk(2)
    theirs = LightlySMoGPrototypes(groups_before.clone(), beta=0.99)
    a0, a1 = theirs.assign_groups(t[0]), theirs.assign_groups(t[1])
    groups = theirs.get_updated_group_features(torch.cat(z))
    expected = 0.5 * (
        F.cross_entropy(theirs(p[1], groups, temperature=0.1), a0)
        + F.cross_entropy(theirs(p[0], groups, temperature=0.1), a1)
    )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # The groups moved by the synchronous momentum update; the bank holds the projections.
    torch.testing.assert_close(model.smog.group_features, groups.detach())
    torch.testing.assert_close(model.memory_bank.bank[:12], torch.cat(z).detach())
    assert int(model.memory_bank.bank_ptr) == 12


def test_multi_crop_pairs_every_view_with_every_other_global_view() -> None:
    torch.manual_seed(0)
    model = make(n_global_views=2, n_local_views=2)
    views = crops(2, 2)
    groups_before = model.smog.group_features.detach().clone()
    loss = model.training_step(views, StepInfo(step=1, max_steps=10))
    z, p = online(model, views)
    with torch.no_grad():
        t = model.projection_head_momentum(model.backbone_momentum(torch.cat(views[:2])))
    theirs = LightlySMoGPrototypes(groups_before.clone(), beta=0.99)
    assignments = [theirs.assign_groups(t_g) for t_g in t.chunk(2)]
    groups = theirs.get_updated_group_features(torch.cat(z[:2]))  # global views only
    pairs = [
        F.cross_entropy(theirs(p[i], groups, temperature=0.1), assignments[g])
        for g in range(2)
        for i in range(4)
        if i != g
    ]
    assert len(pairs) == 6
    torch.testing.assert_close(loss, torch.stack(pairs).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", [1, 7])
def test_momentum_encoder_moves_by_m(step: int) -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS, momentum_start=0.9, momentum_end=0.9)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), 0.9)


def test_momentum_encoder_is_reset_every_reset_interval() -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS, reset_interval=3)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.1)
    for step in range(3):
        optimizer.zero_grad()
        model.training_step(two_views(seed=step), StepInfo(step=step, max_steps=10)).backward()
        optimizer.step()
    online_modules = (model.backbone, model.projection_head)
    ema_modules = (model.backbone_momentum, model.projection_head_momentum)
    state = [m.state_dict() for m in online_modules]
    assert any(
        not torch.equal(e.state_dict()[k], s[k])
        for e, s in zip(ema_modules, state, strict=True)
        for k in s
    )
    model.training_step(two_views(seed=3), StepInfo(step=3, max_steps=10))
    # Reset, not moved: the momentum encoder equals the online one, buffers included (both
    # then saw the same two global views, so their batch-norm statistics moved alike).
    for online_module, ema in zip(online_modules, ema_modules, strict=True):
        theirs = ema.state_dict()
        for key, value in online_module.state_dict().items():
            torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)


def test_groups_are_reclustered_from_the_bank_before_a_reset_step() -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS, reset_interval=3)
    for step in range(2):
        model.training_step(two_views(seed=step), StepInfo(step=step, max_steps=10))
    groups = model.smog.group_features.detach().clone()
    model.before_optimizer_step(StepInfo(step=1, max_steps=10))  # step 2 is no reset step
    assert torch.equal(model.smog.group_features, groups)
    torch.manual_seed(5)
    model.before_optimizer_step(StepInfo(step=2, max_steps=10))  # step 3 resets
    after_call = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_call, torch.rand(3))  # the run's random stream is untouched
    torch.manual_seed(3)  # the k-means is seeded with the step it prepares
    centroids, _ = kmeans(model.memory_bank.bank.clone(), 4)
    torch.testing.assert_close(model.smog.group_features, F.normalize(centroids, dim=1))
    assert not torch.equal(model.smog.group_features, groups)


def test_evaluating_the_loss_leaves_the_groups_and_the_bank_alone() -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS).eval()
    groups, bank = model.smog.group_features.clone(), model.memory_bank.bank.clone()
    model.training_step(two_views())
    assert torch.equal(model.smog.group_features, groups)
    assert torch.equal(model.memory_bank.bank, bank)


def test_defaults() -> None:
    model = SMoG(backbone=tiny_cnn(), input_size=224)
    assert model.smog.group_features.shape == (3000, 128)
    assert (model.smog.beta, model.temperature, model.reset_interval) == (0.99, 0.1, 300)
    assert model.memory_bank.bank.shape == (300 * 256, 128)
    assert (model.momentum_start, model.momentum_end) == (0.99, 0.99)
    assert model.projection_head.layers[0].out_features == 2048
    assert model.prediction_head.layers[-1].out_features == 128
    sizes = [s.crop_size for s in model.default_transform().view_specs]
    assert sizes == [224] * 4 + [96] * 4
    opt = SMoG.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay) == ("lars", 0.2, 1.5e-6)
    with pytest.raises(ValueError, match=r"views\.crop_counts: .*method_kwargs"):
        model.default_transform(crop_counts=(2, 2))


def test_deterministic_under_a_seed() -> None:
    check_deterministic(lambda: make(**TWO_VIEWS))


def test_short_sgd_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make(**TWO_VIEWS, reset_interval=0)
    views = two_views(batch_size=8)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05, momentum=0.9)
    losses = []
    for step in range(30):
        optimizer.zero_grad()
        loss = model.training_step(views, StepInfo(step=step, max_steps=30))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_groups": 0}, "n_groups"),
        ({"memory_bank_size": 3}, "'memory_bank_size' must be an integer >= 4"),
        ({"beta": 1.5}, "'beta'"),
        ({"n_global_views": 0}, "n_global_views"),
        ({"n_global_views": 1, "n_local_views": 0}, "at least 2 views"),
        ({"reset_interval": -1}, "reset_interval"),
        ({"momentum_end": 2.0}, "momentum_end"),
        ({"temperature": 0.0}, "'temperature'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_too_few_views() -> None:
    with pytest.raises(ValueError, match=r"needs at least 4 views .*got 2"):
        make().training_step(two_views())
