"""Abstract interface of a transformer decoder (predictor) that works on masked token sequences.

An encoder (``MaskedVisionTransformer``) starts from images; a decoder starts from tokens, e.g.
the visible tokens of MAE [0] scattered back into a full sequence of mask tokens. The input
embedding and the prediction head stay outside the decoder so the same decoder serves MAE,
Pixio and I-JEPA predictors.

- [0]: MAE, 2022, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor
from torch.nn import Module, Parameter

from fastssl.models.modules.masked_vision_transformer import _mask_and_keep


class MaskedVisionTransformerDecoder(ABC, Module):
    """Abstract base class of a masked vision transformer decoder [0].

    ``preprocess`` replaces the tokens at ``idx_mask`` (or where ``mask`` is True) by
    ``mask_token``, adds positional embeddings and keeps the tokens at ``idx_keep``; ``decode``
    runs the transformer blocks and the final norm.

    - [0]: MAE, 2022, https://arxiv.org/abs/2111.06377

    Example:
        >>> from fastssl.models.modules.masked_vision_transformer_decoder_timm import (
        ...     MaskedVisionTransformerDecoderTIMM,
        ... )
        >>> decoder = MaskedVisionTransformerDecoderTIMM(16, embed_dim=32, depth=1, num_heads=2)
        >>> isinstance(decoder, MaskedVisionTransformerDecoder)
        True
    """

    mask_token: Parameter

    @property
    @abstractmethod
    def sequence_length(self) -> int:
        """Number of tokens of a decoder input, prefix tokens included."""

    @abstractmethod
    def forward(
        self,
        x: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Decodes a batch of token sequences.

        Args:
            x: Tensor with shape (B, sequence_length, D).
            idx_mask: Long tensor with shape (B, num_tokens_to_mask), indices in
                [0, sequence_length) of the tokens to replace by the mask token. Exclusive with
                ``mask``.
            idx_keep: Long tensor with shape (B, num_tokens_to_keep), indices of the tokens to
                forward; applied after masking.
            mask: Boolean tensor with shape (B, sequence_length), True where a token is
                replaced by the mask token. Exclusive with ``idx_mask``.

        Returns:
            Tensor with shape (B, N', D) with N' = sequence_length or num_tokens_to_keep.
        """

    def preprocess(
        self,
        x: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Masks tokens, adds positional embeddings and keeps the tokens at ``idx_keep``.

        Args:
            x: Tensor with shape (B, sequence_length, D).
            idx_mask: See ``forward``.
            idx_keep: See ``forward``.
            mask: See ``forward``.

        Returns:
            Tensor with shape (B, N', D).

        Raises:
            ValueError: If both ``idx_mask`` and ``mask`` are given.
        """
        return _mask_and_keep(x, idx_mask, idx_keep, mask, self.mask_token, self.add_pos_embed)

    @abstractmethod
    def add_pos_embed(self, x: Tensor) -> Tensor:
        """Adds positional embeddings to (B, sequence_length, D) tokens."""

    @abstractmethod
    def decode(self, x: Tensor) -> Tensor:
        """Runs the transformer blocks and the final norm: (B, N, D) -> (B, N, D)."""
