from __future__ import annotations

import pytest
import torch

from fastssl.methods.base import StepInfo
from fastssl.methods.mae import MAE
from fastssl.models.modules.masked_autoencoder import MAEDecoder
from fastssl.models.modules.masked_autoencoder_timm import MAEDecoderTIMM
from fastssl.models.utils import random_token_mask
from tests.methods._method_steps import changed, default_views, optimizer_step, tiny_vit

TINY = {"decoder_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2}


def make(**kwargs: object) -> MAE:
    return MAE(backbone=tiny_vit(), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_default_transform_step() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model)
    assert len(views) == 1 and views[0].shape == (4, 3, 32, 32)
    loss, before = optimizer_step(model, views, StepInfo())
    assert torch.isfinite(loss)
    for prefix in ("backbone.", "decoder.", "mask_token"):
        assert changed(model, before, prefix)
    assert isinstance(model.decoder, MAEDecoder)  # torchvision ViT: no timm needed
    assert model(views[0]).shape == (4, 32) and model.feature_dim == 32


def test_timm_backbone_uses_the_timm_decoder() -> None:
    torch.manual_seed(0)
    model = MAE(backbone="timm:vit_tiny_patch16_224", input_size=32, **TINY)  # type: ignore[arg-type]
    assert isinstance(model.decoder, MAEDecoderTIMM) and model.feature_dim == 192
    loss = model.training_step([torch.randn(2, 3, 32, 32)])
    loss.backward()
    assert torch.isfinite(loss) and model.mask_token.grad is not None


def naive_norm_pix_mse(
    pred: torch.Tensor, images: torch.Tensor, idx_mask: torch.Tensor
) -> torch.Tensor:
    """The paper's loss, patch by patch: patches of 8x8 pixels, (row, col, channel) order."""
    total, count = torch.zeros(()), 0
    for b in range(images.shape[0]):
        for j, token in enumerate(idx_mask[b].tolist()):
            row, col = divmod(token - 1, 4)
            patch = images[b, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8].permute(1, 2, 0)
            patch = patch.reshape(-1)
            target = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
            total = total + ((pred[b, j] - target) ** 2).mean()
            count += 1
    return total / count


def test_loss_equals_building_blocks_with_the_same_mask() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(3, 3, 32, 32)
    torch.manual_seed(11)
    loss = model.training_step([images])
    torch.manual_seed(11)
    idx_keep, idx_mask = random_token_mask((3, 17), mask_ratio=0.75)
    assert idx_keep.shape == (3, 5) and idx_mask.shape == (3, 12)  # 4 of 16 patches kept
    with torch.no_grad():
        encoded = model.backbone.encode(images, idx_keep=idx_keep)
        tokens = model.mask_token.expand(3, 17, -1).clone()
        for b in range(3):  # scatter the embedded visible tokens back, one by one
            tokens[b, idx_keep[b]] = model.decoder.embed(encoded)[b]
        decoded = model.decoder.decode(tokens)
        pred = model.decoder.predict(torch.stack([decoded[b, idx_mask[b]] for b in range(3)]))
    torch.testing.assert_close(
        loss.detach(), naive_norm_pix_mse(pred, images, idx_mask), rtol=1e-4, atol=1e-6
    )


def test_encoder_sees_only_the_kept_patches() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(4)
    loss_a = model.training_step([images])
    torch.manual_seed(4)
    _, idx_mask = random_token_mask((2, 17), mask_ratio=0.75)
    # Changing a masked patch changes only the target, never the prediction.
    row, col = divmod(int(idx_mask[0, 0]) - 1, 4)
    changed_images = images.clone()
    changed_images[0, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = 0.0
    torch.manual_seed(4)
    keep, mask = random_token_mask((2, 17), mask_ratio=0.75)
    with torch.no_grad():
        pred_a = model.reconstruct(images, keep, mask)
        pred_b = model.reconstruct(changed_images, keep, mask)
    torch.testing.assert_close(pred_a, pred_b)
    assert torch.isfinite(loss_a)


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = make()
        losses.append(model.training_step(default_views(model, seed=4), StepInfo()).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"decoder_dim": 15}, "decoder_dim"),
        ({"decoder_depth": 0}, "decoder_depth"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_needs_a_vision_transformer() -> None:
    with pytest.raises(ValueError, match="not a vision transformer"):
        MAE(backbone="resnet18", input_size=32)
