from __future__ import annotations

import pytest
import torch

from fastssl.methods.base import StepInfo
from fastssl.methods.lejepa import LeJEPA
from fastssl.models.modules.heads.redundancy import LeJEPAProjectionHead
from fastssl.transforms.dino_transform import DINOTransform
from tests.methods._method_steps import changed, default_views, optimizer_step, tiny_vit
from tests.methods._two_view_steps import tiny_cnn

TINY = {"hidden_dim": 32, "output_dim": 16, "n_local_views": 2, "sigreg_num_vectors": 64}


def make(backbone: str = "cnn", **kwargs: object) -> LeJEPA:
    net = {"vit": tiny_vit, "cnn": tiny_cnn}.get(backbone, lambda: backbone)()
    return LeJEPA(backbone=net, input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("backbone", ["resnet18", "vit"])
def test_default_transform_step_trains_backbone_and_head(backbone: str) -> None:
    torch.manual_seed(0)
    model = make(backbone)
    transform = model.default_transform()
    assert isinstance(transform, DINOTransform)
    specs = transform.view_specs
    assert [s.crop_scale for s in specs] == [(0.3, 1.0)] * 2 + [(0.05, 0.3)] * 2
    assert [s.blur_prob for s in specs] == [0.5] * 4
    views = default_views(model, batch_size=4)
    local = 16 if backbone == "vit" else 14  # 96/224 of 32 px, in whole 8 px patches for ViTs
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(local, local)] * 2
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert changed(model, before, "backbone.") and changed(model, before, "projection_head.")
    assert isinstance(model.projection_head, LeJEPAProjectionHead)
    assert model.ema_backbone() is None and LeJEPA.eval_network == "online"
    assert model(views[0]).shape == (4, model.feature_dim)


def test_loss_equals_lightlys_on_the_same_projections() -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    torch.manual_seed(0)
    model = make(lambda_param=0.3)
    views = [torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)] + [
        torch.randn(6, 3, 14, 14) for _ in range(3)
    ]
    model.eval()  # batch norm with running statistics: projections independent of grouping
    torch.manual_seed(5)  # SIGReg's random directions
    loss = model.training_step(views)
    with torch.no_grad():
        global_proj = torch.stack([model.project(v) for v in views[:2]])
        local_proj = torch.stack([model.project(v) for v in views[2:]])
    reference = lightly_loss.LeJEPALoss(lambda_param=0.3, sigreg_num_vectors=64)
    torch.manual_seed(5)
    expected = reference(global_proj=global_proj, local_proj=local_proj)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_head_batch_norm_sees_each_group_of_views_together() -> None:
    # As lightly's benchmark: the global views in one forward, then the local views.
    torch.manual_seed(0)
    model = make()
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 14, 14)]
    seen: list[int] = []
    hook = model.projection_head.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    model.training_step(views)
    hook.remove()
    assert seen == [8, 4]


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        views = default_views(model, seed=1)
        torch.manual_seed(4)
        losses.append(model.training_step(views, StepInfo()).item())
    assert losses[0] == losses[1]


def test_short_optimisation_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make(lambda_param=0.5)
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(16, 3, 32, 32, generator=generator) for _ in range(2)] + [
        torch.randn(16, 3, 14, 14, generator=generator) for _ in range(2)
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same SIGReg directions every step: a fixed objective
        optimizer.zero_grad()
        loss = model.training_step(views)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_local_views": 0}, "n_local_views"),
        ({"lambda_param": 1.5}, "lambda_param"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_layers": 1}, "num_layers"),
        ({"sigreg_num_vectors": 0}, "sigreg_num_vectors"),
        ({"sigreg_knots": 1}, "sigreg_knots"),
        ({"sigreg_t_max": 0.0}, "t_max"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make("cnn", **kwargs)


def test_needs_a_local_view() -> None:
    with pytest.raises(ValueError, match="at least 1 local view"):
        make().training_step([torch.randn(2, 3, 32, 32)] * 2)
