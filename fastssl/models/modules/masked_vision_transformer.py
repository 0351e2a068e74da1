"""Abstract interface of a vision transformer that can mask and drop patch tokens.

Masked image modelling methods need more from a ViT than ``forward(images)``: MAE [1] drops
most patch tokens before the encoder (``idx_keep``), SimMIM [2] replaces them by a learned mask
token (``idx_mask`` / ``mask``), and MSN / PMSN [3] drop tokens of the anchor view. This module
defines the interface shared by the torchvision and timm wrappers; ``preprocess`` is the one
piece of logic they share.

- [0]: ViT, 2021, https://arxiv.org/abs/2010.11929
- [1]: MAE, 2022, https://arxiv.org/abs/2111.06377
- [2]: SimMIM, 2022, https://arxiv.org/abs/2111.09886
- [3]: MSN, 2022, https://arxiv.org/abs/2204.07141
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import Tensor
from torch.nn import LayerNorm, Module, Parameter, init

# ---------------------------------------------------------------------------------------------
# Token helpers. They duplicate a few functions of fastssl.models.utils (written in parallel)
# so that this module has no dependency on it yet; they are private on purpose.
# ---------------------------------------------------------------------------------------------


def _get_at_index(tokens: Tensor, index: Tensor) -> Tensor:
    """Gathers ``tokens[b, index[b, i]]``: (B, N, D), (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _set_at_index(tokens: Tensor, index: Tensor, value: Tensor) -> Tensor:
    """Out-of-place scatter of ``value`` (B, K, D) into ``tokens`` (B, N, D) at ``index``."""
    return torch.scatter(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), value)


def _index_to_bool_mask(index: Tensor, sequence_length: int) -> Tensor:
    """(B, K) integer indices -> (B, N) boolean mask that is True at the indices."""
    mask = torch.zeros(index.shape[0], sequence_length, dtype=torch.bool, device=index.device)
    return mask.scatter(1, index, True)


def _replace_masked(tokens: Tensor, mask: Tensor, mask_token: Tensor) -> Tensor:
    """Replaces ``tokens[b, n]`` by ``mask_token`` wherever ``mask[b, n]`` is True.

    ``torch.where`` rather than the arithmetic blend ``(1 - m) * x + m * t`` so that a
    non-finite token under the mask cannot leak NaN into the output (0 * inf = NaN).
    """
    return torch.where(mask.to(torch.bool).unsqueeze(-1), mask_token.to(tokens.dtype), tokens)


def _check_one_mask(idx_mask: Tensor | None, mask: Tensor | None) -> None:
    """Raises a ValueError if both ``idx_mask`` and ``mask`` are given."""
    if idx_mask is not None and mask is not None:
        raise ValueError(
            "idx_mask and mask cannot both be set at the same time: pass the masked "
            "tokens either as indices (idx_mask) or as a boolean mask (mask)."
        )


def _mask_and_keep(
    tokens: Tensor,
    idx_mask: Tensor | None,
    idx_keep: Tensor | None,
    mask: Tensor | None,
    mask_token: Tensor,
    add_pos_embed: Callable[[Tensor], Tensor],
) -> Tensor:
    """Masks (B, N, D) tokens, adds positions, keeps ``idx_keep``: the encoders' and decoders'
    ``preprocess`` after tokenization.

    Raises:
        ValueError: If both ``idx_mask`` and ``mask`` are given.
    """
    _check_one_mask(idx_mask, mask)
    if idx_mask is not None:
        mask = _index_to_bool_mask(idx_mask, tokens.shape[1])
    if mask is not None:
        tokens = _replace_masked(tokens, mask, mask_token)
    tokens = add_pos_embed(tokens)
    if idx_keep is not None:
        tokens = _get_at_index(tokens, idx_keep)
    return tokens


def _mask_token_or_zeros(mask_token: Parameter | None, dim: int) -> Parameter:
    """The given mask token, or a new zero (1, 1, dim) one."""
    return mask_token if mask_token is not None else Parameter(torch.zeros(1, 1, dim))


def _xavier_flat_(weight: Tensor) -> None:
    """Xavier-uniform over (out_channels, everything else): MAE's patch-embedding init."""
    init.xavier_uniform_(weight.data.view(weight.shape[0], -1))


def _with_intermediates(
    tokens: Tensor,
    layers: Iterable[Module],
    run: Callable[[Module, Tensor], Tensor],
    final_norm: Callable[[Tensor], Tensor],
    norm: bool,
) -> tuple[Tensor, list[Tensor]]:
    """Runs ``layers`` one by one: ``(final_norm(out), every layer's output)``, the outputs
    normalised too when ``norm``."""
    intermediates: list[Tensor] = []
    for layer in layers:
        tokens = run(layer, tokens)
        intermediates.append(final_norm(tokens) if norm else tokens)
    return final_norm(tokens), intermediates


