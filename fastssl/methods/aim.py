"""AIM: autoregressive image models.

- El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models",
  https://arxiv.org/abs/2401.08541

A ViT with prefix-causal attention reads the patches in raster order: a random number of
leading patches (the prefix) attend to each other bidirectionally, every later patch only
to the patches before it. An MLP head on every token predicts the (per-patch normalised)
pixels of the *next* patch; the loss is the mean squared error over the non-prefix targets.

Needs timm (the causal ViT is built from timm blocks): ``pip install timm``.

Example:
    >>> import torch
    >>> from fastssl.models.modules.masked_causal_vision_transformer import (
    ...     MaskedCausalVisionTransformer,
    ... )
    >>> vit = MaskedCausalVisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
    ...     num_heads=2, class_token=False, no_embed_class=True, global_pool="avg",
    ...     num_classes=0)
    >>> model = AIM(backbone=vit, input_size=32, head_hidden_dim=32, head_num_blocks=1)
    >>> loss = model.training_step([torch.randn(4, 3, 32, 32)])
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, check_count
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.backbones import parse_timm_name
from fastssl.models.utils import (
    initialize_2d_sine_cosine_positional_embedding,
    patchify,
    random_prefix_mask,
)
from fastssl.transforms.aim_transform import AIMTransform

#: torchvision ViT names -> (patch size, width, depth, heads), as torchvision builds them.
_TORCHVISION_SIZES = {
    "vit_b_16": (16, 768, 12, 12),
    "vit_b_32": (32, 768, 12, 12),
    "vit_l_16": (16, 1024, 24, 16),
    "vit_l_32": (32, 1024, 24, 16),
    "vit_h_14": (14, 1280, 32, 16),
}


def _causal_vit(
    img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float
) -> nn.Module:
    """AIM's trunk: no class token, average pooling, fixed sine-cosine positions."""
    from fastssl.models.modules.masked_causal_vision_transformer import (
        MaskedCausalVisionTransformer,
    )

    vit = MaskedCausalVisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        class_token=False,
        no_embed_class=True,
        global_pool="avg",
        num_classes=0,
    )
    assert vit.pos_embed is not None  # timm creates it for every ViT without dynamic size
    initialize_2d_sine_cosine_positional_embedding(vit.pos_embed, has_class_token=False)
    return vit


def _timm_vit_types() -> tuple[type, type, type]:
    """timm's ``VisionTransformer``, ``Block`` and ``Attention`` (the classes AIM converts)."""
    from timm.models.vision_transformer import Attention, Block, VisionTransformer

    return VisionTransformer, Block, Attention


def make_prefix_causal(vit: nn.Module, input_size: int, what: str) -> nn.Module:
    """Turns a timm ``VisionTransformer`` into AIM's prefix-causal trunk, in place.

    The model, its blocks and their attention become ``MaskedCausalVisionTransformer``,
    ``MaskedCausalBlock`` and ``MaskedCausalAttention``: subclasses that add no parameter
    or buffer, so every weight, the drop path, layer scale and normalisation stay as built;
    only the attention becomes prefix-causal when a mask is given. A classifier head is
    replaced by none (``reset_classifier(0)``) so that no parameter goes unused.

    Args:
        vit: A timm ``VisionTransformer`` (or an AIM trunk already) whose blocks are timm's
            ``Block`` with timm's ``Attention``.
        input_size: Image size AIM trains at; the ViT must be built for it.
        what: How the user gave the backbone, for error messages.

    Returns:
        ``vit``, converted.

    Raises:
        ValueError: For a subclass of ``VisionTransformer`` (e.g. a distilled DeiT), blocks
            of another kind (parallel, post-norm), or an image size other than
            ``input_size``; each message says what to pass instead.
    """
    from fastssl.models.modules.masked_causal_vision_transformer import (
        MaskedCausalAttention,
        MaskedCausalBlock,
        MaskedCausalVisionTransformer,
    )

    vit_type, block_type, attention_type = _timm_vit_types()
    if type(vit) not in (vit_type, MaskedCausalVisionTransformer):
        raise ValueError(
            f"AIM needs a plain timm VisionTransformer, got {what} of type "
            f"{type(vit).__name__}: create one with timm.create_model('vit_...') or pass "
            "'timm:<vit name>'."
        )
    module: Any = vit
    for index, block in enumerate(module.blocks):
        if type(block) not in (block_type, MaskedCausalBlock) or type(block.attn) not in (
            attention_type,
            MaskedCausalAttention,
        ):
            raise ValueError(
                f"AIM makes timm's pre-norm Block / Attention prefix-causal, but block {index} "
                f"of {what} is a {type(block).__name__} with a "
                f"{type(getattr(block, 'attn', None)).__name__}: use a ViT built from timm's "
                "default Block (e.g. vit_small_patch16_224, vit_base_patch16_224)."
            )
    size = tuple(int(s) for s in module.patch_embed.img_size)
    if size != (input_size, input_size):
        raise ValueError(
            f"{what} is built for {size[0]}x{size[1]} images but AIM trains at "
            f"input_size={input_size}: create it with img_size={input_size}."
        )
    for block in module.blocks:
        block.attn.__class__ = MaskedCausalAttention
        block.__class__ = MaskedCausalBlock
    module.__class__ = MaskedCausalVisionTransformer
    if module.num_classes:
        module.reset_classifier(0)
    return vit


