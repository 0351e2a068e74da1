from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from lightly.models.modules.masked_vision_transformer_timm import (
    MaskedVisionTransformerTIMM as LightlyMaskedViT,
)
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from fastssl.models.modules.masked_vision_transformer_timm import (
    MaskedVisionTransformerTIMM,
    init_weights,
)

DIM = 32
NUM_PATCHES = 16

# timm ViT variants: plain class token, class + register tokens, no_embed_class with mean
# pooling and no class token, and dynamic image size.
VARIANTS: dict[str, dict[str, object]] = {
    "cls": {},
    "cls+reg": {"reg_tokens": 2},
    "no_embed_class": {"class_token": False, "no_embed_class": True, "global_pool": "avg"},
    "dynamic": {"dynamic_img_size": True},
}


def _vit(**kwargs: object) -> VisionTransformer:
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=DIM, depth=2, num_heads=2, **kwargs
    )


def _pair(
    vit_kwargs: dict[str, object], **kwargs: object
) -> tuple[MaskedVisionTransformerTIMM, LightlyMaskedViT]:
    torch.manual_seed(0)
    ours = MaskedVisionTransformerTIMM(vit=_vit(**vit_kwargs), **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        ours.mask_token.normal_()
    theirs = LightlyMaskedViT(vit=_vit(**vit_kwargs), **kwargs)  # type: ignore[arg-type]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    return ours, theirs


def _masks(batch: int, prefix: int) -> dict[str, dict[str, Tensor]]:
    seq = prefix + NUM_PATCHES
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(NUM_PATCHES, generator=g) + prefix for _ in range(batch)])
    bool_mask = torch.zeros(batch, seq, dtype=torch.bool).scatter(1, perm[:, :6], True)
    return {
        "none": {},
        "idx_keep": {"idx_keep": perm[:, 6:]},
        "idx_mask": {"idx_mask": perm[:, :6]},
        "mask": {"mask": bool_mask},
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", ["none", "idx_keep", "idx_mask", "mask"])
def test_matches_lightly(variant: str, case: str) -> None:
    ours, theirs = _pair(VARIANTS[variant])
    images = torch.randn(3, 3, 32, 32)
    kwargs = _masks(3, int(ours.vit.num_prefix_tokens))[case]
    torch.testing.assert_close(ours.encode(images, **kwargs), theirs.encode(images, **kwargs))
    torch.testing.assert_close(ours(images, **kwargs), theirs(images, **kwargs))
    out, inter = ours.forward_intermediates(images, norm=True, **kwargs)
    out_l, inter_l = theirs.forward_intermediates(images, norm=True, **kwargs)
    torch.testing.assert_close(out, out_l)
    for a, b in zip(inter, inter_l, strict=True):
        torch.testing.assert_close(a, b)


def test_dynamic_image_size_matches_lightly() -> None:
    ours, theirs = _pair(VARIANTS["dynamic"])
    images = torch.randn(2, 3, 48, 48)
    out = ours.encode(images)
    assert out.shape == (2, 1 + 36, DIM)
    torch.testing.assert_close(out, theirs.encode(images))


@pytest.mark.parametrize("variant", ["cls", "cls+reg"])
def test_shapes(variant: str) -> None:
    model = MaskedVisionTransformerTIMM(vit=_vit(**VARIANTS[variant]))
    prefix = int(model.vit.num_prefix_tokens)
    assert model.sequence_length == prefix + NUM_PATCHES
    images = torch.randn(4, 3, 32, 32)
    idx_keep = torch.tensor([[0, 5, 9]] * 4)
    assert model.encode(images).shape == (4, prefix + NUM_PATCHES, DIM)
    assert model.encode(images, idx_keep=idx_keep).shape == (4, 3, DIM)
    assert model(images, idx_keep=idx_keep).shape == (4, DIM)
    assert model.add_prefix_tokens(torch.zeros(4, NUM_PATCHES, DIM)).shape[1] == prefix + 16


def test_masked_tokens_are_mask_token_plus_position() -> None:
    # Register tokens and class token first, then patches; positions on every token.
    model = MaskedVisionTransformerTIMM(vit=_vit(reg_tokens=1))
    with torch.no_grad():
        model.mask_token.normal_()
    images = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 18, dtype=torch.bool)
    mask[0, [2, 7]] = True
    mask[1, [17]] = True
    vit = model.vit
    tokens = torch.cat(
        [vit.cls_token.expand(2, -1, -1), vit.reg_token.expand(2, -1, -1), vit.patch_embed(images)],
        dim=1,
    )
    expected = torch.where(mask[..., None], model.mask_token, tokens) + vit.pos_embed
    torch.testing.assert_close(model.preprocess(images, mask=mask), expected)


