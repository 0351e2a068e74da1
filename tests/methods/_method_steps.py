"""Shared pieces of the DINO / SwaV / MSN / MAE / SimMIM / AIM method tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from fastssl.data.multi_view_collate import MultiViewCollate
from fastssl.methods.base import Method, StepInfo
from fastssl.models.utils import initialize_2d_sine_cosine_positional_embedding


def tiny_vit() -> VisionTransformer:
    """A torchvision ViT small enough for CPU tests: 32 px, 8 px patches, width 32."""
    return VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def tiny_causal_vit() -> nn.Module:
    """AIM's prefix-causal ViT at the same tiny size."""
    from fastssl.models.modules.masked_causal_vision_transformer import (
        MaskedCausalVisionTransformer,
    )

    vit = MaskedCausalVisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        class_token=False,
        no_embed_class=True,
        global_pool="avg",
        num_classes=0,
    )
    # AIM's fixed sine-cosine positions, as the method builds them for named backbones.
    initialize_2d_sine_cosine_positional_embedding(vit.pos_embed, has_class_token=False)
    return vit


def default_views(model: Method, batch_size: int = 4, seed: int = 0) -> list[Tensor]:
    """Random PIL images through ``model.default_transform()``, collated view by view."""
    rng = np.random.default_rng(seed)
    transform = model.default_transform()
    torch.manual_seed(seed)
    samples = []
    for index in range(batch_size):
        pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        samples.append((transform(Image.fromarray(pixels)), 0, f"{index}.png"))
    views, _, _ = MultiViewCollate()(samples)
    return views


def trainable_parameters(model: Method) -> list[nn.Parameter]:
    """Parameters of ``model.trainable_modules()`` that require a gradient, deduplicated."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.trainable_modules():
        for param in module.parameters():
            if param.requires_grad:
                seen[id(param)] = param
    return list(seen.values())


def optimizer_step(
    model: Method, views: list[Tensor], info: StepInfo, lr: float = 0.1
) -> tuple[Tensor, dict[str, Tensor]]:
    """One SGD step as the engine does it; returns the loss and the parameters before it."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=lr)
    optimizer.zero_grad()
    loss = model.training_step(views, info)
    loss.backward()
    model.before_optimizer_step(info)
    optimizer.step()
    return loss.detach(), before


def changed(model: nn.Module, before: dict[str, Tensor], prefix: str) -> bool:
    """Whether any parameter whose name starts with ``prefix`` moved."""
    return any(
        not torch.equal(p, before[name])
        for name, p in model.named_parameters()
        if name.startswith(prefix)
    )


def params_of(module: nn.Module) -> list[Tensor]:
    """Detached copies of the parameters of ``module``."""
    return [p.detach().clone() for p in module.parameters()]


def assert_ema(
    teacher_after: list[Tensor],
    teacher_before: list[Tensor],
    student_before: list[Tensor],
    m: float,
) -> None:
    """``teacher_after == m * teacher_before + (1 - m) * student_before`` for every param."""
    assert len(teacher_after) == len(teacher_before) == len(student_before) > 0
    for after, t, s in zip(teacher_after, teacher_before, student_before, strict=True):
        torch.testing.assert_close(after, m * t + (1 - m) * s, rtol=1e-5, atol=1e-6)
