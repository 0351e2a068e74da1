"""The torchvision ViT pieces that MAE's and I-JEPA's legacy modules share.

:class:`~fastssl.models.modules.masked_autoencoder.MAEEncoder` /
:class:`~fastssl.models.modules.masked_autoencoder.MAEBackbone` and
:class:`~fastssl.models.modules.ijepa.IJEPAEncoder` /
:class:`~fastssl.models.modules.ijepa.IJEPABackbone` are the same torchvision ViT with one
change: the encoder adds the positions, then keeps only some tokens before its blocks. The
two pairs differ in initialisation and in what the backbone's ``forward`` returns, which
stays in their own modules; the rest is here, once.

Private module: the public classes are those named above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from torch import Tensor, nn
from torchvision.models import vision_transformer
from torchvision.models.vision_transformer import ConvStemConfig

from fastssl.models._utils.tokens import apply_masks
from fastssl.models.modules.masked_vision_transformer import _layer_norm_eps6, _prepend_token
from fastssl.models.modules.masked_vision_transformer_torchvision import _resize_grid_pos_embed

_Masks = Tensor | list[Tensor]
_E = TypeVar("_E", bound="TokenKeepingEncoder")
_B = TypeVar("_B", bound="TokenKeepingBackbone")


class TokenKeepingEncoder(vision_transformer.Encoder):
    """A torchvision ``Encoder`` whose ``forward`` keeps the tokens at ``idx_keep`` (after
    adding the positions, before the blocks).

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
        (B, seq_length, hidden_dim) -> (B, seq_length, hidden_dim), or (M * B, K,
        hidden_dim) for M index tensors (B, K) in ``idx_keep``.
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

    def _initialize_weights(self) -> None:
        """Initialises the new encoder; torchvision's initialisation stays here, subclasses
        (MAE's) replace it."""

    @classmethod
    def _sharing(cls: type[_E], vit_encoder: vision_transformer.Encoder) -> _E:
        """An encoder of class ``cls`` whose positions, dropout, blocks and final norm are
        those of ``vit_encoder`` (built layer-less, so nothing is allocated twice)."""
        seq_length, hidden_dim = vit_encoder.pos_embedding.shape[1:]
        encoder = cls(
            seq_length=seq_length,
            num_layers=0,  # the blocks are replaced below
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
        return encoder

    def forward(self, input: Tensor, idx_keep: _Masks | None = None) -> Tensor:
        """Adds positions, keeps the tokens at ``idx_keep`` and encodes them.

        Args:
            input: Tokens (B, N, hidden_dim), class token first.
            idx_keep: Token indices (B, K) in [0, N) to encode, or a list of them (see
                :func:`~fastssl.models.utils.apply_masks`); None encodes every token.

        Returns:
            Tensor of shape (B, N, hidden_dim) or (len(idx_keep) * B, K, hidden_dim).
        """
        input = input + self.interpolate_pos_encoding(input)
        if idx_keep is not None:
            input = apply_masks(input, idx_keep)
        out: Tensor = self.ln(self.layers(self.dropout(input)))
        return out

    def interpolate_pos_encoding(self, input: Tensor) -> Tensor:
        """Positional embedding for (B, 1 + num_patches, D) tokens of a square image.

        The patch positions are resized bicubically, without antialiasing (as LightlySSL's
        MAE and I-JEPA encoders), when the image has another number of patches.
        """
        return _resize_grid_pos_embed(
            self.pos_embedding,
            num_patches=input.shape[1] - 1,
            num_prefix_tokens=1,
            antialias=False,
        )


class TokenKeepingBackbone(vision_transformer.VisionTransformer):
    """A torchvision ``VisionTransformer`` whose encoder is a ``encoder_class`` (a
    :class:`TokenKeepingEncoder`), with ``encode(images, idx_keep)``.

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
        conv_stem_configs: Optional convolutional stem instead of the patch projection.

    Shapes:
        ``encode``: images (B, 3, image_size, image_size) -> (B, 1 + num_patches,
        hidden_dim), or (M * B, K, hidden_dim) for M index tensors (B, K) in ``idx_keep``.
    """

    encoder_class: ClassVar[type[TokenKeepingEncoder]] = TokenKeepingEncoder

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
        self.encoder = self.encoder_class(
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
    def _sharing(
        cls: type[_B], vit: vision_transformer.VisionTransformer, encoder: TokenKeepingEncoder
    ) -> _B:
        """A backbone of class ``cls`` with the patch projection, class token and head of
        ``vit`` and the given encoder (built on ``vit.encoder``)."""
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
        backbone.encoder = encoder
        return backbone

    def encode(self, images: Tensor, idx_keep: _Masks | None = None) -> Tensor:
        """Encoded class and patch tokens of the images, or of the kept tokens only.

        Args:
            images: Tensor of shape (B, C, image_size, image_size).
            idx_keep: Token indices (B, K) to encode (0 is the class token), or a list.

        Returns:
            Tensor of shape (B, 1 + num_patches, hidden_dim) or
            (len(idx_keep) * B, K, hidden_dim).
        """
        tokens = self.images_to_tokens(images, prepend_class_token=True)
        out: Tensor = self.encoder(tokens, idx_keep)
        return out

    def images_to_tokens(self, images: Tensor, prepend_class_token: bool) -> Tensor:
        """(B, C, H, W) -> patch tokens (B, [1 +] num_patches, hidden_dim)."""
        tokens = self.conv_proj(images).flatten(2).transpose(1, 2)
        return _prepend_token(tokens, self.class_token) if prepend_class_token else tokens