def test_no_embed_class_positions_only_on_patches() -> None:
    model = MaskedVisionTransformerTIMM(
        vit=_vit(reg_tokens=1, no_embed_class=True), pos_embed_initialization="learn"
    )
    x = torch.randn(1, 18, DIM)  # class + register token, 16 patches
    out = model.add_pos_embed(x)
    assert torch.equal(out[:, :2], x[:, :2])
    torch.testing.assert_close(out[:, 2:], x[:, 2:] + model.vit.pos_embed)


def test_grad_checkpointing_same_values_and_gradients() -> None:
    model = MaskedVisionTransformerTIMM(vit=_vit())
    images = torch.randn(2, 3, 32, 32)
    kwargs = {"idx_mask": torch.tensor([[1, 2, 3]] * 2)}
    model.encode(images, **kwargs).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model.encode(images, **kwargs).sum().backward()
    for name, param in model.named_parameters():
        if name in grads:
            assert param.grad is not None
            torch.testing.assert_close(param.grad, grads[name])
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_grad_checkpointing_with_frozen_patch_embedding() -> None:
    # Blocks still get gradients when nothing before them requires grad.
    model = MaskedVisionTransformerTIMM(vit=_vit())
    model.set_grad_checkpointing(True)
    for p in [*model.vit.patch_embed.parameters(), model.vit.cls_token, model.mask_token]:
        p.requires_grad_(False)
    model.encode(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.vit.blocks[0].attn.qkv.weight.grad is not None


def test_weight_initialization() -> None:
    model = MaskedVisionTransformerTIMM(vit=_vit())
    qkv = model.vit.blocks[0].attn.qkv
    assert torch.equal(qkv.bias, torch.zeros_like(qkv.bias))
    assert qkv.weight.abs().max() <= math.sqrt(6 / (qkv.in_features + qkv.out_features))
    norm = model.vit.blocks[0].norm1
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert not model.vit.pos_embed.requires_grad
    layer = torch.nn.LayerNorm(4)
    with torch.no_grad():
        layer.weight.fill_(2.0)
    init_weights(layer)
    assert torch.equal(layer.weight, torch.ones(4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_initialization": "jax"}, r"weight_initialization: 'jax'"),
        ({"pos_embed_initialization": "fixed"}, r"pos_embed_initialization: 'fixed'"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MaskedVisionTransformerTIMM(vit=_vit(), **kwargs)  # type: ignore[arg-type]


def test_deterministic() -> None:
    torch.manual_seed(2)
    a = MaskedVisionTransformerTIMM(vit=_vit()).eval()
    torch.manual_seed(2)
    b = MaskedVisionTransformerTIMM(vit=_vit()).eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(images), b(images))


def test_modules_import_without_timm() -> None:
    # Block timm in a fresh interpreter: the modules import, and building a model fails with
    # an ImportError that tells how to fix it.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["timm"] = None
        import torch
        from fastssl.models.modules import masked_vision_transformer_timm as m1
        from fastssl.models.modules import masked_vision_transformer_decoder_timm as m2
        from fastssl.models.modules import masked_autoencoder_timm as m3
        from fastssl.models.modules import masked_causal_vision_transformer as m4
        builders = [
            lambda: m1.MaskedVisionTransformerTIMM(vit=None),
            lambda: m2.MaskedVisionTransformerDecoderTIMM(16, 32, 1, 2),
            lambda: m3.MAEDecoderTIMM(num_patches=16, patch_size=8),
            lambda: m4.MaskedCausalVisionTransformer(img_size=32),
        ]
        for build in builders:
            try:
                build()
            except ImportError as err:
                assert "pip install timm" in str(err), err
            else:
                raise AssertionError("no ImportError")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
