from __future__ import annotations

import pytest
import torch

from fastssl.loss.msn_loss import MSNLoss
from fastssl.loss.pmsn_loss import PMSNLoss
from fastssl.methods.base import StepInfo
from fastssl.methods.msn import MSN, PMSN
from fastssl.models.utils import random_token_mask
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
    tiny_vit,
)

TINY = {"hidden_dim": 32, "output_dim": 16, "n_prototypes": 8, "focal_views": 2}


def make(cls: type[MSN] = MSN, **kwargs: object) -> MSN:
    return cls(backbone=tiny_vit(), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [MSN, PMSN])
def test_default_transform_step_trains_anchor_and_prototypes(cls: type[MSN]) -> None:
    torch.manual_seed(0)
    model = make(cls)
    views = default_views(model)
    assert [v.shape[-1] for v in views] == [32, 32, 16, 16]
    target_before = params_of(model.target_backbone)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert torch.isfinite(loss)
    for prefix in ("backbone.", "projection_head.", "prototypes"):
        assert changed(model, before, prefix)
    anchor_before = [before[f"backbone.{n}"] for n, _ in model.backbone.named_parameters()]
    assert_ema(params_of(model.target_backbone), target_before, anchor_before, m=0.996)
    target = [*model.target_backbone.parameters(), *model.target_projection_head.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in target)
    trainable = {id(p) for m in model.trainable_modules() for p in m.parameters()}
    assert id(model.prototypes) in trainable and not trainable & {id(p) for p in target}


@pytest.mark.parametrize("step", [0, 4, 9])
def test_target_moves_by_the_linear_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.6)
    views = [torch.randn(2, 3, 32, 32)] * 2
    anchor = params_of(model.backbone) + params_of(model.projection_head)
    target = params_of(model.target_backbone) + params_of(model.target_projection_head)
    model.training_step(views, StepInfo(step=step, max_steps=10))
    after = params_of(model.target_backbone) + params_of(model.target_projection_head)
    assert_ema(after, target, anchor, m=0.6 + 0.4 * step / 9)


@pytest.mark.parametrize(("cls", "loss_cls"), [(MSN, MSNLoss), (PMSN, PMSNLoss)])
def test_loss_equals_building_blocks_with_the_same_masks(cls: type[MSN], loss_cls: type) -> None:
    torch.manual_seed(0)
    model = make(cls, gather_distributed=False)
    views = [torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)]
    views += [torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)]
    torch.manual_seed(7)
    loss = model.training_step(views, StepInfo())
    torch.manual_seed(7)
    # One mask per run of same-size anchor views: 1 + 16 tokens, then 2 * B focal 1 + 4.
    keep_random, _ = random_token_mask((3, 17), mask_ratio=0.15)
    keep_focal, _ = random_token_mask((6, 5), mask_ratio=0.15)
    assert keep_random.shape == (3, 14) and keep_focal.shape == (6, 4)
    assert (keep_random[:, 0] == 0).all()  # the class token is always kept
    with torch.no_grad():
        anchors = torch.cat(
            [
                model.projection_head(model.backbone(views[1], idx_keep=keep_random)),
                model.projection_head(model.backbone(torch.cat(views[2:]), idx_keep=keep_focal)),
            ]
        )
        targets = model.target_projection_head(model.target_backbone(views[0]))
        expected = loss_cls()(anchors, targets, model.prototypes, target_sharpen_temperature=0.25)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(2)
        model = make()
        losses.append(model.training_step(default_views(model, seed=3), StepInfo()).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MSN, {"mask_ratio": 1.0}, "mask_ratio"),
        (MSN, {"n_prototypes": 0}, "n_prototypes"),
        (MSN, {"target_sharpen_temperature": 0.0}, "target_sharpen_temperature"),
        (MSN, {"momentum_start": 2.0}, "momentum_start"),
        (MSN, {"focal_crop_size": 12}, "focal_crop_size"),
        (PMSN, {"power_law_exponent": 0.0}, "power_law_exponent"),
    ],
)
def test_bad_arguments(cls: type[MSN], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(cls, **kwargs)


def test_needs_a_vision_transformer() -> None:
    with pytest.raises(ValueError, match="not a vision transformer"):
        MSN(backbone="resnet18", input_size=32)
