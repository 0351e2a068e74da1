"""Masked Autoencoder [0] encoder, backbone and decoder on torchvision's ViT building blocks.

``MaskedVisionTransformerTorchvision`` is the newer backbone; these classes keep lightly's
original MAE modules (and their parameter names) for code written against them.

- [0]: MAE, 2022, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from torch import Tensor, nn
from torchvision.models import vision_transformer

from fastssl.models.modules._token_keeping_vit import TokenKeepingBackbone, TokenKeepingEncoder
from fastssl.models.modules.masked_vision_transformer import (
    _init_sincos_pos_embed,
    _layer_norm_eps6,
)
from fastssl.models.modules.masked_vision_transformer_torchvision import _xavier_linear_layers


class MAEEncoder(TokenKeepingEncoder):
    """Transformer encoder of MAE [0] that can drop tokens before the blocks.

    A torchvision ``Encoder`` whose positional embedding is the fixed 2D sine-cosine code
    (class token position zero) and whose linear layers are xavier-initialized; ``forward``
    adds the positions, keeps the tokens at ``idx_keep`` and encodes them.

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377

    Args:
        seq_length: Tokens per image, class token included.
        num_layers: Number of transformer blocks.
        num_heads: Number of attention heads.
        hidden_dim: Token dimension.
        mlp_dim: Hidden dimension of the MLPs.
        dropout: Dropout in the MLPs and on the input tokens.
        attention_dropout: Dropout on the attention weights.
        norm_layer: Normalization layer constructor.

    Shapes:
        (B, seq_length, hidden_dim) -> (B, N', hidden_dim), N' = seq_length or kept tokens.

    Example:
        >>> import torch
        >>> encoder = MAEEncoder(17, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
        ...                      dropout=0.0, attention_dropout=0.0)
        >>> encoder(torch.randn(2, 17, 32), idx_keep=torch.tensor([[0, 4]] * 2)).shape
        torch.Size([2, 2, 32])
    """

    @classmethod
    def from_vit_encoder(
        cls, vit_encoder: vision_transformer.Encoder, initialize_weights: bool = True
    ) -> MAEEncoder:
        """Builds a MAEEncoder that shares the modules of a torchvision ViT encoder.

        Args:
            vit_encoder: A torchvision ViT ``Encoder``.
            initialize_weights: Re-initialize as in MAE; set False for pretrained weights.

        Returns:
            A MAEEncoder whose layers, norm, dropout and positions are those of ``vit_encoder``.
        """
        encoder = cls._sharing(vit_encoder)
        if initialize_weights:
            encoder._initialize_weights()
        return encoder

    def _initialize_weights(self) -> None:
        _init_sincos_pos_embed(self.pos_embedding, num_prefix_tokens=1)
        _xavier_linear_layers(self)


class MAEBackbone(TokenKeepingBackbone):
    """Backbone of MAE [0]: a torchvision ViT whose encoder is a ``MAEEncoder``.

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377
    - [1]: Early Convolutions Help Transformers See Better, 2021,
      https://arxiv.org/abs/2106.14881

    Args:
        image_size: Side of the input images; a multiple of ``patch_size``.
        patch_size: Side of the patches.
        num_layers: Number of transformer blocks.
        num_heads: Number of attention heads.
        hidden_dim: Token dimension.
        mlp_dim: Hidden dimension of the MLPs.
        dropout: Dropout in the MLPs and on the input tokens.
        attention_dropout: Dropout on the attention weights.
        num_classes: Classes of torchvision's (unused) classification head.
        representation_size: Optional pre-logits layer of the (unused) head.
        norm_layer: Normalization layer constructor.
        conv_stem_configs: Optional convolutional stem [1] instead of the patch projection.

    Shapes:
        images (B, 3, image_size, image_size) -> ``forward``: (B, hidden_dim) class token;
        ``encode``: (B, N', hidden_dim).

    Example:
        >>> import torch
        >>> backbone = MAEBackbone(32, 8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> backbone(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 32])
    """

    encoder_class = MAEEncoder

    @classmethod
    def from_vit(
        cls, vit: vision_transformer.VisionTransformer, initialize_weights: bool = True
    ) -> MAEBackbone:
        """Builds a MAEBackbone that shares the modules of a torchvision ViT.

        Args:
            vit: A torchvision ``VisionTransformer``.
            initialize_weights: Re-initialize the encoder as in MAE; False for pretrained.

        Returns:
            A MAEBackbone with the architecture and modules of ``vit``.
        """
        encoder = MAEEncoder.from_vit_encoder(vit.encoder, initialize_weights=initialize_weights)
        return cls._sharing(vit, encoder)

    def forward(self, images: Tensor, idx_keep: Tensor | None = None) -> Tensor:
        """Returns the encoded class token, shape (B, hidden_dim).

        Args:
            images: Tensor with shape (B, C, image_size, image_size).
            idx_keep: Indices (B, K) of the tokens to encode; index 0 is the class token.
        """
        return self.encode(images, idx_keep)[:, 0]

    def _initialize_weights(self) -> None:
        # MAE treats the patch embedding as a linear layer on flattened patches.
        weight = self.conv_proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.class_token, std=0.02)
        cast(MAEEncoder, self.encoder)._initialize_weights()
        _xavier_linear_layers(self)


class MAEDecoder(vision_transformer.Encoder):
    """Decoder of MAE [0]: encoder tokens -> pixel values of every patch.

    ``forward(x) = predict(decode(embed(x)))`` with a linear embedding to ``hidden_dim``, a
    torchvision transformer encoder with a fixed sine-cosine positional embedding and a linear
    head to ``out_dim`` (usually ``3 * patch_size**2``).

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377

    Args:
        seq_length: Tokens per image, class token included.
        num_layers: Number of transformer blocks.
        num_heads: Number of attention heads.
        embed_input_dim: Token dimension of the encoder.
        hidden_dim: Token dimension of the decoder.
        mlp_dim: Hidden dimension of the MLPs.
        out_dim: Predicted values per patch.
        dropout: Dropout in the MLPs and on the input tokens.
        attention_dropout: Dropout on the attention weights.
        norm_layer: Normalization layer constructor.

    Shapes:
        (B, seq_length, embed_input_dim) -> (B, seq_length, out_dim).

    Example:
        >>> import torch
        >>> decoder = MAEDecoder(17, num_layers=1, num_heads=2, embed_input_dim=32,
        ...                      hidden_dim=16, mlp_dim=32, out_dim=192)
        >>> decoder(torch.randn(2, 17, 32)).shape
        torch.Size([2, 17, 192])
    """

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        embed_input_dim: int,
        hidden_dim: int,
        mlp_dim: int,
        out_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
    ) -> None:
        super().__init__(
            seq_length=seq_length,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            norm_layer=norm_layer,
        )
        self.decoder_embed = nn.Linear(embed_input_dim, hidden_dim, bias=True)
        self.prediction_head = nn.Linear(hidden_dim, out_dim)
        self._initialize_weights()

    def forward(self, input: Tensor) -> Tensor:
        """(B, N, embed_input_dim) -> (B, N, out_dim)."""
        return self.predict(self.decode(self.embed(input)))

    def embed(self, input: Tensor) -> Tensor:
        """(B, N, embed_input_dim) -> (B, N, hidden_dim)."""
        out: Tensor = self.decoder_embed(input)
        return out

    def decode(self, input: Tensor) -> Tensor:
        """Adds positions and runs the transformer: (B, N, hidden_dim) -> (B, N, hidden_dim)."""
        out: Tensor = super().forward(input)
        return out

    def predict(self, input: Tensor) -> Tensor:
        """(B, N, hidden_dim) -> (B, N, out_dim)."""
        out: Tensor = self.prediction_head(input)
        return out

    def _initialize_weights(self) -> None:
        _init_sincos_pos_embed(self.pos_embedding, num_prefix_tokens=1)
        _xavier_linear_layers(self)
