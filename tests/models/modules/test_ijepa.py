from __future__ import annotations

from typing import Any

import pytest
import torch
from lightly.models.modules import ijepa as lightly_ijepa
from torch import Tensor, nn
from torchvision.models import VisionTransformer

from fastssl.models.modules import ijepa
from tests.models.modules.heads._oracle import _randomize

ENCODER = {
    "seq_length": 17, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
    "dropout": 0.0, "attention_dropout": 0.0,
}  # fmt: skip
BACKBONE = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16,
            "mlp_dim": 32}  # fmt: skip
PREDICTOR = {
    "seq_length": 1, "num_layers": 2, "num_heads": 2, "hidden_dim": 16,
    "predictor_embed_dim": 16, "num_patches": 16, "mlp_dim": 24, "dropout": 0.0,
    "attention_dropout": 0.0,
}  # fmt: skip


def _pair(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """Built under the same seed: same architecture and the same initial weights."""
    torch.manual_seed(0)
    ours = getattr(ijepa, name)(**kwargs)
    torch.manual_seed(0)
    theirs = getattr(lightly_ijepa, name)(**kwargs)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for key, value in theirs_sd.items():
        # The fixed sine-cosine table is computed in another precision.
        torch.testing.assert_close(ours_sd[key], value, rtol=0, atol=1e-6, msg=key)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    _randomize(theirs, seed=1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _assert_same_forward(ours: nn.Module, theirs: nn.Module, x: Tensor, *args: Any) -> Tensor:
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = ours(x_ours, *args), theirs(x_theirs, *args)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    weight = torch.randn(out.shape)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        if param.grad is None:
            assert grads[name].grad is None, name
        else:
            torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-5)
    return out


def _keep(batch: int, num: int, seq: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(seq, generator=generator)[:num] for _ in range(batch)])


@pytest.mark.parametrize("masks", [0, 1, 2])
def test_encoder_matches_lightly(masks: int) -> None:
    ours, theirs = _pair("IJEPAEncoder", ENCODER)
    keep = [_keep(3, 5, 17, seed) for seed in range(masks)]
    idx_keep = None if masks == 0 else keep[0] if masks == 1 else keep
    out = _assert_same_forward(ours, theirs, torch.randn(3, 17, 16), idx_keep)
    assert out.shape == ((3, 17, 16) if masks == 0 else (3 * masks, 5, 16))


@pytest.mark.parametrize("num_patches", [9, 36])
def test_encoder_resizes_positions_for_other_image_sizes(num_patches: int) -> None:
    ours, theirs = _pair("IJEPAEncoder", ENCODER)
    x = torch.randn(2, 1 + num_patches, 16)
    pos = ours.interpolate_pos_encoding(x)
    assert pos.shape == (1, 1 + num_patches, 16)
    torch.testing.assert_close(pos, theirs.interpolate_pos_encoding(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pos[:, 0], ours.pos_embedding[:, 0])  # class token kept
    _assert_same_forward(ours, theirs, x)


def test_encoder_from_vit_encoder_shares_modules() -> None:
    vit = VisionTransformer(**BACKBONE)
    encoder = ijepa.IJEPAEncoder.from_vit_encoder(vit.encoder)
    assert encoder.layers is vit.encoder.layers and encoder.ln is vit.encoder.ln
    assert encoder.pos_embedding is vit.encoder.pos_embedding
    reference = lightly_ijepa.IJEPAEncoder.from_vit_encoder(vit.encoder)
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(encoder(x), reference(x))
    # Without a mask, the encoder is the ViT's encoder.
    torch.testing.assert_close(encoder(x), vit.encoder(x))


@pytest.mark.parametrize("masks", [0, 1, 2])
def test_backbone_matches_lightly(masks: int) -> None:
    ours, theirs = _pair("IJEPABackbone", BACKBONE)
    keep = [_keep(2, 6, 17, seed) for seed in range(masks)]
    idx_keep = None if masks == 0 else keep[0] if masks == 1 else keep
    out = _assert_same_forward(ours, theirs, torch.randn(2, 3, 32, 32), idx_keep)
    assert out.shape == ((2, 17, 16) if masks == 0 else (2 * masks, 6, 16))
    images = torch.randn(2, 3, 24, 24)  # 3x3 patches: positions are resized
    torch.testing.assert_close(ours.encode(images), theirs.encode(images), rtol=1e-4, atol=1e-5)
    tokens = ours.images_to_tokens(images, prepend_class_token=False)
    assert tokens.shape == (2, 9, 16)


def test_backbone_from_vit() -> None:
    vit = VisionTransformer(**BACKBONE)
    backbone = ijepa.IJEPABackbone.from_vit(vit)
    assert backbone.conv_proj is vit.conv_proj and backbone.class_token is vit.class_token
    assert backbone.encoder.layers is vit.encoder.layers
    reference = lightly_ijepa.IJEPABackbone.from_vit(vit)
    images = torch.randn(2, 3, 32, 32)
    out = backbone(images)
    torch.testing.assert_close(out, reference(images))
    torch.testing.assert_close(
        out[:, 0], vit.encoder(backbone.images_to_tokens(images, True))[:, 0]
    )


@pytest.mark.parametrize(("num_context", "num_target"), [(1, 1), (1, 4), (2, 3)])
def test_predictor_matches_lightly(num_context: int, num_target: int) -> None:
    ours, theirs = _pair("IJEPAPredictor", PREDICTOR)
    assert not ours.predictor_pos_embed.requires_grad
    batch = 3
    masks_x = [_keep(batch, 6, 16, seed) for seed in range(num_context)]
    masks = [_keep(batch, 4, 16, 10 + seed) for seed in range(num_target)]
    x = torch.randn(num_context * batch, 6, 24)
    args_x = masks_x[0] if num_context == 1 else masks_x
    out = _assert_same_forward(ours, theirs, x, args_x, masks)
    assert out.shape == (num_target * num_context * batch, 4, 24)


def test_predictor_is_the_documented_computation() -> None:
    torch.manual_seed(0)
    predictor = ijepa.IJEPAPredictor(**PREDICTOR)
    with torch.no_grad():
        predictor.mask_token.normal_()
    x, context, target = torch.randn(2, 5, 24), _keep(2, 5, 16, 0), _keep(2, 3, 16, 1)
    pos = predictor.predictor_pos_embed[0]
    for b in range(2):
        tokens = torch.cat(
            [
                predictor.predictor_embed(x[b]) + pos[context[b]],
                predictor.mask_token[0] + pos[target[b]],
            ]
        )
        expected = predictor.predictor_proj(predictor.ln(predictor.layers(tokens[None]))[0, 5:])
        torch.testing.assert_close(predictor(x, context, target)[b], expected)
    with pytest.raises(ValueError, match="without mask indices"):
        predictor(x, None, target)


def test_predictor_from_vit_encoder() -> None:
    vit = VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=768, mlp_dim=16)
    torch.manual_seed(0)
    ours = ijepa.IJEPAPredictor.from_vit_encoder(vit.encoder, num_patches=16)
    theirs = lightly_ijepa.IJEPAPredictor.from_vit_encoder(vit.encoder, num_patches=16)
    assert ours.layers is vit.encoder.layers and ours.ln is vit.encoder.ln
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    theirs.load_state_dict(ours.state_dict())
    x, context, target = torch.randn(2, 4, 768), _keep(2, 4, 16, 0), _keep(2, 3, 16, 1)
    torch.testing.assert_close(ours(x, context, target), theirs(x, context, target))
