"""MAE: masked autoencoders.

- He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
  https://arxiv.org/abs/2111.06377

The encoder (a ViT) sees a random 25% of the patches; a light transformer decoder gets the
encoded patches back at their positions, mask tokens elsewhere, and predicts the pixels of
the masked patches (normalised per patch, ``norm_pix_loss``).

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = MAE(backbone=vit, input_size=32, decoder_dim=16, decoder_depth=1,
    ...             decoder_num_heads=2)
    >>> loss = model.training_step([torch.randn(4, 3, 32, 32)])
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from fastssl.loss.reconstruction_loss import MaskedReconstructionLoss
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, check_count, check_mask_ratio
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.masked_autoencoder import MAEDecoder
from fastssl.models.modules.masked_autoencoder_timm import MAEDecoderTIMM
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.utils import (
    get_at_index,
    patchify,
    random_token_mask,
    repeat_token,
    set_at_index,
)
from fastssl.transforms.mae_transform import MAETransform


class MAE(Method):
    """MAE (He et al. 2022, https://arxiv.org/abs/2111.06377).

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``), a torchvision
    ``VisionTransformer`` (decoder: :class:`~fastssl.models.modules.MAEDecoder`, no timm
    needed), or ``"timm:<vit name>"`` / a timm ``VisionTransformer`` (decoder:
    :class:`~fastssl.models.modules.MAEDecoderTIMM`). The encoder gets MAE's initialisation
    and fixed sine-cosine positions.

    Defaults are the paper's: 75% of the patches masked, decoder 8 blocks of width 512 with 16
    heads, mean squared error on per-patch normalised pixels of the masked patches.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Image size.
        feature_dim: D of the ViT (its width when None).
        mask_ratio: Fraction of the patches masked.
        decoder_dim: Width of the decoder.
        decoder_depth: Number of decoder blocks.
        decoder_num_heads: Attention heads of the decoder.
        norm_pix_loss: Normalise every target patch to zero mean and unit variance.

    Shapes:
        ``training_step`` views: one (B, 3, input_size, input_size); ``forward``:
        (B, 3, H, W) -> (B, D) (class token of the unmasked image).
    """

    name: ClassVar[str] = "mae"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=1.5e-4,
        reference_batch_size=256,
        lr_scaling="linear",
        weight_decay=0.05,
        betas=(0.9, 0.95),
        warmup_epochs=40,
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
    ) -> None:
        check_mask_ratio(mask_ratio)
        check_count("decoder_dim", decoder_dim, 1)
        check_count("decoder_depth", decoder_depth, 1)
        check_count("decoder_num_heads", decoder_num_heads, 1)
        if decoder_dim % decoder_num_heads:
            raise ValueError(
                f"'decoder_dim' must be a multiple of 'decoder_num_heads', got "
                f"decoder_dim={decoder_dim} and decoder_num_heads={decoder_num_heads}."
            )
        vit, dim, patch_size = _vit.build_masked_vit(backbone, input_size)
        super().__init__(vit, input_size, feature_dim or dim)
        self.mask_ratio = mask_ratio
        self.patch_size = patch_size
        self.sequence_length = vit.sequence_length
        self.mask_token = nn.Parameter(torch.empty(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)  # as the MAE reference code
        self.decoder: MAEDecoder | MAEDecoderTIMM
        if isinstance(getattr(vit, "vit", None), TorchvisionViT):
            self.decoder = MAEDecoder(
                seq_length=self.sequence_length,
                num_layers=decoder_depth,
                num_heads=decoder_num_heads,
                embed_input_dim=dim,
                hidden_dim=decoder_dim,
                mlp_dim=4 * decoder_dim,
                out_dim=3 * patch_size**2,
            )
        else:
            self.decoder = MAEDecoderTIMM(
                num_patches=self.sequence_length - 1,
                patch_size=patch_size,
                embed_dim=dim,
                decoder_embed_dim=decoder_dim,
                decoder_depth=decoder_depth,
                decoder_num_heads=decoder_num_heads,
                mask_token=self.mask_token,
            )
        self.criterion = MaskedReconstructionLoss(loss="mse", norm_pix_loss=norm_pix_loss)

    def reconstruct(self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Predicts the pixels of the masked patches.

        Args:
            images: Tensor of shape (B, 3, H, W).
            idx_keep: Token indices (B, K) given to the encoder, class token (0) first.
            idx_mask: Token indices (B, M) of the masked patches (patch ``i`` is token
                ``i + 1``).

        Returns:
            Tensor of shape (B, M, 3 * patch_size**2).
        """
        encoded = cast(MaskedVisionTransformer, self.backbone).encode(images, idx_keep=idx_keep)
        embedded = self.decoder.embed(encoded)
        tokens = repeat_token(self.mask_token, (images.shape[0], self.sequence_length))
        tokens = set_at_index(tokens, idx_keep, embedded.to(tokens.dtype))
        decoded = self.decoder.decode(tokens)
        prediction: Tensor = self.decoder.predict(get_at_index(decoded, idx_mask))
        return prediction

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """MAE loss of the first view, with a fresh random mask (global torch generator)."""
        images = views[0]
        idx_keep, idx_mask = random_token_mask(
            (images.shape[0], self.sequence_length),
            mask_ratio=self.mask_ratio,
            device=images.device,
        )
        prediction = self.reconstruct(images, idx_keep, idx_mask)
        # Token i + 1 is patch i: the class token has no pixels.
        target = get_at_index(patchify(images, self.patch_size), idx_mask - 1)
        loss: Tensor = self.criterion(prediction, target)
        return loss

    def default_transform(self, **views: Any) -> MAETransform:
        """MAE's random resized crop (scale 0.2-1) and horizontal flip at ``input_size``."""
        return build_views(MAETransform, views, {"input_size": self.input_size})

    def trainable_modules(self) -> list[nn.Module]:
        """Everything: encoder, decoder and mask token."""
        return [self]