def _prepend_token(tokens: Tensor, token: Tensor) -> Tensor:
    """(B, N, D) tokens and a (1, 1, D) token -> (B, N + 1, D) with the token first."""
    return torch.cat([token.expand(tokens.shape[0], -1, -1), tokens], dim=1)


def _sincos_1d(embed_dim: int, positions: Tensor) -> Tensor:
    """Transformer sine-cosine code of 1D positions: (M,) -> (M, embed_dim)."""
    half = embed_dim // 2
    omega = torch.arange(half, dtype=torch.float32) / half
    omega = 1.0 / (10000.0**omega)
    angles = positions.to(torch.float32)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _sincos_2d(embed_dim: int, grid_size: int, num_prefix_tokens: int) -> Tensor:
    """Fixed 2D sine-cosine positional embedding of MAE [1].

    Half of the channels encode the column of a patch and half its row; the patches are listed
    row by row and ``num_prefix_tokens`` zero rows are prepended for class / register tokens.

    Returns:
        Tensor with shape (num_prefix_tokens + grid_size**2, embed_dim).
    """
    if embed_dim % 4 != 0:
        raise ValueError(
            f"embed_dim must be divisible by 4 for a 2D sine-cosine positional embedding, "
            f"got embed_dim={embed_dim}."
        )
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat(
        [
            _sincos_1d(embed_dim // 2, cols.reshape(-1)),
            _sincos_1d(embed_dim // 2, rows.reshape(-1)),
        ],
        dim=1,
    )
    prefix = emb.new_zeros(num_prefix_tokens, embed_dim)
    return torch.cat([prefix, emb], dim=0)


@torch.no_grad()
def _init_sincos_pos_embed(pos_embedding: Tensor, num_prefix_tokens: int) -> None:
    """Fills ``pos_embedding`` (1, P + G*G, D) with the 2D sine-cosine code and freezes it."""
    _, length, dim = pos_embedding.shape
    grid_size = int((length - num_prefix_tokens) ** 0.5)
    pos_embedding.copy_(_sincos_2d(dim, grid_size, num_prefix_tokens).unsqueeze(0))
    pos_embedding.requires_grad_(False)


# Default norm layer of ViTs (timm, MAE): LayerNorm with eps 1e-6. A module-level object so
# that it can be an argument default.
_layer_norm_eps6 = partial(LayerNorm, eps=1e-6)

_POS_EMBED_STRATEGIES = ("learn", "sincos", "skip")


def _init_pos_embed(pos_embedding: Tensor | None, strategy: str, num_prefix_tokens: int) -> None:
    """Initializes a positional embedding with ``strategy`` in ('learn', 'sincos', 'skip').

    'learn': truncated normal (std 0.02) and trainable, as in timm's ViT; 'sincos': fixed 2D
    sine-cosine code (MAE); 'skip': left as is (e.g. pretrained weights).
    """
    if strategy not in _POS_EMBED_STRATEGIES:
        raise ValueError(
            f"Invalid pos_embed_initialization: '{strategy}'. Valid options are: "
            f"{list(_POS_EMBED_STRATEGIES)}."
        )
    if pos_embedding is None or strategy == "skip":
        return
    if strategy == "learn":
        init.trunc_normal_(pos_embedding, std=0.02)
        pos_embedding.requires_grad_(True)
    else:
        _init_sincos_pos_embed(pos_embedding, num_prefix_tokens)


_WEIGHT_INIT_OPTIONS = ("", "skip")


def _check_weight_initialization(weight_initialization: str) -> None:
    if weight_initialization not in _WEIGHT_INIT_OPTIONS:
        raise ValueError(
            f"Invalid weight_initialization: '{weight_initialization}'. Valid options are: "
            f"{list(_WEIGHT_INIT_OPTIONS)} ('' = MAE initialization, 'skip' = keep weights)."
        )


class MaskedVisionTransformer(ABC, Module):
    """Abstract base class of a vision transformer [0] with token masking and dropping.

    Subclasses turn images into patch tokens (``images_to_tokens``), prepend class / register
    tokens (``prepend_prefix_tokens``), add positional embeddings (``add_pos_embed``) and run the
    transformer (``encode``). ``preprocess`` combines the first three with masking:

    1. patch tokens, then prefix tokens are prepended: (B, N, D) with N = ``sequence_length``;
    2. tokens at ``idx_mask`` (or where ``mask`` is True) are replaced by ``mask_token``
       (SimMIM [2]); indices count the prefix tokens, so patch ``p`` is token ``p + #prefix``;
    3. positional embeddings are added, so a masked token still knows where it is;
    4. only the tokens at ``idx_keep`` are kept (MAE [1], MSN [3]).

    - [0]: ViT, 2021, https://arxiv.org/abs/2010.11929
    - [1]: MAE, 2022, https://arxiv.org/abs/2111.06377
    - [2]: SimMIM, 2022, https://arxiv.org/abs/2111.09886
    - [3]: MSN, 2022, https://arxiv.org/abs/2204.07141

    Example:
        >>> from torchvision.models.vision_transformer import VisionTransformer
        >>> from fastssl.models.modules.masked_vision_transformer_torchvision import (
        ...     MaskedVisionTransformerTorchvision,
        ... )
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> model = MaskedVisionTransformerTorchvision(vit=vit)
        >>> isinstance(model, MaskedVisionTransformer)
        True
    """

    # A plain attribute (not an abstract property) so that subclasses can assign a Parameter.
    mask_token: Parameter

    @property
    @abstractmethod
    def sequence_length(self) -> int:
        """Number of tokens per image, prefix tokens included."""

    @abstractmethod
    def forward(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Encodes images and returns one pooled (class token) embedding per image.

        Args:
            images: Tensor with shape (B, C, H, W).
            idx_mask: Long tensor with shape (B, num_tokens_to_mask), indices in
                [0, sequence_length) of the tokens to replace by the mask token. Exclusive with
                ``mask``.
            idx_keep: Long tensor with shape (B, num_tokens_to_keep), indices of the tokens to
                forward; applied after masking.
            mask: Boolean tensor with shape (B, sequence_length), True where a token is
                replaced by the mask token. Exclusive with ``idx_mask``.

        Returns:
            Tensor with shape (B, embed_dim).
        """

    @abstractmethod
    def forward_intermediates(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        norm: bool = False,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Encodes images and also returns the output of every transformer block.

        Args:
            images: Tensor with shape (B, C, H, W).
            idx_mask: See ``forward``.
            idx_keep: See ``forward``.
            norm: Apply the final norm layer to every intermediate output.
            mask: See ``forward``.

        Returns:
            (tokens, intermediates): the normalized output tokens with shape (B, N', D) and one
            (B, N', D) tensor per block, where N' is ``sequence_length`` or, with
            ``idx_keep``, num_tokens_to_keep.
        """

    @abstractmethod
    def encode(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Encodes images into tokens.

        Args:
            images: Tensor with shape (B, C, H, W).
            idx_mask: See ``forward``.
            idx_keep: See ``forward``.
            mask: See ``forward``.

        Returns:
            Tensor with shape (B, N', D): all ``sequence_length`` tokens (prefix tokens first)
            or, with ``idx_keep``, the kept ones in the order of ``idx_keep``.
        """

    def preprocess(
        self,
        images: Tensor,
        idx_mask: Tensor | None = None,
        idx_keep: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Tokenizes images, prepends prefix tokens, masks, adds positions, keeps tokens.

        Args:
            images: Tensor with shape (B, C, H, W).
            idx_mask: See ``forward``.
            idx_keep: See ``forward``.
            mask: See ``forward``.

        Returns:
            Tensor with shape (B, N', D), the input of the transformer blocks.

        Raises:
            ValueError: If both ``idx_mask`` and ``mask`` are given.
        """
        _check_one_mask(idx_mask, mask)  # before the patch embedding, which it would waste
        tokens = self.prepend_prefix_tokens(self.images_to_tokens(images))
        return _mask_and_keep(tokens, idx_mask, idx_keep, mask, self.mask_token, self.add_pos_embed)

    @abstractmethod
    def images_to_tokens(self, images: Tensor) -> Tensor:
        """Patch-embeds images: (B, C, H, W) -> (B, num_patches, D), without prefix tokens."""

    def add_prefix_tokens(self, x: Tensor) -> Tensor:
        """Alias of ``prepend_prefix_tokens`` kept for lightly compatibility."""
        return self.prepend_prefix_tokens(x)

    @abstractmethod
    def prepend_prefix_tokens(self, x: Tensor) -> Tensor:
        """Prepends class / register tokens: (B, num_patches, D) -> (B, sequence_length, D)."""

    @abstractmethod
    def add_pos_embed(self, x: Tensor) -> Tensor:
        """Adds positional embeddings to (B, sequence_length, D) tokens (prefix included)."""
