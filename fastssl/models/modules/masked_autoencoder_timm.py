"""MAE and Pixio decoders with embedding and pixel head, built from timm blocks.

``MaskedVisionTransformerDecoderTIMM`` is the modular replacement (embedding and head kept
outside); these classes keep lightly's all-in-one decoders and parameter names.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import Parameter

from fastssl.models.modules.masked_vision_transformer import (
    _layer_norm_eps6,
    _mask_token_or_zeros,
)
from fastssl.models.modules.masked_vision_transformer_timm import (
    _fixed_pos_embed,
    _init_decoder_weights,
    _require_timm,
    _timm_blocks,
)


class MAEDecoderTIMM(nn.Module):
    """Decoder of the Masked Autoencoder [0]: encoder tokens -> pixel values of every patch.

    ``forward(x) = predict(decode(embed(x)))``: a linear embedding from the encoder width to the
    decoder width, the frozen sine-cosine positional embedding plus ``decoder_depth`` timm
    blocks and a norm, then a linear head to ``patch_size**2 * in_chans`` pixel values. The MAE
    method scatters the embedded visible tokens into a sequence of ``mask_token`` s between
    ``embed`` and ``decode``.

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377

    Args:
        num_patches: Number of patches of an image.
        patch_size: Side of a patch in pixels.
        in_chans: Number of image channels.
        embed_dim: Token dimension of the encoder.
        decoder_embed_dim: Token dimension of the decoder.
        decoder_depth: Number of transformer blocks.
        decoder_num_heads: Number of attention heads.
        num_prefix_tokens: Class / register tokens before the patches.
        mlp_ratio: Hidden dimension of the MLPs relative to ``decoder_embed_dim``.
        proj_drop_rate: Dropout after the attention projection and in the MLP.
        attn_drop_rate: Dropout on the attention weights.
        norm_layer: Normalization layer constructor.
        initialize_weights: Initialize as in MAE.
        mask_token: Mask token (1, 1, decoder_embed_dim); a new one is created when None.

    Shapes:
        (B, num_prefix_tokens + num_patches, embed_dim)
        -> (B, num_prefix_tokens + num_patches, patch_size**2 * in_chans).

    Example:
        >>> import torch
        >>> decoder = MAEDecoderTIMM(
        ...     num_patches=16, patch_size=8, embed_dim=32, decoder_embed_dim=16,
        ...     decoder_depth=1, decoder_num_heads=2,
        ... )
        >>> decoder(torch.randn(4, 17, 32)).shape
        torch.Size([4, 17, 192])
    """

    def __init__(
        self,
        num_patches: int,
        patch_size: int,
        in_chans: int = 3,
        embed_dim: int = 1024,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        num_prefix_tokens: int = 1,
        mlp_ratio: float = 4.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
        initialize_weights: bool = True,
        mask_token: Parameter | None = None,
    ) -> None:
        _require_timm(type(self).__name__)
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = _mask_token_or_zeros(mask_token, decoder_embed_dim)
        self.decoder_pos_embed = _fixed_pos_embed(
            num_prefix_tokens + num_patches, decoder_embed_dim
        )
        self.decoder_blocks = _timm_blocks(
            decoder_embed_dim,
            decoder_depth,
            decoder_num_heads,
            mlp_ratio,
            True,
            proj_drop_rate,
            attn_drop_rate,
            norm_layer,
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        if initialize_weights:
            self._initialize_weights()

    def forward(self, input: Tensor) -> Tensor:
        """(B, N, embed_dim) encoder tokens -> (B, N, patch_size**2 * in_chans) pixels."""
        return self.predict(self.decode(self.embed(input)))

    def embed(self, input: Tensor) -> Tensor:
        """(B, N, embed_dim) -> (B, N, decoder_embed_dim)."""
        out: Tensor = self.decoder_embed(input)
        return out

    def decode(self, input: Tensor) -> Tensor:
        """Adds positions and runs the blocks and the norm: (B, N, D) -> (B, N, D)."""
        out: Tensor = self.decoder_norm(self.decoder_blocks(input + self.decoder_pos_embed))
        return out

    def predict(self, input: Tensor) -> Tensor:
        """(B, N, decoder_embed_dim) -> (B, N, patch_size**2 * in_chans)."""
        out: Tensor = self.decoder_pred(input)
        return out

    def _initialize_weights(self) -> None:
        _init_decoder_weights(self, self.mask_token, self.decoder_pos_embed, self.num_prefix_tokens)


class PixioDecoderTIMM(MAEDecoderTIMM):
    """``MAEDecoderTIMM`` with the deep (32 blocks by default) decoder of Pixio [0].

    Pixio moves pixel-level detail from the encoder to a much deeper decoder; the architecture
    is otherwise MAE's.

    - [0]: In Pursuit of Pixel Supervision for Visual Pre-training, 2025,
      https://arxiv.org/abs/2512.15715

    Args:
        See ``MAEDecoderTIMM``; only the default ``decoder_depth`` (32) differs.

    Example:
        >>> import torch
        >>> decoder = PixioDecoderTIMM(
        ...     num_patches=16, patch_size=8, embed_dim=32, decoder_embed_dim=16,
        ...     decoder_depth=2, decoder_num_heads=2,
        ... )
        >>> decoder(torch.randn(2, 17, 32)).shape
        torch.Size([2, 17, 192])
    """

    def __init__(
        self,
        num_patches: int,
        patch_size: int,
        in_chans: int = 3,
        embed_dim: int = 1024,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 32,
        decoder_num_heads: int = 16,
        num_prefix_tokens: int = 1,
        mlp_ratio: float = 4.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
        initialize_weights: bool = True,
        mask_token: Parameter | None = None,
    ) -> None:
        super().__init__(
            num_patches=num_patches,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            num_prefix_tokens=num_prefix_tokens,
            mlp_ratio=mlp_ratio,
            proj_drop_rate=proj_drop_rate,
            attn_drop_rate=attn_drop_rate,
            norm_layer=norm_layer,
            initialize_weights=initialize_weights,
            mask_token=mask_token,
        )
