"""I-JEPA [0] encoder, backbone and predictor on torchvision's ViT building blocks.

I-JEPA predicts, in representation space, the embeddings of several target blocks of an
image from one context block: a ViT encodes the context patches, and a narrow
transformer (the predictor) receives the encoded context plus one mask token per target
patch (carrying the target's positional embedding) and regresses the target encoder's
embeddings of those patches. Experimental, as in LightlySSL.

Same classes, arguments, parameter names and outputs as LightlySSL 1.6's
``lightly.models.modules.ijepa``, so checkpoints load either way.

- [0]: Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
  Predictive Architecture", https://arxiv.org/abs/2301.08243
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import vision_transformer

from fastssl.models._utils.positional import get_2d_sine_cosine_positional_embedding
from fastssl.models._utils.tokens import apply_masks, repeat_interleave_batch
from fastssl.models.modules._token_keeping_vit import (
    TokenKeepingBackbone,
    TokenKeepingEncoder,
    _Masks,
)
from fastssl.models.modules.masked_vision_transformer import _layer_norm_eps6


def _as_list(masks: _Masks | None, name: str) -> list[Tensor]:
    if masks is None:
        raise ValueError(f"Cannot run the I-JEPA predictor without mask indices: '{name}' is None.")
    return [masks] if isinstance(masks, Tensor) else list(masks)


def _ijepa_predict(
    x: Tensor,
    masks_x: _Masks,
    masks: _Masks,
    embed: nn.Module,
    pos_embed: Tensor,
    mask_token: Tensor,
    transformer: Callable[[Tensor], Tensor],
    project: nn.Module,
) -> Tensor:
    """The I-JEPA predictor's forward pass, shared by the torchvision and timm predictors.

    Args:
        x: Encoded context tokens, (len(masks_x) * B, K_ctx, input dim): the B images of the
            first context mask, then those of the second, ... (:func:`apply_masks` order).
        masks_x: Patch indices (B, K_ctx) of the context blocks, one tensor per context mask.
        masks: Patch indices (B, K_tgt) of the target blocks, one tensor per target mask.
        embed: Input dim -> predictor dim.
        pos_embed: Positional embedding of all patches, (1, num_patches, predictor dim).
        mask_token: (1, 1, predictor dim).
        transformer: Blocks and final norm of the predictor.
        project: Predictor dim -> input dim.

    Returns:
        Predicted target tokens, (len(masks) * len(masks_x) * B, K_tgt, input dim): every
        target mask is predicted from every context mask.
    """
    masks_x = _as_list(masks_x, "masks_x")
    masks = _as_list(masks, "masks")
    batch_size = len(x) // len(masks_x)
    positions = pos_embed.expand(batch_size, -1, -1)
    context = embed(x) + apply_masks(positions, masks_x)
    num_context = context.shape[1]
    # One query per target patch: the mask token at the target's position, repeated so
    # that every (target mask, context mask) pair gets its own group of B sequences.
    target_positions = repeat_interleave_batch(
        apply_masks(positions, masks), batch_size, repeat=len(masks_x)
    )
    queries = mask_token + target_positions
    tokens = torch.cat([context.repeat(len(masks), 1, 1), queries], dim=1)
    out: Tensor = project(transformer(tokens)[:, num_context:])
    return out


class IJEPAPredictor(vision_transformer.Encoder):
    """Predictor of I-JEPA [0]: context tokens + target mask tokens -> target embeddings.

    A torchvision transformer ``Encoder`` (its ``layers`` and ``ln``; its own
    ``pos_embedding`` is unused) between a linear embedding ``mlp_dim -> predictor_embed_dim``
    and a projection back. Target queries are the zero-initialized mask token plus a fixed
    2D sine-cosine positional embedding; the context tokens get the same embedding at their
    positions. Experimental.

    - [0]: I-JEPA, Assran et al. 2023, https://arxiv.org/abs/2301.08243

    Args:
        seq_length: Sequence length of the (unused) positional embedding of the encoder.
        num_layers: Number of transformer blocks.
        num_heads: Number of attention heads.
        hidden_dim: Token dimension of the blocks; must equal ``predictor_embed_dim``.
        predictor_embed_dim: Token dimension inside the predictor.
        num_patches: Patches per image (a perfect square).
        mlp_dim: Dimension of the encoder's tokens, i.e. of the predictor's inputs and
            outputs (named after LightlySSL's argument).
        dropout: Dropout in the MLPs.
        attention_dropout: Dropout on the attention weights.
        norm_layer: Normalization layer constructor.
        **kwargs: Ignored, as in LightlySSL.

    Shapes:
        ``x`` (M_ctx * B, K_ctx, mlp_dim), ``masks_x`` M_ctx x (B, K_ctx), ``masks`` M_tgt x
        (B, K_tgt) -> (M_tgt * M_ctx * B, K_tgt, mlp_dim).

    Example:
        >>> predictor = IJEPAPredictor(1, num_layers=1, num_heads=2, hidden_dim=16,
        ...     predictor_embed_dim=16, num_patches=16, mlp_dim=32, dropout=0.0,
        ...     attention_dropout=0.0)
        >>> x = torch.randn(2, 4, 32)
        >>> context, target = torch.tensor([[0, 1, 2, 3]] * 2), torch.tensor([[8, 9]] * 2)
        >>> predictor(x, context, target).shape
        torch.Size([2, 2, 32])
    """

    def __init__(
        self,
        seq_length: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        predictor_embed_dim: int,
        num_patches: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
        norm_layer: Callable[..., nn.Module] = _layer_norm_eps6,
        **kwargs: Any,
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
        self.predictor_embed = nn.Linear(mlp_dim, predictor_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_proj = nn.Linear(predictor_embed_dim, mlp_dim, bias=True)
        table = get_2d_sine_cosine_positional_embedding(
            predictor_embed_dim, int(num_patches**0.5), cls_token=False
        )
        self.predictor_pos_embed = nn.Parameter(
            torch.from_numpy(table).float().unsqueeze(0), requires_grad=False
        )

    @classmethod
    def from_vit_encoder(
        cls, vit_encoder: vision_transformer.Encoder, num_patches: int
    ) -> IJEPAPredictor:
        """A predictor whose blocks and final norm are those of a torchvision ViT encoder.

        As in LightlySSL, the embedding and projection are 768 -> 768 whatever the encoder.

        Args:
            vit_encoder: A torchvision ViT ``Encoder``; its ``layers`` and ``ln`` are shared.
            num_patches: Patches per image.

        Returns:
            The predictor.
        """
        predictor = cls(
            seq_length=1,
            num_layers=0,  # the blocks are replaced below
            num_heads=1,
            hidden_dim=1,
            predictor_embed_dim=768,
            mlp_dim=768,
            num_patches=num_patches,
            dropout=0,
            attention_dropout=0,
        )
        predictor.layers = vit_encoder.layers
        predictor.ln = vit_encoder.ln
        return predictor

    def forward(self, x: Tensor, masks_x: _Masks, masks: _Masks) -> Tensor:
        """Predicts the target tokens of ``masks`` from context tokens ``x`` at ``masks_x``.

        Args:
            x: Encoded context tokens (len(masks_x) * B, K_ctx, mlp_dim).
            masks_x: Patch indices (B, K_ctx) of the context, a tensor or a list.
            masks: Patch indices (B, K_tgt) of the targets, a tensor or a list.

        Returns:
            Tensor of shape (len(masks) * len(masks_x) * B, K_tgt, mlp_dim).
        """
        return _ijepa_predict(
            x,
            masks_x,
            masks,
            embed=self.predictor_embed,
            pos_embed=self.predictor_pos_embed,
            mask_token=self.mask_token,
            transformer=lambda tokens: self.ln(self.layers(tokens)),
            project=self.predictor_proj,
        )


class IJEPAEncoder(TokenKeepingEncoder):
    """Transformer encoder of I-JEPA [0] that encodes only the tokens of a block (or blocks).

    A torchvision ``Encoder`` with its learned positional embedding (bicubically resized for
    other square image sizes), whose ``forward`` keeps the tokens at ``idx_keep`` before the
    blocks. Experimental.

    - [0]: I-JEPA, Assran et al. 2023, https://arxiv.org/abs/2301.08243

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

    Example:
        >>> encoder = IJEPAEncoder(17, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
        ...                        dropout=0.0, attention_dropout=0.0)
        >>> encoder(torch.randn(2, 17, 16), idx_keep=torch.tensor([[1, 2, 3]] * 2)).shape
        torch.Size([2, 3, 16])
    """

    @classmethod
    def from_vit_encoder(cls, vit_encoder: vision_transformer.Encoder) -> IJEPAEncoder:
        """An encoder sharing the positions, dropout, blocks and norm of a torchvision one."""
        return cls._sharing(vit_encoder)


class IJEPABackbone(TokenKeepingBackbone):
    """ViT backbone of I-JEPA [0]: images -> tokens of the kept blocks.

    A torchvision ``VisionTransformer`` whose encoder is an :class:`IJEPAEncoder`. As in
    LightlySSL, the positional embedding is learned (the paper uses a fixed one) and
    ``forward`` returns all encoded tokens, class token included, not only the class token.
    Experimental.

    - [0]: I-JEPA, Assran et al. 2023, https://arxiv.org/abs/2301.08243

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
        images (B, 3, image_size, image_size) -> (B, 1 + num_patches, hidden_dim), or
        (M * B, K, hidden_dim) for M index tensors (B, K) in ``idx_keep``.

    Example:
        >>> backbone = IJEPABackbone(32, 8, num_layers=1, num_heads=2, hidden_dim=16,
        ...                          mlp_dim=32)
        >>> backbone(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 17, 16])
    """

    encoder_class = IJEPAEncoder

    @classmethod
    def from_vit(cls, vit: vision_transformer.VisionTransformer) -> IJEPABackbone:
        """A backbone sharing the modules (patch projection, class token, encoder, head) of
        a torchvision ViT."""
        return cls._sharing(vit, IJEPAEncoder.from_vit_encoder(vit.encoder))

    def forward(self, images: Tensor, idx_keep: _Masks | None = None) -> Tensor:
        """Encoded tokens of ``images``; see :meth:`encode`."""
        return self.encode(images, idx_keep)


__all__ = ["IJEPABackbone", "IJEPAEncoder", "IJEPAPredictor"]
