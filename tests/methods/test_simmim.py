from __future__ import annotations

import pytest
import torch

from fastssl.methods.base import StepInfo
from fastssl.methods.simmim import SimMIM
from fastssl.models.utils import random_token_mask
from tests.methods._method_steps import changed, default_views, optimizer_step, tiny_vit


def make(**kwargs: object) -> SimMIM:
    return SimMIM(backbone=tiny_vit(), input_size=32, **kwargs)  # type: ignore[arg-type]


def test_default_transform_step_trains_encoder_mask_token_and_decoder() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model)
    loss, before = optimizer_step(model, views, StepInfo())
    assert torch.isfinite(loss)
    for prefix in ("backbone.vit.", "backbone.mask_token", "decoder."):
        assert changed(model, before, prefix)


def test_loss_is_l1_on_masked_patches_with_the_same_mask() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(3, 3, 32, 32)
    torch.manual_seed(9)
    loss = model.training_step([images])
    torch.manual_seed(9)
    _, idx_mask = random_token_mask((3, 17), mask_ratio=0.6)
    assert idx_mask.shape == (3, 10)  # int(16 * 0.4) = 6 patches kept, 10 masked
    total, count = torch.zeros(()), 0
    with torch.no_grad():
        encoded = model.backbone.encode(images, idx_mask=idx_mask)
        for b in range(3):
            for token in idx_mask[b].tolist():
                row, col = divmod(token - 1, 4)
                patch = images[b, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8]
                target = patch.permute(1, 2, 0).reshape(-1)
                total = total + (model.decoder(encoded[b, token]) - target).abs().mean()
                count += 1
    torch.testing.assert_close(loss.detach(), total / count, rtol=1e-4, atol=1e-6)


def test_masked_patches_are_replaced_by_the_mask_token() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(2, 3, 32, 32)
    _, idx_mask = random_token_mask((2, 17), mask_ratio=0.6)
    row, col = divmod(int(idx_mask[0, 0]) - 1, 4)
    changed_images = images.clone()
    changed_images[0, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(
            model.reconstruct(images, idx_mask), model.reconstruct(changed_images, idx_mask)
        )


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = make()
        losses.append(model.training_step(default_views(model, seed=5), StepInfo()).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize("mask_ratio", [0.0, 1.0, -0.5])
def test_bad_mask_ratio(mask_ratio: float) -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        make(mask_ratio=mask_ratio)


def test_needs_a_vision_transformer() -> None:
    with pytest.raises(ValueError, match="not a vision transformer"):
        SimMIM(backbone="resnet18", input_size=32)
