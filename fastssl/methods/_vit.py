"""Backbone helpers shared by the ready methods that need more than ``forward(images)``.

DINO, SwaV and MSN feed views of several resolutions (multi-crop) and MAE, SimMIM and MSN
drop or mask patch tokens, so their vision transformers are wrapped in a
:class:`~fastssl.models.modules.masked_vision_transformer.MaskedVisionTransformer`, which
resizes positional embeddings and takes ``idx_keep`` / ``idx_mask``. The wrapper's
``forward(images)`` still returns (B, D) features, so it is the method's ``backbone``.

Private module: the public entry points are the method classes.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from fastssl.models.backbones import (
    _ViTFeatures,
    available_backbones,
    build_backbone,
    parse_timm_name,
)
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.modules.masked_vision_transformer_torchvision import (
    MaskedVisionTransformerTorchvision,
)

#: Local (small) crops of multi-crop methods, relative to the global crop (96 / 224 px).
LOCAL_CROP_FRACTION = 96 / 224


def _timm_vit_class() -> type[nn.Module] | None:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        return None
    return VisionTransformer


def import_timm(what: str) -> Any:
    """Imports timm or raises an ImportError naming the fix (``pip install timm``)."""
    try:
        import timm
    except ImportError as error:
        raise ImportError(f"{what} needs timm: install it with `pip install timm`.") from error
    return timm


def _is_timm_vit(module: object) -> bool:
    timm_vit = _timm_vit_class()
    return timm_vit is not None and isinstance(module, timm_vit)


def _create_timm_vit(name: str, input_size: int) -> nn.Module:
    timm = import_timm(f"backbone 'timm:{name}'")
    model_name, options = parse_timm_name(name)
    # dynamic_img_size: multi-crop views of other resolutions resize the positional embedding.
    model: nn.Module = timm.create_model(
        model_name,
        pretrained=False,
        num_classes=0,
        img_size=input_size,
        **{"dynamic_img_size": True, **options},
    )
    return model


def is_vit(backbone: str | nn.Module) -> bool:
    """Whether ``backbone`` names or is a vision transformer this module can wrap."""
    if isinstance(backbone, str):
        if backbone.startswith("timm:"):
            return "vit" in backbone[len("timm:") :].split("_")[0]
        return backbone.startswith("vit_") and backbone in available_backbones()
    return isinstance(backbone, (TorchvisionViT, _ViTFeatures, MaskedVisionTransformer)) or (
        _is_timm_vit(backbone)
    )


def patch_size_of(vit: MaskedVisionTransformer) -> int:
    """Side in pixels of the patches of a wrapped ViT."""
    inner: Any = getattr(vit, "vit")  # noqa: B009 - set by both wrappers
    if isinstance(inner, TorchvisionViT):
        return int(inner.patch_size)
    size = inner.patch_embed.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def build_masked_vit(
    backbone: str | nn.Module,
    input_size: int,
    weight_initialization: str = "",
    pos_embed_initialization: str = "sincos",
) -> tuple[MaskedVisionTransformer, int, int]:
    """Wraps a ViT (name or module) so that it can mask, drop tokens and change resolution.

    Args:
        backbone: A torchvision ViT name (``"vit_b_16"``...), ``"timm:<vit name>"``, a
            torchvision or timm ``VisionTransformer``, or a ``MaskedVisionTransformer``
            (used as is). Classification heads are replaced by ``nn.Identity`` so that no
            parameter goes unused (DDP would complain).
        input_size: Image size of named backbones.
        weight_initialization: ``""`` (MAE initialisation) or ``"skip"`` (keep the weights).
        pos_embed_initialization: ``"sincos"``, ``"learn"`` or ``"skip"``.

    Returns:
        ``(wrapper, embed_dim, patch_size)``.

    Raises:
        ValueError: If ``backbone`` is not a supported ViT, or has other than one class token.
    """
    module: Any = backbone
    if isinstance(backbone, str):
        if backbone.startswith("timm:"):
            module = _create_timm_vit(backbone[len("timm:") :], input_size)
        elif is_vit(backbone):
            module, _ = build_backbone(backbone, input_size)
        else:
            raise ValueError(
                f"backbone {backbone!r} is not a vision transformer: this method needs one of "
                f"{', '.join(n for n in available_backbones() if n.startswith('vit_'))}, "
                "'timm:<vit name>' or a torchvision / timm VisionTransformer."
            )
    if isinstance(module, _ViTFeatures):
        module = module.vit
    if isinstance(module, MaskedVisionTransformer):
        wrapper = module
    elif isinstance(module, TorchvisionViT):
        module.heads = nn.Identity()
        wrapper = MaskedVisionTransformerTorchvision(
            vit=module,
            weight_initialization=weight_initialization,
            pos_embed_initialization=pos_embed_initialization,
        )
    elif _is_timm_vit(module):
        from fastssl.models.modules.masked_vision_transformer_timm import (
            MaskedVisionTransformerTIMM,
        )

        if int(module.num_prefix_tokens) != 1 or not module.has_class_token:
            raise ValueError(
                "timm ViT backbones must have exactly one prefix token (the class token), got "
                f"num_prefix_tokens={module.num_prefix_tokens}, "
                f"class_token={module.has_class_token}."
            )
        if module.num_classes:
            module.reset_classifier(0)
        wrapper = MaskedVisionTransformerTIMM(
            vit=module,
            weight_initialization=weight_initialization,
            pos_embed_initialization=pos_embed_initialization,
        )
    else:
        raise ValueError(
            "backbone must be a ViT name, 'timm:<vit name>' or a torchvision / timm "
            f"VisionTransformer, got {type(module).__name__}."
        )
    inner: Any = getattr(wrapper, "vit")  # noqa: B009 - set by both wrappers
    dim = int(inner.hidden_dim if isinstance(inner, TorchvisionViT) else inner.embed_dim)
    return wrapper, dim, patch_size_of(wrapper)


def build_any_backbone(
    backbone: str | nn.Module, input_size: int, feature_dim: int | None
) -> tuple[nn.Module, int, int]:
    """A backbone for multi-crop methods (DINO, SwaV): any CNN, or a resolution-free ViT.

    ViTs keep their own initialisation (``"skip"``) and are wrapped only so that local
    crops of another resolution work; other backbones go through ``build_backbone``.

    Returns:
        ``(module, feature_dim, patch_size)`` with patch size 1 for non-ViT backbones.
    """
    if is_vit(backbone):
        vit, dim, patch = build_masked_vit(
            backbone, input_size, weight_initialization="skip", pos_embed_initialization="skip"
        )
        return vit, feature_dim or dim, patch
    module, dim = build_backbone(backbone, input_size, feature_dim)
    return module, dim, 1


def local_crop_size(
    input_size: int, patch_size: int, requested: int | None, name: str = "local_crop_size"
) -> int:
    """Size of the local crops: ``requested``, else 96/224 of ``input_size`` rounded to whole
    patches (so a ViT sees a whole number of patches).

    Raises:
        ValueError: If ``requested`` is not a positive multiple of ``patch_size``.
    """
    if requested is None:
        patches = max(1, round(input_size * LOCAL_CROP_FRACTION / patch_size))
        return patches * patch_size
    if isinstance(requested, bool) or requested < 1 or requested % patch_size:
        raise ValueError(
            f"'{name}' must be a positive multiple of the patch size {patch_size}, "
            f"got {name}={requested!r}."
        )
    return requested


def uniform_drop_path(vit: MaskedVisionTransformer, rate: float) -> None:
    """The same stochastic-depth rate on both residual branches of every block of ``vit``
    (torchvision or timm inside a masked wrapper), in place: DINOv2's and CAPI's students."""
    from fastssl.models.utils import add_stochastic_depth_to_blocks, update_drop_path_rate

    inner: Any = getattr(vit, "vit")  # noqa: B009 - set by both wrappers
    if isinstance(inner, TorchvisionViT):
        add_stochastic_depth_to_blocks(inner, prob=rate, mode="row")
    else:
        update_drop_path_rate(inner, drop_path_rate=rate, mode="uniform")
