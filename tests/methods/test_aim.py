from __future__ import annotations

import sys

import pytest
import torch

from fastssl.methods.aim import AIM
from fastssl.methods.base import StepInfo
from fastssl.models.utils import random_prefix_mask
from tests.methods._method_steps import (
    changed,
    default_views,
    optimizer_step,
    tiny_causal_vit,
    tiny_vit,
)

pytest.importorskip("timm")

TINY = {"head_hidden_dim": 32, "head_num_blocks": 1}


def make(**kwargs: object) -> AIM:
    return AIM(backbone=tiny_causal_vit(), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model)
    loss, before = optimizer_step(model, views, StepInfo())
    assert torch.isfinite(loss)
    assert changed(model, before, "backbone.blocks") and changed(model, before, "projection_head")
    assert not changed(model, before, "backbone.pos_embed")  # fixed sine-cosine positions
    assert model(views[0]).shape == (4, 32)


def test_loss_is_next_patch_mse_after_the_prefix() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(3, 3, 32, 32)
    torch.manual_seed(6)
    loss = model.training_step([images])
    torch.manual_seed(6)
    mask = random_prefix_mask((3, 16), max_prefix_length=15)
    with torch.no_grad():
        features = model.backbone.forward_features(images, mask=mask)
        pred = model.projection_head(features + model.backbone.pos_embed)
    total, count = torch.zeros(()), 0
    for b in range(3):
        for i in range(15):  # token i predicts patch i + 1, counted when it is not prefix
            if mask[b, i + 1]:
                row, col = divmod(i + 1, 4)
                patch = images[b, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8]
                target = patch.permute(1, 2, 0).reshape(-1)
                target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
                total = total + ((pred[b, i] - target) ** 2).mean()
                count += 1
    torch.testing.assert_close(loss.detach(), total / count, rtol=1e-4, atol=1e-6)


def test_predictions_do_not_see_later_patches() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(1, 3, 32, 32)
    mask = torch.arange(16).unsqueeze(0) >= 3  # prefix of 3 patches
    later = images.clone()
    later[:, :, 24:, 24:] = 9.0  # the last patch (15)
    with torch.no_grad():
        a, b = model.predict(images, mask), model.predict(later, mask)
    torch.testing.assert_close(a[:, :15], b[:, :15])  # tokens 0..14 predict patches 1..15
    assert not torch.allclose(a[:, 15], b[:, 15])


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = make()
        losses.append(model.training_step(default_views(model, seed=6), StepInfo()).item())
    assert losses[0] == losses[1]


def test_builds_from_names() -> None:
    model = AIM(backbone="timm:vit_tiny_patch16_224", input_size=32, **TINY)  # type: ignore[arg-type]
    assert (
        model.feature_dim == 192
        and model.num_patches == 4
        and model.backbone.num_prefix_tokens == 0
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_prefix_length": 0}, "max_prefix_length"),
        ({"max_prefix_length": 16}, "max_prefix_length"),
        ({"head_num_blocks": -1}, "head_num_blocks"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("backbone", ["resnet18", "vit"])
def test_needs_a_causal_vit(backbone: str) -> None:
    with pytest.raises(ValueError, match="AIM"):
        AIM(backbone=tiny_vit() if backbone == "vit" else backbone, input_size=32)


def test_without_timm_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        AIM(backbone="vit_b_16")
