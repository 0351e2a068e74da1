"""SimMIM: a simple framework for masked image modelling.

- Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling",
  https://arxiv.org/abs/2111.09886

Random patches are replaced by a learned mask token before the ViT encoder; a single linear
layer maps every encoded masked token to the raw pixels of its patch, and the loss is the L1
error on the masked patches.

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = SimMIM(backbone=vit, input_size=32)
    >>> loss = model.training_step([torch.randn(4, 3, 32, 32)])
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

from torch import Tensor, nn

from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, check_mask_ratio
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.utils import get_at_index, patchify, random_token_mask
from fastssl.transforms.mae_transform import MAETransform


class SimMIM(Method):
    """SimMIM (Xie et al. 2022, https://arxiv.org/abs/2111.09886).

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``), ``"timm:<vit name>"``,
    or a torchvision / timm ``VisionTransformer``; it is wrapped in a masked ViT whose mask
    token replaces the masked patches (MAE initialisation, fixed sine-cosine positions).

    Defaults are the paper's: 60% of the patches masked, linear prediction head, L1 loss on
    the raw (ImageNet-normalised) pixels of the masked patches, random resized crop with
    scale 0.67-1 and horizontal flip. Masking is per patch (as LightlySSL's example), where
    the paper masks 32x32-pixel blocks.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Image size.
        feature_dim: D of the ViT (its width when None).
        mask_ratio: Fraction of the patches masked.

    Shapes:
        ``training_step`` views: one (B, 3, input_size, input_size); ``forward``:
        (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "simmim"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=8e-4,  # the paper's base lr at batch 2048
        reference_batch_size=2048,
        lr_scaling="linear",
        weight_decay=0.05,
        betas=(0.9, 0.999),
        warmup_epochs=10,
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        mask_ratio: float = 0.6,
    ) -> None:
        check_mask_ratio(mask_ratio)
        vit, dim, patch_size = _vit.build_masked_vit(backbone, input_size)
        super().__init__(vit, input_size, feature_dim or dim)
        self.mask_ratio = mask_ratio
        self.patch_size = patch_size
        self.sequence_length = vit.sequence_length
        self.decoder = nn.Linear(dim, 3 * patch_size**2)
        self.criterion = MaskedReconstructionLoss(loss="l1")

    def reconstruct(self, images: Tensor, idx_mask: Tensor) -> Tensor:
        """Predicts the pixels (B, M, 3 * patch_size**2) of the tokens at ``idx_mask`` (B, M)."""
        encoded = cast(MaskedVisionTransformer, self.backbone).encode(images, idx_mask=idx_mask)
        prediction: Tensor = self.decoder(get_at_index(encoded, idx_mask))
        return prediction

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """SimMIM loss of the first view, with a fresh random mask (global torch generator)."""
        images = views[0]
        _, idx_mask = random_token_mask(
            (images.shape[0], self.sequence_length),
            mask_ratio=self.mask_ratio,
            device=images.device,
        )
        prediction = self.reconstruct(images, idx_mask)
        target = get_at_index(patchify(images, self.patch_size), idx_mask - 1)
        loss: Tensor = self.criterion(prediction, target)
        return loss

    def default_transform(self, **views: Any) -> MAETransform:
        """Random resized crop (scale 0.67-1) and horizontal flip at ``input_size``."""
        fixed = {"input_size": self.input_size}
        return build_views(MAETransform, views, fixed, {"min_scale": 0.67})

    def trainable_modules(self) -> list[nn.Module]:
        """Everything: encoder (with its mask token) and linear decoder."""
        return [self]
