from __future__ import annotations

import copy
import math

import lightly.loss
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.detcon import DetConB, DetConS, DetConViews, downsample_mask
from tests.methods._method_steps import changed, default_views, optimizer_step
from tests.methods._two_view_steps import check_ema_moves, tiny_cnn

TINY = {"hidden_dim": 32, "output_dim": 16}
INFO = StepInfo(step=0, max_steps=10)


def make_b(**kwargs: object) -> DetConB:
    return DetConB(backbone=tiny_cnn(maps=True), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def make_s(**kwargs: object) -> DetConS:
    return DetConS(backbone=tiny_cnn(maps=True), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def views_and_masks(batch_size: int = 8, seed: int = 0, num_ids: int = 16) -> list[torch.Tensor]:
    """Two random views and two random (B, 1, 16, 16) masks with ids below ``num_ids``."""
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, 16, 16, generator=generator) for _ in range(2)]
    masks = [
        torch.randint(0, num_ids, (batch_size, 1, 16, 16), generator=generator) for _ in range(2)
    ]
    return views + masks


def test_downsample_mask_is_the_reference_majority_vote() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (3, 1, 32, 32), generator=generator)
    # Reference code: average-pool the one-hot masks to the map's cells, then argmax.
    one_hot = F.one_hot(mask[:, 0], 5).permute(0, 3, 1, 2).float()
    expected = F.avg_pool2d(one_hot, 8).argmax(dim=1)
    torch.testing.assert_close(downsample_mask(mask, (4, 4), 5), expected, rtol=0, atol=0)
    # Cells of a size that does not divide the mask: pixel row i goes to cell i * h // H.
    grid = torch.arange(4).repeat_interleave(3).view(1, 1, 12, 1).expand(1, 1, 12, 5)
    assert downsample_mask(grid, (4, 1), 4).flatten().tolist() == [0, 1, 2, 3]


def test_sampled_regions_are_present_and_pooled_as_their_mean() -> None:
    torch.manual_seed(0)
    model = make_s(num_samples=6, grid_size=(3, 3))
    maps = torch.randn(2, 8, 4, 4)
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [4, 4, 4, 4], [4, 4, 4, 4]]).expand(2, 4, 4)
    ids = model.sample_regions(mask)
    assert ids.shape == (2, 6) and set(ids.unique().tolist()) <= {0, 1, 4}
    pooled = model.pool(maps, mask, ids)
    for b in range(2):
        for m in range(6):
            region = mask[b] == ids[b, m]
            torch.testing.assert_close(pooled[b, m], maps[b][:, region].mean(dim=1))


def test_default_transform_gives_views_then_grid_masks() -> None:
    model = DetConB(backbone="resnet18", input_size=32, **TINY)  # type: ignore[arg-type]
    assert model.feature_dim == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    transform = model.default_transform()
    assert isinstance(transform, DetConViews) and transform.grid_size == (4, 4)
    out = transform(torch.zeros(3, 40, 40, dtype=torch.uint8))
    assert [tuple(o.shape) for o in out] == [(3, 32, 32)] * 2 + [(1, 32, 32)] * 2
    assert out[2].dtype == torch.long and set(out[2].unique().tolist()) <= set(range(16))


def test_segmentation_masks_need_their_number_of_ids() -> None:
    def segment(image: torch.Tensor) -> torch.Tensor:
        return (image[0] > 0.5).long()

    with pytest.raises(ValueError, match=r"views\.mask_fn: set method_kwargs\.num_mask_ids"):
        make_b().default_transform(mask_fn=segment)
    transform = make_b(num_mask_ids=2).default_transform(mask_fn=segment)
    assert transform.grid_size is None
    out = transform(torch.rand(3, 40, 40))
    assert out[2].shape == (1, 16, 16) and set(out[2].unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match=r"views\.grid_size: .*set by the method"):
        make_b().default_transform(grid_size=(2, 2))


