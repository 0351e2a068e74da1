from __future__ import annotations

import pytest
import torch
from lightly.models.modules.masked_causal_vision_transformer import (
    MaskedCausalVisionTransformer as LightlyCausalViT,
)
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from fastssl.models.modules.masked_causal_vision_transformer import (
    MaskedCausalAttention,
    MaskedCausalBlock,
    MaskedCausalVisionTransformer,
    prefix_causal_attention_mask,
)

# AIM configuration: no class token, positions only on patches, 16 patches.
KWARGS: dict[str, object] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "class_token": False,
    "no_embed_class": True,
    "global_pool": "avg",
}


def _model(**overrides: object) -> MaskedCausalVisionTransformer:
    torch.manual_seed(0)
    return MaskedCausalVisionTransformer(**{**KWARGS, **overrides}).eval()


def _prefix_mask(prefix_lengths: list[int], n: int = 16) -> Tensor:
    return torch.arange(n)[None, :] >= torch.tensor(prefix_lengths)[:, None]


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("is_causal", [True, False])
def test_matches_lightly(use_mask: bool, is_causal: bool) -> None:
    ours = _model()
    theirs = LightlyCausalViT(**KWARGS).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(3, 3, 32, 32)
    mask = _prefix_mask([0, 5, 15]) if use_mask else None
    torch.testing.assert_close(
        ours.forward_features(images, mask=mask, is_causal=is_causal),
        theirs.forward_features(images, mask=mask, is_causal=is_causal),
    )


def test_causality_perturbing_a_patch() -> None:
    # Changing patch j (after the prefix) must leave every output before j unchanged and
    # change outputs at j and after; with prefix length p, every output sees all of the prefix.
    model = _model()
    prefix = 4
    mask = _prefix_mask([prefix])
    images = torch.randn(1, 3, 32, 32)
    base = model.forward_features(images, mask=mask)
    for j in (prefix, 9, 15):
        row, col = divmod(j, 4)
        perturbed = images.clone()
        perturbed[:, :, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] += 1.0
        out = model.forward_features(perturbed, mask=mask)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert (out[:, j:] - base[:, j:]).abs().amax(dim=-1).min() > 1e-4
    # A prefix patch influences every position, including earlier prefix positions.
    perturbed = images.clone()
    perturbed[:, :, 0:8, 24:32] += 1.0  # patch 3, inside the prefix
    out = model.forward_features(perturbed, mask=mask)
    assert (out - base).abs().amax(dim=-1).min() > 1e-4


def test_no_mask_is_bidirectional_timm_vit() -> None:
    # Without a mask the model is exactly timm's ViT with the same weights.
    ours = _model()
    timm_vit = VisionTransformer(**KWARGS).eval()  # type: ignore[arg-type]
    timm_vit.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours.forward_features(images), timm_vit.forward_features(images))
    torch.testing.assert_close(ours(images), timm_vit(images))


def test_attention_mask_against_naive_rule() -> None:
    mask = torch.rand(3, 7) > 0.5
    got = prefix_causal_attention_mask(mask)
    assert got.shape == (3, 1, 7, 7)
    for b in range(3):
        for i in range(7):
            for j in range(7):
                assert bool(got[b, 0, i, j]) == (j <= i or not bool(mask[b, j]))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch_size, 9\)"):
        prefix_causal_attention_mask(mask, 9)


def test_attention_against_naive_softmax() -> None:
    torch.manual_seed(0)
    attn = MaskedCausalAttention(dim=16, num_heads=2, qkv_bias=True).eval()
    x = torch.randn(2, 6, 16)
    mask = _prefix_mask([2, 0], n=6)
    out = attn(x, mask=mask)
    # Written out per head with explicit loops over allowed keys.
    q, k, v = attn.qkv(x).reshape(2, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
    heads = torch.zeros(2, 2, 6, 8)
    for b in range(2):
        for h in range(2):
            for i in range(6):
                allowed = [j for j in range(6) if j <= i or not mask[b, j]]
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / 8**0.5 for j in allowed])
                weights = scores.softmax(0)
                heads[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, allowed, strict=True))
    expected = attn.proj(heads.transpose(1, 2).reshape(2, 6, 16))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # The explicit (non-fused) path gives the same result.
    attn.fused_attn = False
    torch.testing.assert_close(attn(x, mask=mask), out, rtol=1e-4, atol=1e-5)


def test_class_token_and_patch_only_mask() -> None:
    # With a class token, a (B, num_patches) mask puts the class token in the prefix.
    model = _model(class_token=True, global_pool="token")
    images = torch.randn(2, 3, 32, 32)
    patch_mask = _prefix_mask([3, 7])
    full_mask = torch.cat([torch.zeros(2, 1, dtype=torch.bool), patch_mask], dim=1)
    out = model.forward_features(images, mask=patch_mask)
    assert out.shape == (2, 17, 32)
    torch.testing.assert_close(out, model.forward_features(images, mask=full_mask))


def test_blocks_and_gradients() -> None:
    model = _model()
    assert all(isinstance(b, MaskedCausalBlock) for b in model.blocks)
    assert all(isinstance(b.attn, MaskedCausalAttention) for b in model.blocks)
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    mask = _prefix_mask([2, 6])
    model.forward_features(images, mask=mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert "blocks.0.attn.qkv.weight" in grads
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model.train()
    model.forward_features(images, mask=mask).sum().backward()
    for name, grad in grads.items():
        param = dict(model.named_parameters())[name]
        assert param.grad is not None
        torch.testing.assert_close(param.grad, grad)


def test_deterministic() -> None:
    images = torch.randn(2, 3, 32, 32)
    mask = _prefix_mask([1, 8])
    assert torch.equal(
        _model().forward_features(images, mask=mask), _model().forward_features(images, mask=mask)
    )
