from __future__ import annotations

import math

import pytest
import torch
from lightly.models.modules.masked_vision_transformer_torchvision import (
    MaskedVisionTransformerTorchvision as LightlyMaskedViT,
)
from torch import Tensor
from torchvision.models.vision_transformer import VisionTransformer

from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer, _sincos_2d
from fastssl.models.modules.masked_vision_transformer_torchvision import (
    MaskedVisionTransformerTorchvision,
)

# Tiny ViT: 32x32 images, 8x8 patches -> 16 patches + 1 class token.
SEQ = 17
DIM = 32


def _vit() -> VisionTransformer:
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=DIM, mlp_dim=64
    )


def _pair(**kwargs: object) -> tuple[MaskedVisionTransformerTorchvision, LightlyMaskedViT]:
    """Our model and lightly's with identical weights (ours loaded into lightly's, strict)."""
    torch.manual_seed(0)
    ours = MaskedVisionTransformerTorchvision(vit=_vit(), **kwargs)  # type: ignore[arg-type]
    # A non-zero mask token so that masking is visible in the outputs.
    with torch.no_grad():
        ours.mask_token.normal_()
    theirs = LightlyMaskedViT(vit=_vit(), **kwargs)  # type: ignore[arg-type]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    return ours, theirs


def _masks(batch: int) -> dict[str, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(SEQ - 1, generator=g) + 1 for _ in range(batch)])
    bool_mask = torch.zeros(batch, SEQ, dtype=torch.bool).scatter(1, perm[:, :6], True)
    keep = torch.cat([torch.zeros(batch, 1, dtype=torch.long), perm[:, 6:]], dim=1)
    return {
        "none": {},
        "idx_keep": {"idx_keep": keep},
        "idx_mask": {"idx_mask": perm[:, :6]},
        "mask": {"mask": bool_mask},
        "idx_mask+idx_keep": {"idx_mask": perm[:, :6], "idx_keep": perm[:, 3:9]},
    }


@pytest.mark.parametrize("case", list(_masks(1)))
@pytest.mark.parametrize("pos", ["sincos", "learn"])
def test_matches_lightly(case: str, pos: str) -> None:
    ours, theirs = _pair(pos_embed_initialization=pos)
    images = torch.randn(3, 3, 32, 32)
    kwargs = _masks(3)[case]
    torch.testing.assert_close(ours.encode(images, **kwargs), theirs.encode(images, **kwargs))
    torch.testing.assert_close(ours(images, **kwargs), theirs(images, **kwargs))
    torch.testing.assert_close(
        ours.preprocess(images, **kwargs), theirs.preprocess(images, **kwargs)
    )


