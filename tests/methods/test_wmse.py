from __future__ import annotations

import lightly.loss
import pytest
import torch
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.wmse import WMSE
from tests.methods._method_steps import default_views, optimizer_step, trainable_parameters
from tests.methods._two_view_steps import changed, tiny_cnn

TINY = {"hidden_dim": 32, "output_dim": 2, "w_size": 4}


def make(**kwargs: object) -> WMSE:
    return WMSE(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def views_of(n: int, batch_size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, 16, 16, generator=generator) for _ in range(n)]


def test_default_transform_step_trains_every_part() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model, batch_size=4)
    assert len(views) == 4 and all(v.shape == (4, 3, 16, 16) for v in views)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert changed(model, before, "backbone.") and changed(model, before, "projection_head.")


@pytest.mark.parametrize(("num_views", "w_iter"), [(2, 1), (4, 1), (3, 2)])
def test_loss_is_lightlys_wmse_loss_of_the_embeddings(num_views: int, w_iter: int) -> None:
    torch.manual_seed(0)
    model = make(num_views=num_views, w_iter=w_iter)
    views = views_of(num_views)  # 8 images: two whitened sub-batches of 4 per view
    torch.manual_seed(1)
    loss = model.training_step(views)
    # The reference code: backbone per view, projector on all views at once.
    z = model.projection_head(torch.cat([model.backbone(v) for v in views]))
    assert z.shape == (8 * num_views, 2)
    oracle = lightly.loss.WMSELoss(embedding_dim=2, w_size=4, w_iter=w_iter, num_samples=num_views)
    torch.manual_seed(1)  # the same random sub-batches
    torch.testing.assert_close(loss, oracle(z), rtol=1e-4, atol=1e-5)


def test_whitening_makes_the_loss_blind_to_the_embedding_scale() -> None:
    # Every view is whitened to identity covariance, so shrinking the embeddings towards a
    # point (the collapse an unwhitened MSE rewards) leaves the loss unchanged.
    torch.manual_seed(0)
    model = make(num_views=2)
    views = views_of(2)
    torch.manual_seed(1)
    loss = model.training_step(views)
    last = model.projection_head.layers[-1]
    assert isinstance(last, nn.Linear) and last.bias is not None
    with torch.no_grad():
        last.weight.mul_(1e-3)
        last.bias.mul_(1e-3)
    torch.manual_seed(1)
    torch.testing.assert_close(model.training_step(views), loss, rtol=1e-3, atol=1e-4)


def test_defaults_are_the_papers_w_mse_4() -> None:
    model = WMSE(backbone=tiny_cnn(), input_size=16)
    assert model.num_views == 4 and len(model.default_transform().view_specs) == 4
    linears = [m for m in model.projection_head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 1024), (1024, 128)]
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.projection_head.modules())
    assert (model.criterion.w_size, model.criterion.w_iter, model.criterion.num_samples) == (
        256,
        1,
        4,
    )
    opt = WMSE.optimizer_defaults
    assert (opt.name, opt.lr, opt.reference_batch_size, opt.weight_decay) == (
        "adamw",
        2e-3,
        256,
        1e-6,
    )


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
    model = make(num_views=2, w_size=8)
    views = views_of(2, batch_size=16)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.training_step(views)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]) - 0.3, losses


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w_size": 3}, r"'w_size'.*w_size=3 and output_dim=2"),
        ({"num_views": 1}, "'num_views'.*num_views=1"),
        ({"w_iter": 0}, "w_iter"),
        ({"num_layers": 1}, "num_layers"),
        ({"eps": 2.0}, "'eps'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_bad_batches() -> None:
    model = make()
    with pytest.raises(ValueError, match=r"num_views=4\) needs 4 views.*got 2"):
        model.training_step(views_of(2))
    with pytest.raises(ValueError, match="multiple of w_size=4"):
        model.training_step(views_of(4, batch_size=6))
