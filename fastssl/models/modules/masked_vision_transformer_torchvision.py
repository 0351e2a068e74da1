"""Masked vision transformer on top of ``torchvision.models.VisionTransformer``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter
from torchvision.models.vision_transformer import VisionTransformer

from fastssl.models.modules.masked_vision_transformer import (
    MaskedVisionTransformer,
    _check_weight_initialization,
    _init_pos_embed,
    _mask_token_or_zeros,
    _prepend_token,
    _with_intermediates,
    _xavier_flat_,
)


def _xavier_linear_layers(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` below ``module`` (MAE)."""

    def _init(mod: nn.Module) -> None:
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)

    module.apply(_init)


def _resize_grid_pos_embed(
    pos_embedding: Tensor, num_patches: int, num_prefix_tokens: int, antialias: bool
) -> Tensor:
    """Bicubically resizes the square patch grid of a (1, P + G*G, D) positional embedding.

    Lets a model trained at one resolution encode square images of another one, as MSN [0]
    does for its small views. The prefix embeddings are kept as they are.

    - [0]: MSN, 2022, https://arxiv.org/abs/2204.07141
    """
    grid = pos_embedding.shape[1] - num_prefix_tokens
    if num_patches == grid:
        return pos_embedding
    old_side, new_side = math.isqrt(grid), math.isqrt(num_patches)
    if new_side * new_side != num_patches or old_side * old_side != grid:
        raise ValueError(
            f"Cannot resize the positional embedding from {grid} to {num_patches} patches: "
            "both must form a square grid (use square images)."
        )
    dim = pos_embedding.shape[-1]
    prefix, patches = pos_embedding[:, :num_prefix_tokens], pos_embedding[:, num_prefix_tokens:]
    patches = patches.reshape(1, old_side, old_side, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(new_side, new_side), mode="bicubic", antialias=antialias)
    patches = patches.permute(0, 2, 3, 1).reshape(1, num_patches, dim)
    return torch.cat([prefix, patches], dim=1)


class MaskedVisionTransformerTorchvision(MaskedVisionTransformer):
    """Masked vision transformer [0] wrapping a torchvision ``VisionTransformer``.

    Used as the backbone of MAE [1] (``encode(images, idx_keep=...)``), SimMIM [2]
    (``encode(images, idx_mask=...)``) and MSN / PMSN [3] (``forward(images, idx_keep=...)``).
    The torchvision model keeps its parameter names (``vit.conv_proj``, ``vit.class_token``,
    ``vit.encoder...``), so its state dict is the one of lightly's class of the same name.

    - [0]: ViT, 2021, https://arxiv.org/abs/2010.11929
    - [1]: MAE, 2022, https://arxiv.org/abs/2111.06377
    - [2]: SimMIM, 2022, https://arxiv.org/abs/2111.09886
    - [3]: MSN, 2022, https://arxiv.org/abs/2204.07141

    Args:
        vit: The torchvision ``VisionTransformer`` (e.g. ``vit_b_16()``, built without weights).
        mask_token: Mask token with shape (1, 1, hidden_dim); a zero-initialized one is created
            when None.
        weight_initialization: '' re-initializes the weights as in MAE (xavier-uniform patch
            embedding and linear layers, class token ~ N(0, 0.02)); 'skip' keeps them (use it
            for pretrained weights).
        antialias: Antialias when resizing positional embeddings to another image size.
        pos_embed_initialization: 'sincos' (fixed 2D sine-cosine, MAE), 'learn' (trainable,
            truncated normal) or 'skip'.

    Shapes:
        images (B, 3, H, W) -> ``encode``: (B, N', hidden_dim) with N' = ``sequence_length``
        = 1 + (H / patch_size)**2 or the number of kept tokens; ``forward``: (B, hidden_dim).

    Example:
        >>> import torch
        >>> from torchvision.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> model = MaskedVisionTransformerTorchvision(vit=vit)
        >>> images = torch.randn(4, 3, 32, 32)
        >>> idx_keep = torch.tensor([[0, 1, 5]] * 4)  # class token and patches 0 and 4
        >>> model.encode(images, idx_keep=idx_keep).shape
        torch.Size([4, 3, 32])
        >>> model(images, idx_mask=torch.tensor([[2, 3]] * 4)).shape
        torch.Size([4, 32])
    """

    def __init__(
        self,
        vit: VisionTransformer,
        mask_token: Parameter | None = None,
        weight_initialization: str = "",
        antialias: bool = True,
        pos_embed_initialization: str = "sincos",
    ) -> None:
        super().__init__()
        _check_weight_initialization(weight_initialization)
        self.vit = vit
        self.mask_token = _mask_token_or_zeros(mask_token, self.vit.hidden_dim)
        if weight_initialization != "skip":
            self._initialize_weights()
        # torchvision adds a positional embedding to the class token too, hence 1 prefix token.
        _init_pos_embed(self.vit.encoder.pos_embedding, pos_embed_initialization, 1)
        self.antialias = antialias

    @property
    def sequence_length(self) -> int:
        """1 (class token) + number of patches."""
        return int(self.vit.seq_length)

    def interpolate_pos_encoding(self, input: Tensor) -> Tensor:
        """Positional embedding for (B, 1 + num_patches, D) tokens of a square image.

        Returns the stored embedding when the number of patches matches, otherwise its patch
        grid resized bicubically (the class token embedding is kept).
        """
        return _resize_grid_pos_embed(
            self.vit.encoder.pos_embedding,
            num_patches=input.shape[1] - 1,
            num_prefix_tokens=1,
            antialias=self.antialias,
        )

    def forward(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Returns the encoded class token, shape (B, hidden_dim). See the base class."""
        # With idx_keep the first kept token is returned, as in lightly: keep index 0 first to
        # get the class token.
        return self.encode(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)[:, 0]

    def forward_intermediates(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        norm: bool = False,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns the final normalized tokens and the output of every encoder layer."""
        tokens = self.vit.encoder.dropout(
            self.preprocess(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        )
        return _with_intermediates(
            tokens, self.vit.encoder.layers, lambda layer, x: layer(x), self.vit.encoder.ln, norm
        )

    def encode(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Returns the encoded tokens, shape (B, N', hidden_dim). See the base class."""
        tokens = self.preprocess(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        encoder = self.vit.encoder
        out: Tensor = encoder.ln(encoder.layers(encoder.dropout(tokens)))
        return out

    def images_to_tokens(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, (H / patch_size) * (W / patch_size), hidden_dim)."""
        # conv_proj directly: torchvision's _process_input would reject other image sizes.
        return self.vit.conv_proj(images).flatten(2).transpose(1, 2)

    def prepend_prefix_tokens(self, x: Tensor, prepend_class_token: bool = True) -> Tensor:
        """Prepends the class token: (B, num_patches, D) -> (B, 1 + num_patches, D)."""
        return _prepend_token(x, self.vit.class_token) if prepend_class_token else x

    def add_pos_embed(self, x: Tensor) -> Tensor:
        """Adds the (resized if needed) positional embedding, class token included."""
        return x + self.interpolate_pos_encoding(x)

    def _initialize_weights(self) -> None:
        # MAE treats the patch embedding as a linear layer on flattened patches: xavier over
        # (out_channels, in_channels * patch_size**2) rather than PyTorch's conv default.
        _xavier_flat_(self.vit.conv_proj.weight)
        nn.init.normal_(self.vit.class_token, std=0.02)
        _xavier_linear_layers(self)
