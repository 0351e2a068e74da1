"""Positional embeddings of vision transformers (fixed 2D sine-cosine, learnable) and the
per-patch normalisation of MAE's pixel targets.

Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


def get_1d_sine_cosine_positional_embedding_from_positions(
    embed_dim: int, pos: np.ndarray
) -> np.ndarray:
    """Sine-cosine embedding of scalar positions (Vaswani et al. 2017, as in MAE).

    Args:
        embed_dim: Output dimension D, even.
        pos: Array of positions of any shape, flattened to (P,).

    Returns:
        Float32 array of shape (P, D): ``[sin(pos * w_0..w_{D/2-1}), cos(...)]`` with
        ``w_i = 10000 ** (-i / (D / 2))``.

    Raises:
        ValueError: If ``embed_dim`` is odd.
    """
    if embed_dim % 2:
        raise ValueError(f"'embed_dim' must be even for a sine-cosine embedding, got {embed_dim}.")
    half = embed_dim // 2
    inv_freq = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), inv_freq)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def get_2d_sine_cosine_positional_embedding_from_grid(
    embed_dim: int, grid: np.ndarray
) -> np.ndarray:
    """2D sine-cosine embedding of a grid of (x, y) coordinates (MAE, He et al. 2021).

    Args:
        embed_dim: Output dimension D, a multiple of 4.
        grid: Array of shape (2, ..., G, G): ``grid[0]`` holds the coordinate encoded in
            the first D/2 dimensions (MAE's column index), ``grid[1]`` the other one.

    Returns:
        Float32 array of shape (G * G, D).

    Raises:
        ValueError: If ``embed_dim`` is not a multiple of 4.
    """
    if embed_dim % 4:
        raise ValueError(
            f"'embed_dim' must be a multiple of 4 for a 2D sine-cosine embedding, got {embed_dim}."
        )
    first = get_1d_sine_cosine_positional_embedding_from_positions(embed_dim // 2, grid[0])
    second = get_1d_sine_cosine_positional_embedding_from_positions(embed_dim // 2, grid[1])
    return np.concatenate([first, second], axis=1)


def get_2d_sine_cosine_positional_embedding(
    embed_dim: int,
    grid_size: int,
    cls_token: bool = True,
    num_prefix_tokens: int | None = None,
) -> np.ndarray:
    """Fixed 2D sine-cosine positional embedding of a square patch grid (MAE).

    Patch ``k = row * grid_size + col`` gets the 1D embedding of ``col`` in its first
    ``embed_dim / 2`` dimensions and that of ``row`` in the others; prefix tokens get zeros.

    Args:
        embed_dim: Embedding dimension, a multiple of 4.
        grid_size: Patches per side.
        cls_token: Prepend one zero row for a class token (ignored if
            ``num_prefix_tokens`` is set).
        num_prefix_tokens: Number of zero rows to prepend (class and register tokens).

    Returns:
        Float32 array of shape (num_prefix + grid_size**2, embed_dim). (LightlySSL returns
        float64 when there are prefix tokens; the values agree.)

    Example:
        >>> get_2d_sine_cosine_positional_embedding(8, grid_size=2).shape
        (5, 8)
    """
    num_prefix = int(cls_token) if num_prefix_tokens is None else num_prefix_tokens
    coords = np.arange(grid_size, dtype=np.float64)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    grid = np.stack([cols, rows])  # MAE encodes the column index first.
    embedding = get_2d_sine_cosine_positional_embedding_from_grid(embed_dim, grid)
    prefix = np.zeros((num_prefix, embed_dim), dtype=np.float32)
    return np.concatenate([prefix, embedding], axis=0)


# I-JEPA's name for the same embedding (LightlySSL keeps both).
get_2d_sincos_pos_embed = get_2d_sine_cosine_positional_embedding


def initialize_2d_sine_cosine_positional_embedding(
    pos_embedding: nn.Parameter,
    has_class_token: bool = True,
    num_prefix_tokens: int | None = None,
) -> None:
    """Fills ``pos_embedding`` with the fixed 2D sine-cosine embedding and freezes it.

    Args:
        pos_embedding: Parameter of shape (1, num_prefix + G * G, D).
        has_class_token: One prefix token (ignored if ``num_prefix_tokens`` is set).
        num_prefix_tokens: Number of prefix tokens.

    Raises:
        ValueError: If the number of patch positions is not a perfect square.
    """
    num_prefix = int(has_class_token) if num_prefix_tokens is None else num_prefix_tokens
    _, seq_length, embed_dim = pos_embedding.shape
    grid_size = math.isqrt(max(seq_length - num_prefix, 0))
    if grid_size * grid_size != seq_length - num_prefix:
        raise ValueError(
            f"initialize_2d_sine_cosine_positional_embedding: sequence length {seq_length} "
            f"minus {num_prefix} prefix tokens is not a square number of patches."
        )
    table = get_2d_sine_cosine_positional_embedding(
        embed_dim, grid_size, num_prefix_tokens=num_prefix
    )
    with torch.no_grad():
        pos_embedding.copy_(torch.from_numpy(table).unsqueeze(0))
    pos_embedding.requires_grad = False


def initialize_learnable_positional_embedding(
    pos_embedding: nn.Parameter, generator: torch.Generator | None = None
) -> None:
    """Initialises a learnable positional embedding like timm's ViT (truncated normal, std 0.02).

    Args:
        pos_embedding: Parameter to initialise in place; it is made trainable.
        generator: Optional random generator.
    """
    nn.init.trunc_normal_(pos_embedding, std=0.02, generator=generator)
    pos_embedding.requires_grad = True


_POS_EMBED_STRATEGIES = ("learn", "sincos", "skip")


def initialize_positional_embedding(
    pos_embedding: nn.Parameter,
    strategy: str,
    num_prefix_tokens: int,
) -> None:
    """Initialises a positional embedding by strategy.

    Args:
        pos_embedding: Parameter of shape (1, num_prefix_tokens + G * G, D).
        strategy: "learn" (trainable, truncated normal), "sincos" (fixed 2D sine-cosine)
            or "skip" (left as is).
        num_prefix_tokens: Number of prefix tokens (class and register tokens).

    Raises:
        ValueError: If ``strategy`` is unknown.
    """
    if strategy not in _POS_EMBED_STRATEGIES:
        raise ValueError(
            f"Invalid positional embedding strategy: {strategy!r}; "
            f"'strategy' must be one of {list(_POS_EMBED_STRATEGIES)}."
        )
    if strategy == "learn":
        initialize_learnable_positional_embedding(pos_embedding)
    elif strategy == "sincos":
        initialize_2d_sine_cosine_positional_embedding(
            pos_embedding, num_prefix_tokens=num_prefix_tokens
        )


def normalize_mean_var(x: Tensor, dim: int = -1, eps: float = 1.0e-6) -> Tensor:
    """Standardises ``x`` to zero mean and unit variance along ``dim`` (MAE's pixel targets).

    Uses the unbiased variance, as LightlySSL does.

    Args:
        x: Tensor of any shape.
        dim: Dimension to normalise over.
        eps: Added to the variance before the square root.

    Returns:
        Tensor of the shape of ``x``: ``(x - mean) / sqrt(var + eps)``.
    """
    var, mean = torch.var_mean(x, dim=dim, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)
