"""Token sequences of vision transformers: select, replace and mask tokens by index,
prepend a class token, and cut images into patches and back (MAE, SimMIM, MSN, AIM).

Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def repeat_token(token: Tensor, size: tuple[int, int]) -> Tensor:
    """Repeats a token over a batch of sequences.

    Returns a broadcast view of ``token`` (no copy); gradients sum back into ``token``.
    Write into the result only after a ``.clone()``.

    Args:
        token: Tensor of shape (1, 1, dim).
        size: ``(batch_size, sequence_length)``.

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).

    Example:
        >>> repeat_token(torch.zeros(1, 1, 8), (2, 3)).shape
        torch.Size([2, 3, 8])
    """
    batch_size, sequence_length = size
    return token.expand(batch_size, sequence_length, -1)


def expand_index_like(index: Tensor, tokens: Tensor) -> Tensor:
    """Broadcasts a token index along the feature dimension of ``tokens``.

    Args:
        index: Tensor of shape (batch_size, index_length) with entries in
            [0, sequence_length).
        tokens: Tensor of shape (batch_size, sequence_length, dim).

    Returns:
        Index of shape (batch_size, index_length, dim) (a view), ready for gather/scatter.
    """
    return index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])


def get_at_index(tokens: Tensor, index: Tensor) -> Tensor:
    """Selects tokens by index.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).

    Returns:
        Tensor of shape (batch_size, index_length, dim) with
        ``out[b, i] = tokens[b, index[b, i]]``.

    Example:
        >>> tokens = torch.arange(6.0).view(1, 3, 2)
        >>> get_at_index(tokens, torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    return torch.gather(tokens, 1, expand_index_like(index, tokens))


def set_at_index(tokens: Tensor, index: Tensor, value: Tensor | float) -> Tensor:
    """Returns a copy of ``tokens`` with the tokens at ``index`` replaced by ``value``.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).
        value: Tensor of shape (batch_size, index_length, dim), or a scalar.

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).
    """
    return torch.scatter(tokens, 1, expand_index_like(index, tokens), value)


def _bool_mask_at_index(tokens: Tensor, index: Tensor) -> Tensor:
    """Returns the (batch_size, sequence_length) boolean mask that is True at ``index``."""
    mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return mask.scatter_(1, index, True)


def mask_at_index(tokens: Tensor, index: Tensor, mask_token: Tensor) -> Tensor:
    """Replaces the tokens at ``index`` by ``mask_token`` (SimMIM-style masking).

    Uses ``torch.where`` on a boolean mask, so a NaN or inf in a replaced token does not
    leak into the output (LightlySSL's ``(1 - mask) * tokens`` multiplies it by 0).

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        index: Tensor of shape (batch_size, index_length).
        mask_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).
    """
    mask = _bool_mask_at_index(tokens, index).unsqueeze(-1)
    return torch.where(mask, mask_token, tokens)


def mask_bool(tokens: Tensor, mask: Tensor, mask_token: Tensor) -> Tensor:
    """Replaces ``tokens[i, j]`` by ``mask_token`` wherever ``mask[i, j]`` is True.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        mask: Tensor of shape (batch_size, sequence_length), bool or 0/1 values.
        mask_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length, dim).

    Example:
        >>> mask = torch.tensor([[True, False]])
        >>> out = mask_bool(torch.ones(1, 2, 3), mask, torch.zeros(1, 1, 3))
        >>> out[0, :, 0].tolist()
        [0.0, 1.0]
    """
    return torch.where(mask.bool().unsqueeze(-1), mask_token, tokens)


def prepend_class_token(tokens: Tensor, class_token: Tensor) -> Tensor:
    """Prepends ``class_token`` to every sequence.

    Args:
        tokens: Tensor of shape (batch_size, sequence_length, dim).
        class_token: Tensor of shape (1, 1, dim).

    Returns:
        Tensor of shape (batch_size, sequence_length + 1, dim) with the class token at 0.
    """
    return torch.cat([class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cuts images into flattened, non-overlapping patches (MAE, He et al. 2021).

    Patches are ordered row by row; each patch is flattened as (patch_row, patch_col,
    channel), the order MAE's pixel-reconstruction target uses.

    Args:
        images: Tensor of shape (B, C, H, W); H and W must be multiples of ``patch_size``
            (LightlySSL also requires H == W; here rectangles are allowed).
        patch_size: Side of a square patch, in pixels.

    Returns:
        Tensor of shape (B, (H // patch_size) * (W // patch_size), patch_size**2 * C).

    Raises:
        ValueError: If H or W is not a multiple of ``patch_size``.

    Example:
        >>> patchify(torch.zeros(2, 3, 32, 32), patch_size=8).shape
        torch.Size([2, 16, 192])
    """
    n, c, h, w = images.shape
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ValueError(
            f"patchify: image size {h}x{w} must be a multiple of 'patch_size', "
            f"got patch_size={patch_size}."
        )
    gh, gw = h // patch_size, w // patch_size
    patches = images.reshape(n, c, gh, patch_size, gw, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # (n, gh, gw, p, q, c)
    return patches.reshape(n, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """Reassembles square images from the output of :func:`patchify`.

    Args:
        patches: Tensor of shape (B, N, patch_size**2 * channels) with N a perfect square.
        patch_size: Side of a patch, in pixels.
        channels: Number of image channels.

    Returns:
        Tensor of shape (B, channels, sqrt(N) * patch_size, sqrt(N) * patch_size).

    Raises:
        ValueError: If N is not a perfect square or the last dimension is not
            ``patch_size**2 * channels``.

    Example:
        >>> x = torch.randn(2, 3, 16, 16)
        >>> torch.equal(unpatchify(patchify(x, 4), 4, channels=3), x)
        True
    """
    n, num_patches, patch_dim = patches.shape
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"unpatchify: the number of patches must be a perfect square, got {num_patches}."
        )
    if patch_dim != patch_size * patch_size * channels:
        raise ValueError(
            f"unpatchify: the patch dimension {patch_dim} does not match "
            f"patch_size={patch_size} and channels={channels} "
            f"(expected {patch_size * patch_size * channels})."
        )
    images = patches.reshape(n, side, side, patch_size, patch_size, channels)
    images = images.permute(0, 5, 1, 3, 2, 4)  # (n, c, gh, p, gw, q)
    return images.reshape(n, channels, side * patch_size, side * patch_size)


def apply_masks(x: Tensor, masks: Tensor | list[Tensor]) -> Tensor:
    """Selects tokens by index once per mask and stacks the results along the batch (I-JEPA).

    I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
    Predictive Architecture", https://arxiv.org/abs/2301.08243) encodes several context and
    target blocks per image; each mask selects one block of every image, and the blocks of
    all masks are processed as one batch. One advanced-indexing gather serves all masks.

    Args:
        x: Tensor of shape (B, N, D) (any trailing dimensions).
        masks: A tensor or a list of M tensors, each of shape (B, K) with token indices in
            [0, N); all masks have the same K.

    Returns:
        Tensor of shape (M * B, K, D): the B selections of the first mask, then those of
        the second, and so on.

    Raises:
        ValueError: If ``masks`` is an empty list.

    Example:
        >>> x = torch.arange(6.0).view(1, 3, 2)
        >>> apply_masks(x, [torch.tensor([[2]]), torch.tensor([[0]])]).tolist()
        [[[4.0, 5.0]], [[0.0, 1.0]]]
    """
    if isinstance(masks, Tensor):
        masks = [masks]
    if len(masks) == 0:
        raise ValueError("apply_masks: 'masks' must hold at least one mask, got an empty list.")
    index = torch.cat(masks)  # (M * B, K)
    rows = torch.cat([torch.arange(m.shape[0], device=x.device) for m in masks])
    return x[rows.unsqueeze(1), index]


def repeat_interleave_batch(x: Tensor, B: int, repeat: int) -> Tensor:
    """Repeats each consecutive chunk of ``B`` samples ``repeat`` times, chunk by chunk (I-JEPA).

    With ``x = [c_0, c_1, ...]`` made of chunks of ``B`` samples the result is
    ``[c_0] * repeat + [c_1] * repeat + ...``: it pairs the targets of every mask with the
    outputs of every context mask in :func:`apply_masks` order. Samples after the last full
    chunk are dropped.

    Args:
        x: Tensor of shape (N * B, ...).
        B: Batch size (samples per chunk), >= 1.
        repeat: Number of copies of each chunk.

    Returns:
        Tensor of shape (N * repeat * B, ...).

    Example:
        >>> repeat_interleave_batch(torch.tensor([1, 2, 3, 4]), B=2, repeat=2).tolist()
        [1, 2, 1, 2, 3, 4, 3, 4]
    """
    num_chunks = len(x) // B
    chunks = x[: num_chunks * B].reshape(num_chunks, 1, B, *x.shape[1:])
    return chunks.expand(-1, repeat, *chunks.shape[2:]).reshape(-1, *x.shape[1:])
