"""Backbone helpers shared by the ready methods that train on feature maps, not only on
pooled features: DenseCL (dense matching), VICRegL (local features at grid locations) and
DetCon (features pooled under segmentation masks).

The backbone of such a method maps images (B, 3, H, W) to feature maps (B, C, h, w); its
``forward`` pools them to (B, C) for evaluation.

Private module: the public entry points are the method classes.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from fastssl.methods import _vit
from fastssl.models.backbones import build_backbone


class _ForwardFeatures(nn.Module):
    """A timm model returning its ``forward_features`` (the map before pooling)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.model.forward_features(images)
        return out


def _unusable(backbone: object, why: str, method: str) -> ValueError:
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    return ValueError(
        f"{method} needs a convolutional backbone with a spatial feature map, got "
        f"backbone={name!r} ({why}); use a ResNet name (e.g. 'resnet50'), a timm CNN "
        "('timm:<name>'), or a module mapping (B, 3, H, W) images to (B, C, h, w) maps."
    )


@torch.no_grad()
def _probe(module: nn.Module, size: int) -> Tensor:
    """The output of ``module`` on two blank (3, size, size) images, in eval mode."""
    was_training = module.training
    module.eval()
    try:
        out: Tensor = module(torch.zeros(2, 3, size, size))
    finally:
        module.train(was_training)
    return out


def feature_map_backbone(
    backbone: str | nn.Module,
    input_size: int,
    feature_dim: int | None = None,
    method: str = "DenseCL",
) -> tuple[nn.Module, int]:
    """A module mapping images (B, 3, H, W) to feature maps (B, C, h, w), and C.

    torchvision ResNets lose their global pooling and classifier (the layers up to
    ``layer4`` are kept, named like LightlySSL's DenseCL and VICRegL examples); timm models
    use their ``forward_features``; other modules must already return (B, C, h, w) maps.

    Args:
        backbone: A backbone name or module (see :func:`build_backbone`).
        input_size: Training resolution, in pixels.
        feature_dim: C of a module (measured when None).
        method: The method's name, for the error message.

    Raises:
        ValueError: For vision transformers and modules without a spatial output.
    """
    if isinstance(backbone, str) and _vit.is_vit(backbone):
        raise _unusable(backbone, "a vision transformer has no spatial feature map", method)
    module = build_backbone(backbone, input_size)[0] if isinstance(backbone, str) else backbone
    if isinstance(module, torchvision.models.ResNet):
        # children: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc
        trunk = nn.Sequential(*list(module.children())[:-2])
        return trunk, int(module.layer4[-1].conv1.in_channels)
    if hasattr(module, "forward_features") and not _vit.is_vit(module):
        module = _ForwardFeatures(module)
    if _vit.is_vit(module):
        raise _unusable(backbone, "a vision transformer has no spatial feature map", method)
    probe = _probe(module, input_size)
    if probe.dim() != 4:
        why = f"its output has shape {tuple(probe.shape)}, not (B, C, h, w)"
        raise _unusable(backbone, why, method)
    return module, feature_dim or int(probe.shape[1])


def feature_map_size(trunk: nn.Module, size: int) -> int:
    """The side h of the (B, C, h, h) feature map that ``trunk`` gives (size x size) images.

    Raises:
        ValueError: If the map is not square (grids of VICRegL's transform are square).
    """
    h, w = _probe(trunk, size).shape[-2:]
    if h != w:
        raise ValueError(f"the backbone's feature map of {size} px images is {h} x {w}, not square")
    return int(h)