def build_causal_vit(backbone: str | nn.Module, input_size: int) -> nn.Module:
    """Builds AIM's prefix-causal ViT from a name or converts a given timm ViT.

    Args:
        backbone: One of:

            - a torchvision ViT name (``"vit_b_16"``...): its architecture is rebuilt with
              timm blocks, as the paper's trunk (no class token, average pooling, fixed
              sine-cosine positions);
            - ``"timm:<vit name>"`` with optional ``timm.create_model`` options in
              parentheses (``"timm:vit_small_patch16_224(drop_path_rate=0.1)"``, see
              :func:`~fastssl.models.backbones.parse_timm_name`): the named timm model built
              as the paper's trunk (``class_token=False, no_embed_class=True,
              global_pool="avg"``, sine-cosine positions; the options may override these)
              with prefix-causal attention;
            - a timm ``VisionTransformer`` module (a ``MaskedCausalVisionTransformer``
              included): converted in place by :func:`make_prefix_causal`, keeping its
              weights, positional embedding, class / register tokens and pooling.

        input_size: Image size.

    Raises:
        ImportError: Without timm, naming ``pip install timm``.
        ValueError: For other backbones, naming the accepted ones.
    """
    timm = _vit.import_timm("AIM")
    if isinstance(backbone, str) and backbone in _TORCHVISION_SIZES:
        return _causal_vit(input_size, *_TORCHVISION_SIZES[backbone], mlp_ratio=4.0)
    if isinstance(backbone, str) and backbone.startswith("timm:"):
        name, options = parse_timm_name(backbone[len("timm:") :])
        kwargs = {
            "pretrained": False,
            "num_classes": 0,
            "img_size": input_size,
            "class_token": False,
            "no_embed_class": True,
            "global_pool": "avg",
            **options,
        }
        try:
            model: Any = timm.create_model(name, **kwargs)
        except TypeError as error:  # a model that does not take ViT arguments
            raise ValueError(
                f"backbone {backbone!r} is not a timm VisionTransformer ({error}); AIM needs "
                "one, e.g. 'timm:vit_small_patch16_224'."
            ) from error
        except RuntimeError as error:  # timm: "Unknown model (...)"
            raise ValueError(
                f"backbone {backbone!r}: {error}; AIM needs a timm ViT name, e.g. "
                "'timm:vit_small_patch16_224' (timm.list_models('vit_*') lists them)."
            ) from error
        make_prefix_causal(model, input_size, f"backbone {backbone!r}")
        if model.pos_embed is not None:  # the paper's fixed 2D sine-cosine positions
            prefix = int(model.pos_embed.shape[1]) - int(model.patch_embed.num_patches)
            initialize_2d_sine_cosine_positional_embedding(
                model.pos_embed, num_prefix_tokens=prefix
            )
        return model
    if isinstance(backbone, nn.Module) and _vit._is_timm_vit(backbone):
        return make_prefix_causal(backbone, input_size, "the backbone module")
    raise ValueError(
        f"AIM needs a ViT backbone: one of {', '.join(_TORCHVISION_SIZES)}, "
        "'timm:<vit name>(options)' or a timm VisionTransformer module, got "
        f"{backbone if isinstance(backbone, str) else type(backbone).__name__!r}."
    )