def test_gradients_match_lightly() -> None:
    ours, theirs = _pair(pos_embed_initialization="learn")
    images = torch.randn(2, 3, 32, 32)
    kwargs = _masks(2)["idx_mask"]
    ours.encode(images, **kwargs).pow(2).sum().backward()
    theirs.encode(images, **kwargs).pow(2).sum().backward()
    grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        other = grads[name].grad
        if param.grad is None:
            assert other is None, name
        else:
            assert other is not None, name
            torch.testing.assert_close(param.grad, other, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size", [48, 16])
def test_other_image_size_matches_lightly(size: int) -> None:
    # The positional embedding is resized bicubically for images of another size (MSN).
    ours, theirs = _pair()
    images = torch.randn(2, 3, size, size)
    out = ours.encode(images)
    assert out.shape == (2, 1 + (size // 8) ** 2, DIM)
    torch.testing.assert_close(out, theirs.encode(images))


def test_non_square_image_raises() -> None:
    ours, _ = _pair()
    with pytest.raises(ValueError, match="square grid"):
        ours.encode(torch.randn(1, 3, 32, 48))


def test_same_seed_same_init_as_lightly() -> None:
    # Same order of random draws as lightly: the same seed gives the same model.
    torch.manual_seed(3)
    ours = MaskedVisionTransformerTorchvision(vit=_vit())
    torch.manual_seed(3)
    theirs = LightlyMaskedViT(vit=_vit())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize(
    ("kwargs", "length"),
    [({}, SEQ), ({"idx_keep": torch.tensor([[0, 2, 4]] * 4)}, 3), ({"mask": None}, SEQ)],
)
def test_shapes(kwargs: dict[str, Tensor], length: int) -> None:
    model = MaskedVisionTransformerTorchvision(vit=_vit())
    images = torch.randn(4, 3, 32, 32)
    assert model.sequence_length == SEQ
    assert model.encode(images, **kwargs).shape == (4, length, DIM)
    assert model(images, **kwargs).shape == (4, DIM)
    out, inter = model.forward_intermediates(images, **kwargs)
    assert out.shape == (4, length, DIM)
    assert len(inter) == 2 and all(t.shape == (4, length, DIM) for t in inter)


def test_forward_intermediates_consistent_with_encode() -> None:
    model = MaskedVisionTransformerTorchvision(vit=_vit()).eval()
    images = torch.randn(2, 3, 32, 32)
    kwargs = _masks(2)["idx_keep"]
    out, inter = model.forward_intermediates(images, norm=True, **kwargs)
    torch.testing.assert_close(out, model.encode(images, **kwargs))
    torch.testing.assert_close(inter[-1], out)


def test_masked_tokens_are_mask_token_plus_position() -> None:
    # Naive reference: tokenize by hand, replace masked tokens, add positions.
    model = MaskedVisionTransformerTorchvision(vit=_vit())
    with torch.no_grad():
        model.mask_token.normal_()
    images = torch.randn(2, 3, 32, 32)
    idx_mask = torch.tensor([[1, 5, 16], [2, 3, 4]])
    got = model.preprocess(images, idx_mask=idx_mask)
    vit = model.vit
    patches = vit.conv_proj(images).flatten(2).transpose(1, 2)
    expected = torch.cat([vit.class_token.expand(2, -1, -1), patches], dim=1).clone()
    for b in range(2):
        for i in idx_mask[b]:
            expected[b, i] = model.mask_token[0, 0]
    expected = expected + vit.encoder.pos_embedding
    torch.testing.assert_close(got, expected)
    # The boolean mask with the same positions gives the same tokens.
    mask = torch.zeros(2, SEQ, dtype=torch.bool).scatter(1, idx_mask, True)
    torch.testing.assert_close(model.preprocess(images, mask=mask), got)


def test_mask_token_gets_gradient_only_when_used() -> None:
    model = MaskedVisionTransformerTorchvision(vit=_vit())
    images = torch.randn(2, 3, 32, 32)
    model.encode(images).sum().backward()
    assert model.mask_token.grad is None
    model.encode(images, idx_mask=torch.tensor([[1, 2]] * 2)).sum().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_sincos_position_embedding_formula() -> None:
    model = MaskedVisionTransformerTorchvision(vit=_vit())
    pos = model.vit.encoder.pos_embedding
    assert not pos.requires_grad
    # MAE's formula: first half encodes the column, second half the row; each half is
    # [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (D/4)).
    quarter = DIM // 4
    for i in range(4):
        for j in range(4):
            row = []
            for p in (j, i):
                row += [math.sin(p / 10000 ** (k / quarter)) for k in range(quarter)]
                row += [math.cos(p / 10000 ** (k / quarter)) for k in range(quarter)]
            torch.testing.assert_close(pos[0, 1 + 4 * i + j], torch.tensor(row), atol=1e-6, rtol=0)
    assert torch.equal(pos[0, 0], torch.zeros(DIM))
    with pytest.raises(ValueError, match="divisible by 4"):
        _sincos_2d(embed_dim=6, grid_size=2, num_prefix_tokens=0)


def test_learn_and_skip_pos_embed() -> None:
    learn = MaskedVisionTransformerTorchvision(vit=_vit(), pos_embed_initialization="learn")
    assert learn.vit.encoder.pos_embedding.requires_grad
    vit = _vit()
    before = vit.encoder.pos_embedding.detach().clone()
    skip = MaskedVisionTransformerTorchvision(
        vit=vit, pos_embed_initialization="skip", weight_initialization="skip"
    )
    assert torch.equal(skip.vit.encoder.pos_embedding, before)


def test_weight_initialization() -> None:
    vit = _vit()
    head_weight = vit.encoder.layers[0].mlp[0].weight.detach().clone()
    model = MaskedVisionTransformerTorchvision(vit=vit)
    linear = model.vit.encoder.layers[0].mlp[0]
    assert not torch.equal(linear.weight, head_weight)
    assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    bound = math.sqrt(6 / (linear.in_features + linear.out_features))
    assert linear.weight.abs().max() <= bound
    conv = model.vit.conv_proj.weight
    conv_bound = math.sqrt(6 / (conv.shape[0] + conv[0].numel()))
    assert conv.abs().max() <= conv_bound
    skipped = _vit()
    conv_before = skipped.conv_proj.weight.detach().clone()
    MaskedVisionTransformerTorchvision(vit=skipped, weight_initialization="skip")
    assert torch.equal(skipped.conv_proj.weight, conv_before)


def test_custom_mask_token_is_used() -> None:
    token = torch.nn.Parameter(torch.full((1, 1, DIM), 3.0))
    model = MaskedVisionTransformerTorchvision(vit=_vit(), mask_token=token)
    assert model.mask_token is token


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_initialization": "xavier"}, r"weight_initialization: 'xavier'.*\['', 'skip'\]"),
        ({"pos_embed_initialization": "rope"}, r"pos_embed_initialization: 'rope'.*'sincos'"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MaskedVisionTransformerTorchvision(vit=_vit(), **kwargs)  # type: ignore[arg-type]


def test_idx_mask_and_mask_are_exclusive() -> None:
    model = MaskedVisionTransformerTorchvision(vit=_vit())
    with pytest.raises(ValueError, match="idx_mask and mask"):
        model.encode(
            torch.randn(1, 3, 32, 32),
            idx_mask=torch.tensor([[1]]),
            mask=torch.zeros(1, SEQ, dtype=torch.bool),
        )


def test_deterministic_and_base_class() -> None:
    torch.manual_seed(5)
    a = MaskedVisionTransformerTorchvision(vit=_vit()).eval()
    torch.manual_seed(5)
    b = MaskedVisionTransformerTorchvision(vit=_vit()).eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.encode(images), b.encode(images))
    assert isinstance(a, MaskedVisionTransformer)
    assert torch.equal(
        a.add_prefix_tokens(torch.zeros(2, 16, DIM))[:, 0], a.vit.class_token[0].expand(2, -1)
    )
    with pytest.raises(TypeError, match="abstract"):
        MaskedVisionTransformer()  # type: ignore[abstract]
