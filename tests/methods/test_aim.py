from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from fastssl.methods.aim import AIM
from fastssl.methods.base import StepInfo
from fastssl.models.modules.masked_causal_vision_transformer import (
    MaskedCausalBlock,
    MaskedCausalVisionTransformer,
)
from fastssl.models.utils import initialize_2d_sine_cosine_positional_embedding, random_prefix_mask
from tests.methods._method_steps import (
    changed,
    default_views,
    optimizer_step,
    tiny_causal_vit,
    tiny_vit,
)

pytest.importorskip("timm")

TINY = {"head_hidden_dim": 32, "head_num_blocks": 1}
#: A timm name at the tiny size, with an option (stochastic depth) timm.create_model takes.
TIMM_NAME = (
    "timm:vit_tiny_patch16_224(patch_size=8, embed_dim=32, depth=2, num_heads=2, "
    "drop_path_rate=0.1)"
)


def tiny_timm_vit(**kwargs: object) -> nn.Module:
    """A plain timm ViT at the tiny size: class token, token pooling, a classifier."""
    from timm.models.vision_transformer import VisionTransformer

    options: dict[str, Any] = {
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
        "num_classes": 10, **kwargs,
    }  # fmt: skip
    return VisionTransformer(**options)


#: Every kind of backbone AIM takes, at the tiny size.
BACKBONES: dict[str, Callable[[], str | nn.Module]] = {
    "causal_module": tiny_causal_vit,
    "timm_module": tiny_timm_vit,
    "timm_module_avg_pool": lambda: tiny_timm_vit(class_token=False, global_pool="avg"),
    "timm_name_with_options": lambda: TIMM_NAME,
}


def make(backbone: str = "causal_module", **kwargs: object) -> AIM:
    return AIM(backbone=BACKBONES[backbone](), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_default_transform_step(backbone: str) -> None:
    torch.manual_seed(0)
    model = make(backbone)
    views = default_views(model)
    loss, before = optimizer_step(model, views, StepInfo())
    assert torch.isfinite(loss)
    assert changed(model, before, "backbone.blocks") and changed(model, before, "projection_head")
    if not backbone.startswith("timm_module"):  # a module's learned positions train
        assert not changed(model, before, "backbone.pos_embed")
    assert model(views[0]).shape == (4, 32)


def test_timm_module_is_made_prefix_causal_in_place_keeping_its_weights() -> None:
    torch.manual_seed(0)
    vit = tiny_timm_vit()
    weights = {k: v.clone() for k, v in vit.state_dict().items() if not k.startswith("head.")}
    model = AIM(backbone=vit, input_size=32, **TINY)  # type: ignore[arg-type]
    assert model.backbone is vit and isinstance(vit, MaskedCausalVisionTransformer)
    assert all(isinstance(block, MaskedCausalBlock) for block in vit.blocks)
    assert vit.num_classes == 0  # the classifier would get no gradient
    state = vit.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert model.num_patches == 16 and vit.num_prefix_tokens == 1  # the class token stays


def test_timm_name_options_reach_the_model() -> None:
    model = make("timm_name_with_options")
    vit: Any = model.backbone
    assert isinstance(vit, MaskedCausalVisionTransformer) and len(vit.blocks) == 2
    assert vit.embed_dim == 32 and vit.patch_embed.patch_size == (8, 8)
    # drop_path_rate=0.1 (timm raises it linearly to the last block).
    assert vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    # The paper's trunk: no class token, average pooling, fixed sine-cosine positions.
    assert vit.num_prefix_tokens == 0 and vit.global_pool == "avg"
    assert not vit.pos_embed.requires_grad
    expected = torch.zeros(1, 16, 32)
    initialize_2d_sine_cosine_positional_embedding(expected, has_class_token=False)
    torch.testing.assert_close(vit.pos_embed.detach(), expected)


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


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_predictions_do_not_see_later_patches(backbone: str) -> None:
    torch.manual_seed(0)
    model = make(backbone).eval()  # no stochastic depth: both passes see the same network
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


def _distilled() -> nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


@pytest.mark.parametrize(
    ("backbone", "match"),
    [
        ("timm:resnet18", r"'timm:resnet18' is not a timm VisionTransformer"),
        ("timm:vit_no_such_model", r"timm:vit_no_such_model.*timm ViT name"),
        (lambda: tiny_timm_vit(img_size=64), r"built for 64x64 images.*img_size=32"),
        (_distilled, r"plain timm VisionTransformer.*VisionTransformerDistilled"),
        (lambda: torchvision.models.resnet18(), "AIM needs a ViT backbone"),
    ],
)
def test_unusable_backbones_say_what_to_pass(backbone: object, match: str) -> None:
    given = backbone() if callable(backbone) else backbone
    with pytest.raises(ValueError, match=match):
        AIM(backbone=given, input_size=32, **TINY)  # type: ignore[arg-type]


def test_without_timm_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        AIM(backbone="vit_b_16")
