"""Masked vision transformer decoder built from timm transformer blocks (MAE, Pixio, I-JEPA)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import Parameter

from fastssl.models.modules.masked_vision_transformer import (
    _layer_norm_eps6,
    _mask_token_or_zeros,
)
from fastssl.models.modules.masked_vision_transformer_decoder import (
    MaskedVisionTransformerDecoder,
)
from fastssl.models.modules.masked_vision_transformer_timm import (
    _fixed_pos_embed,
    _init_decoder_weights,
    _require_timm,
    _timm_blocks,
)


class MaskedVisionTransformerDecoderTIMM(MaskedVisionTransformerDecoder):
    """Transformer decoder on patch tokens with a mask token and fixed sine-cosine positions [0].

    Holds the mask token, a frozen 2D sine-cosine positional embedding, ``depth`` timm
    ``Block`` s and a final norm. The embedding from encoder width to decoder width and the
    prediction head are left to the method (MAE: a linear layer to pixels).

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377

    Args:
        num_patches: Number of patches of an image.
        embed_dim: Token dimension of the decoder.
        depth: Number of transformer blocks.
        num_heads: Number of attention heads.
        num_prefix_tokens: Class / register tokens before the patches (zero positions).
        mlp_ratio: Hidden dimension of the MLPs relative to ``embed_dim``.
        qkv_bias: Bias in the query, key and value projections.
        proj_drop_rate: Dropout after the attention projection and in the MLP.
        attn_drop_rate: Dropout on the attention weights.
        drop_path_rate: Stochastic depth probability of every block.
        norm_layer: Normalization layer constructor.
        initialize_weights: Initialize as in MAE (mask token ~ N(0, 0.02), sine-cosine
            positions, xavier linear layers).
        mask_token: Mask token (1, 1, embed_dim); a new one is created when None.

    Shapes:
        x (B, num_prefix_tokens + num_patches, embed_dim) -> (B, N', embed_dim).

    Example:
        >>> import torch
        >>> decoder = MaskedVisionTransformerDecoderTIMM(
        ...     num_patches=16, embed_dim=32, depth=1, num_heads=2
        ... )
        >>> x = torch.randn(4, 17, 32)
        >>> decoder(x, idx_mask=torch.tensor([[3, 4]] * 4)).shape
        torch.Size([4, 17, 32])
    """

    def __init__(
        self,
        num_patches: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_prefix_tokens: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
        initialize_weights: bool = True,
        mask_token: Parameter | None = None,
    ) -> None:
        _require_timm(type(self).__name__)
        super().__init__()
        self.num_patches = num_patches
        self.num_prefix_tokens = num_prefix_tokens
        self.mask_token = _mask_token_or_zeros(mask_token, embed_dim)
        # Fixed (not learned) positions, filled in _initialize_weights.
        self.pos_embed = _fixed_pos_embed(num_prefix_tokens + num_patches, embed_dim)
        self.blocks = _timm_blocks(
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias,
            proj_drop_rate,
            attn_drop_rate,
            norm_layer,
            drop_path=drop_path_rate,
        )
        self.norm = norm_layer(embed_dim)
        if initialize_weights:
            self._initialize_weights()

    @property
    def sequence_length(self) -> int:
        """num_prefix_tokens + num_patches."""
        return self.num_patches + self.num_prefix_tokens

    def forward(
        self,
        x: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``decode(preprocess(x, ...))``; see the base class for the arguments."""
        return self.decode(self.preprocess(x, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask))

    def add_pos_embed(self, x: Tensor) -> Tensor:
        """Adds the fixed sine-cosine positional embedding."""
        return x + self.pos_embed

    def decode(self, x: Tensor) -> Tensor:
        """Transformer blocks, then the final norm."""
        out: Tensor = self.norm(self.blocks(x))
        return out

    def _initialize_weights(self) -> None:
        _init_decoder_weights(self, self.mask_token, self.pos_embed, self.num_prefix_tokens)