class AIM(Method):
    """AIM (El-Nouby et al. 2024, https://arxiv.org/abs/2401.08541).

    Each step draws a prefix length per image, uniform in ``[0, max_prefix_length)``
    (:func:`~fastssl.models.utils.random_prefix_mask`), encodes the patches with
    prefix-causal attention, adds the sine-cosine positions again, and lets
    :class:`~fastssl.models.modules.heads.AIMPredictionHead` predict from token ``i`` the
    pixels of patch ``i + 1``. The loss is the mean squared error against per-patch
    normalised pixels, averaged over the targets after the prefix (the paper's recipe;
    LightlySSL's example instead predicts patch ``i`` from token ``i``, which attends to it).

    ``forward(images)`` is the bidirectional trunk, pooled as the ViT pools (average for
    the paper's trunk): (B, D).

    The backbone is a torchvision ViT name, ``"timm:<vit name>(options)"`` or a timm
    ``VisionTransformer`` module (see :func:`build_causal_vit`); a module keeps its weights
    and is made prefix-causal in place. Class or register tokens of a module are kept: they
    join the bidirectional prefix and predict nothing.

    Defaults are the paper's: prediction head of 12 MLP blocks of width 2048, normalised
    pixel targets, prefix up to N - 1 patches, AIM's augmentation (random resized crop with
    scale 0.4-1, horizontal flip).

    Args:
        backbone: A torchvision ViT name, ``"timm:<vit name>(options)"`` or a timm
            ``VisionTransformer`` (see :func:`build_causal_vit`).
        input_size: Image size.
        feature_dim: D of the trunk (its width when None).
        head_hidden_dim: Width of the prediction head.
        head_num_blocks: Number of MLP blocks of the prediction head.
        max_prefix_length: Exclusive bound of the prefix length; number of patches - 1 when
            None.
        norm_pix_loss: Normalise every target patch to zero mean and unit variance.

    Raises:
        ImportError: Without timm.

    Shapes:
        ``training_step`` views: one (B, 3, input_size, input_size).
    """

    name: ClassVar[str] = "aim"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=1e-3,  # peak lr at the paper's batch size 4096, cosine decay
        reference_batch_size=4096,
        lr_scaling="linear",
        weight_decay=0.05,
        betas=(0.9, 0.95),
        warmup_epochs=1,
        extra={"note": "the paper warms up over a number of iterations, not epochs"},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        head_hidden_dim: int = 2048,
        head_num_blocks: int = 12,
        max_prefix_length: int | None = None,
        norm_pix_loss: bool = True,
    ) -> None:
        check_count("head_hidden_dim", head_hidden_dim, 1)
        check_count("head_num_blocks", head_num_blocks, 0)
        if isinstance(backbone, TorchvisionViT):
            raise ValueError(
                "AIM needs a prefix-causal ViT: pass a torchvision ViT name (its architecture "
                "is rebuilt with timm blocks), 'timm:<vit name>' or a timm VisionTransformer, "
                "not a torchvision VisionTransformer instance."
            )
        vit: Any = build_causal_vit(backbone, input_size)
        dim = int(vit.embed_dim)
        super().__init__(vit, input_size, feature_dim or dim)
        size = vit.patch_embed.patch_size
        self.patch_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.num_patches = int(vit.patch_embed.num_patches)
        limit = self.num_patches - 1
        if max_prefix_length is None:
            max_prefix_length = limit
        if (
            isinstance(max_prefix_length, bool)
            or not isinstance(max_prefix_length, int)
            or not 1 <= max_prefix_length <= limit
        ):
            raise ValueError(
                f"'max_prefix_length' must be an integer in [1, {limit}] (number of patches "
                f"- 1), got max_prefix_length={max_prefix_length!r}."
            )
        self.max_prefix_length = max_prefix_length
        from fastssl.models.modules.heads.masked import AIMPredictionHead

        self.projection_head = AIMPredictionHead(
            input_dim=dim,
            output_dim=3 * self.patch_size**2,
            hidden_dim=head_hidden_dim,
            num_blocks=head_num_blocks,
        )
        self.criterion = MaskedReconstructionLoss(loss="mse", norm_pix_loss=norm_pix_loss)

    def predict(self, images: Tensor, mask: Tensor) -> Tensor:
        """Per-token predictions (B, N, 3 * patch_size**2) under the prefix ``mask`` (B, N)
        (True after the prefix); token ``i`` predicts patch ``i + 1``."""
        vit: Any = self.backbone
        # Class / register tokens (a timm module's) are in the prefix and predict nothing.
        features = vit.forward_features(images, mask=mask)[:, -self.num_patches :]
        if vit.pos_embed is not None:
            # AIM adds the positions again before the head (those of the patches).
            features = features + vit.pos_embed[:, -self.num_patches :]
        prediction: Tensor = self.projection_head(features)
        return prediction

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """AIM loss of the first view, with a fresh random prefix (global torch generator)."""
        images = views[0]
        mask = random_prefix_mask(
            (images.shape[0], self.num_patches),
            max_prefix_length=self.max_prefix_length,
            device=images.device,
        )
        prediction = self.predict(images, mask)
        target = patchify(images, self.patch_size)
        # Next-patch prediction; only targets after the prefix count.
        loss: Tensor = self.criterion(prediction[:, :-1], target[:, 1:], mask[:, 1:])
        return loss

    def default_transform(self, **views: Any) -> AIMTransform:
        """AIM's random resized crop (scale 0.4-1) and horizontal flip at ``input_size``."""
        return build_views(AIMTransform, views, {"input_size": self.input_size})

    def trainable_modules(self) -> list[nn.Module]:
        """Everything: trunk and prediction head (the positions are fixed)."""
        return [self]
