"""Backbones by name: torchvision ResNets and ViTs, timm models, or any ``nn.Module``.

A backbone maps images (B, 3, H, W) to features (B, D) (ResNets: pooled features; ViTs:
the class token). Small inputs (<= 64 px) switch ResNets to the CIFAR stem (3x3 stride-1
first convolution, no max-pool), as solo-learn does, so 32 px images keep their
resolution through the network. No pretrained weights are ever downloaded.

Example:
    >>> backbone, dim = build_backbone("resnet18", input_size=32)
    >>> dim
    512
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
import yaml
from torch import nn

#: Inputs at or below this size get the CIFAR stem on ResNets.
SMALL_INPUT_SIZE = 64

_TORCHVISION_RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d",
)  # fmt: skip
_TORCHVISION_VITS = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")


def parse_timm_name(name: str) -> tuple[str, dict[str, Any]]:
    """Splits ``"<model>(key=value, ...)"`` into the timm model name and its keyword arguments.

    The options are passed to ``timm.create_model``, e.g. the stochastic depth of DINO's
    ViT-S/16 student: ``timm:vit_small_patch16_224(drop_path_rate=0.1)``. Values are read
    as YAML scalars (``0.1``, ``true``, ``null``).

    Args:
        name: A timm model name without the ``timm:`` prefix, with optional options.

    Returns:
        ``(model name, options)``.

    Raises:
        ValueError: For a malformed option list, naming the backbone.

    Example:
        >>> parse_timm_name("vit_small_patch16_224(drop_path_rate=0.1)")
        ('vit_small_patch16_224', {'drop_path_rate': 0.1})
    """
    model, paren, rest = name.partition("(")
    if not paren:
        return name, {}
    options: dict[str, Any] = {}
    if not rest.endswith(")"):
        raise ValueError(f"backbone 'timm:{name}': options end with ')', e.g. (drop_path_rate=0.1)")
    for item in filter(None, (part.strip() for part in rest[:-1].split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(
                f"backbone 'timm:{name}': option {item!r} is not key=value, e.g. "
                "timm:vit_small_patch16_224(drop_path_rate=0.1)"
            )
        options[key.strip()] = yaml.safe_load(value)
    return model.strip(), options


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (plus ``timm:<name>`` with timm)."""
    return [*_TORCHVISION_RESNETS, *_TORCHVISION_VITS]


class _ViTFeatures(nn.Module):
    """A torchvision ViT returning its class token (B, D) instead of logits."""

    def __init__(self, vit: torchvision.models.VisionTransformer) -> None:
        super().__init__()
        vit.heads = nn.Identity()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


def build_backbone(
    backbone: str | nn.Module, input_size: int = 224, feature_dim: int | None = None
) -> tuple[nn.Module, int]:
    """Builds a feature extractor and tells its feature dimension.

    Args:
        backbone: A torchvision name (``"resnet18"``, ``"vit_b_16"``, ... see
            :func:`available_backbones`), ``"timm:<model name>"`` (needs timm; options for
            ``timm.create_model`` in parentheses, see :func:`parse_timm_name`), or a
            module mapping (B, 3, H, W) to features of shape (B, D) or (B, D, 1, 1).
        input_size: Training resolution; ResNets get the CIFAR stem at <= 64 px and ViTs
            are built for this image size.
        feature_dim: D for a module; measured with one dummy forward pass when None.

    Returns:
        ``(module, D)``.

    Raises:
        ValueError: For an unknown name, naming the known ones.
        ImportError: For ``timm:`` names without timm installed.
    """
    if isinstance(backbone, nn.Module):
        return backbone, feature_dim or _measure_dim(backbone, input_size)
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    if backbone.startswith("timm:"):
        try:
            import timm
        except ImportError as error:
            raise ImportError(f"backbone {backbone!r} needs timm: pip install timm") from error
        name, options = parse_timm_name(backbone[len("timm:") :])
        try:  # transformers take the image size; convolutional networks do not
            model = timm.create_model(
                name, pretrained=False, num_classes=0, img_size=input_size, **options
            )
        except TypeError:
            model = timm.create_model(name, pretrained=False, num_classes=0, **options)
        return model, int(model.num_features)  # type: ignore[arg-type]
    if backbone in _TORCHVISION_RESNETS:
        resnet = getattr(torchvision.models, backbone)(weights=None)
        if input_size <= SMALL_INPUT_SIZE:
            resnet.conv1 = nn.Conv2d(3, resnet.conv1.out_channels, 3, 1, 1, bias=False)
            resnet.maxpool = nn.Identity()
        dim = resnet.fc.in_features
        resnet.fc = nn.Identity()
        return resnet, dim
    if backbone in _TORCHVISION_VITS:
        vit = getattr(torchvision.models, backbone)(weights=None, image_size=input_size)
        return _ViTFeatures(vit), vit.hidden_dim
    raise ValueError(
        f"unknown backbone {backbone!r}: use one of {', '.join(available_backbones())}, "
        "'timm:<model name>' (with timm installed), or pass an nn.Module"
    )


@torch.no_grad()
def _measure_dim(module: nn.Module, input_size: int) -> int:
    was_training = module.training
    module.eval()
    try:
        out = module(torch.zeros(2, 3, input_size, input_size))
    finally:
        module.train(was_training)
    return int(out.flatten(start_dim=1).shape[1])
