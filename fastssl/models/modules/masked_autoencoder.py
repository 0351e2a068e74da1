"""Masked Autoencoder [0] encoder, backbone and decoder on torchvision's ViT building blocks.

``MaskedVisionTransformerTorchvision`` is the newer backbone; these classes keep lightly's
original MAE modules (and their parameter names) for code written against them.

- [0]: MAE, 2022, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import vision_transformer
from torchvision.models.vision_transformer import ConvStemConfig

from fastssl.models.modules.masked_vision_transformer import (
    _get_at_index,
    _init_sincos_pos_embed,
    _layer_norm_eps6,
    _prepend_token,
)
from fastssl.models.modules.masked_vision_transformer_torchvision import (
    _resize_grid_pos_embed,
    _xavier_linear_layers,
)


class MAEEncoder(vision_transformer.Encoder):
    """Transformer encoder of MAE [0] that can drop tokens before the blocks.

    A torchvision ``Encoder`` whose positional embedding is the fixed 2D sine-cosine code
    (class token position zero) and whose linear layers are xavier-initialized.

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

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
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
        self._initialize_weights()

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
        seq_length, hidden_dim = vit_encoder.pos_embedding.shape[1:]
        # A layer-less shell: its own modules are replaced right away, so building a full-size
        # encoder first (and initializing it) would only cost time and memory.
        encoder = cls(
            seq_length=seq_length,
            num_layers=0,
            num_heads=1,
            hidden_dim=hidden_dim,
            mlp_dim=1,
            dropout=0.0,
            attention_dropout=0.0,
        )
        encoder.pos_embedding = vit_encoder.pos_embedding
        encoder.dropout = vit_encoder.dropout
        encoder.layers = vit_encoder.layers
        encoder.ln = vit_encoder.ln
        if initialize_weights:
            encoder._initialize_weights()
        return encoder

    def forward(self, input: Tensor, idx_keep: Tensor | None = None) -> Tensor:
        """Adds positions, keeps the tokens at ``idx_keep`` (B, K) and encodes them.

        Args:
            input: Tokens with shape (B, N, hidden_dim), class token first.
            idx_keep: Indices in [0, N) of the tokens to encode, shape (B, K).

        Returns:
            Tensor with shape (B, N or K, hidden_dim).
        """
        input = input + self.interpolate_pos_encoding(input)
        if idx_keep is not None:
            input = _get_at_index(input, idx_keep)
        out: Tensor = self.ln(self.layers(self.dropout(input)))
        return out

    def interpolate_pos_encoding(self, input: Tensor) -> Tensor:
        """Positional embedding for (B, 1 + num_patches, D) tokens of a square image."""
        # No antialiasing here, as in lightly's MAEEncoder.
        return _resize_grid_pos_embed(
            self.pos_embedding,
            num_patches=input.shape[1] - 1,
            num_prefix_tokens=1,
            antialias=False,
        )

    def _initialize_weights(self) -> None:
        _init_sincos_pos_embed(self.pos_embedding, num_prefix_tokens=1)
        _xavier_linear_layers(self)


class MAEBackbone(vision_transformer.VisionTransformer):
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

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        dropout: float = 0,
        attention_dropout: float = 0,
        num_classes: int = 1000,
        representation_size: int | None = None,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
        conv_stem_configs: list[ConvStemConfig] | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            num_classes=num_classes,
            representation_size=representation_size,
            norm_layer=norm_layer,
            conv_stem_configs=conv_stem_configs,
        )
        self.encoder = MAEEncoder(
            seq_length=self.seq_length,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            norm_layer=norm_layer,
        )

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
        backbone = cls(
            image_size=vit.image_size,
            patch_size=vit.patch_size,
            num_layers=0,  # the encoder is replaced below
            num_heads=1,
            hidden_dim=vit.hidden_dim,
            mlp_dim=vit.mlp_dim,
            dropout=vit.dropout,
            attention_dropout=vit.attention_dropout,
            num_classes=vit.num_classes,
            representation_size=vit.representation_size,
            norm_layer=vit.norm_layer,
        )
        backbone.conv_proj = vit.conv_proj
        backbone.class_token = vit.class_token
        backbone.seq_length = vit.seq_length
        backbone.heads = vit.heads
        backbone.encoder = MAEEncoder.from_vit_encoder(
            vit.encoder, initialize_weights=initialize_weights
        )
        return backbone

    def forward(self, images: Tensor, idx_keep: Tensor | None = None) -> Tensor:
        """Returns the encoded class token, shape (B, hidden_dim).

        Args:
            images: Tensor with shape (B, C, image_size, image_size).
            idx_keep: Indices (B, K) of the tokens to encode; index 0 is the class token.
        """
        return self.encode(images, idx_keep)[:, 0]

    def encode(self, images: Tensor, idx_keep: Tensor | None = None) -> Tensor:
        """Returns the encoded tokens, shape (B, N', hidden_dim), class token first."""
        out: Tensor = self.encoder(
            self.images_to_tokens(images, prepend_class_token=True), idx_keep
        )
        return out

    def images_to_tokens(self, images: Tensor, prepend_class_token: bool) -> Tensor:
        """(B, C, H, W) -> (B, [1 +] num_patches, hidden_dim) patch tokens."""
        tokens = self.conv_proj(images).flatten(2).transpose(1, 2)
        return _prepend_token(tokens, self.class_token) if prepend_class_token else tokens

    def _initialize_weights(self) -> None:
        # MAE treats the patch embedding as a linear layer on flattened patches.
        weight = self.conv_proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.class_token, std=0.02)
        self.encoder._initialize_weights()
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