def test_detconb_loss_is_lightlys_loss_of_the_region_predictions_and_targets() -> None:
    torch.manual_seed(0)
    model = make_b(momentum_start=0.9)
    reference = copy.deepcopy(model)
    batch = views_and_masks()
    info = StepInfo(step=2, max_steps=10)
    torch.manual_seed(1)
    loss = model.training_step(batch, info)
    torch.manual_seed(1)  # the same sampled regions
    reference.update_ema(info)
    small0, ids0, p0 = reference.online(batch[0], batch[2])
    small1, ids1, p1 = reference.online(batch[1], batch[3])
    t0, t1 = reference.target(batch[0], small0, ids0), reference.target(batch[1], small1, ids1)
    assert p0.shape == t0.shape == (8, 16, 16) and ids0.shape == (8, 16)
    expected = lightly.loss.DetConBLoss(temperature=0.1, gather_distributed=False)(
        p0, p1, t0, t1, ids0, ids1
    )
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_detcons_loss_is_lightlys_loss_of_the_region_projections() -> None:
    torch.manual_seed(0)
    model = make_s(temperature=0.2)
    batch = views_and_masks()
    torch.manual_seed(1)
    loss = model.training_step(batch, INFO)
    torch.manual_seed(1)
    _, ids0, regions0 = model.regions(model.backbone(batch[0]), batch[2])
    _, ids1, regions1 = model.regions(model.backbone(batch[1]), batch[3])
    z0 = model.project(model.projection_head, regions0)
    z1 = model.project(model.projection_head, regions1)
    expected = lightly.loss.DetConSLoss(temperature=0.2, gather_distributed=False)(
        z0, z1, ids0, ids1
    )
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("step", [0, 5, 9])
def test_target_moves_by_the_cosine_tau(step: int) -> None:
    torch.manual_seed(0)
    model = make_b(momentum_start=0.9)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    tau = 1 - 0.1 * (math.cos(math.pi * step / 9) + 1) / 2
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), tau, views_and_masks())


@pytest.mark.parametrize(
    ("make", "online"),
    [
        (make_b, ["backbone", "projection_head", "prediction_head"]),
        (make_s, ["backbone", "projection_head"]),
    ],
)
def test_default_views_train_the_online_network_only(make: type, online: list[str]) -> None:
    torch.manual_seed(0)
    model = make()
    batch = default_views(model, batch_size=4)
    loss, before = optimizer_step(model, batch, INFO)
    assert loss.ndim == 0 and torch.isfinite(loss)
    for name in online:
        assert changed(model, before, f"{name}."), f"{name} did not move"
    if isinstance(model, DetConB):
        assert model.trainable_modules() == [getattr(model, name) for name in online]
        for name in ("backbone_momentum", "projection_head_momentum"):
            assert all(p.grad is None for p in getattr(model, name).parameters())


@pytest.mark.parametrize("make", [make_b, make_s])
def test_deterministic_under_a_seed(make: type) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses = [
            optimizer_step(model, views_and_masks(seed=s), StepInfo(step=s, max_steps=2))[0]
            for s in (0, 1)
        ]
        runs.append(torch.stack(losses))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0][0], runs[0][1])


@pytest.mark.parametrize("make", [make_b, make_s])
def test_a_short_optimisation_lowers_the_loss(make: type) -> None:
    torch.manual_seed(0)
    model = make(num_samples=4, grid_size=(2, 2))
    batch = views_and_masks(batch_size=16, num_ids=4)
    optimizer = torch.optim.SGD(
        [p for m in model.trainable_modules() for p in m.parameters()], lr=0.1, momentum=0.9
    )
    losses = []
    for step in range(40):
        torch.manual_seed(step)
        optimizer.zero_grad()
        loss = model.training_step(batch, StepInfo(step=step, max_steps=40))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_wrong_batches_are_named() -> None:
    with pytest.raises(ValueError, match=r"DetConB needs 2 views and their 2 masks.*got 2"):
        make_b().training_step(views_and_masks()[:2], INFO)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples.*0"),
        ({"grid_size": (4, 0)}, r"grid_size\[1\]"),
        ({"grid_size": (4,)}, "grid_size"),
        ({"num_mask_ids": 0}, "num_mask_ids"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"momentum_end": 1.5}, "momentum_end"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_b(**kwargs)


def test_vision_transformers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"DetConS needs a convolutional backbone.*vit_b_16"):
        DetConS(backbone="vit_b_16", input_size=32)
