"""Dense features: pooling over mask regions (DetCon) and matching local features to their
nearest or most similar counterparts (VICRegL, DenseCL).

Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastssl.models._utils.tokens import get_at_index

_REDUCTIONS = ("sum", "mean", "prod", "amax", "amin")


def pool_masked(source: Tensor, mask: Tensor, num_cls: int, reduce: str = "mean") -> Tensor:
    """Pools feature maps over the regions given by an integer mask (DetCon, Hénaff 2021).

    ``out[..., c, k]`` reduces ``source[..., c, i, j]`` over the pixels with
    ``mask[..., i, j] == k``; a class with no pixel gives 0. LightlySSL 1.6 ignores
    ``reduce`` for batched inputs and fails on unbatched ones; both work here.

    Args:
        source: Float tensor of shape (B, C, H, W) or (C, H, W).
        mask: Integer tensor of shape (B, H, W) or (H, W) with values in [0, num_cls).
        num_cls: Number of classes.
        reduce: One of "sum", "mean", "prod", "amax", "amin".

    Returns:
        Tensor of shape (B, C, num_cls) or (C, num_cls).

    Raises:
        ValueError: If ``source`` is not 3- or 4-dimensional or ``reduce`` is unknown.

    Example:
        >>> pool_masked(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 2).tolist()
        [[[1.0, 0.0], [1.0, 0.0]]]
    """
    if reduce not in _REDUCTIONS:
        raise ValueError(f"pool_masked: 'reduce' must be one of {_REDUCTIONS}, got {reduce!r}.")
    if source.dim() == 3:
        return pool_masked(source.unsqueeze(0), mask.unsqueeze(0), num_cls, reduce).squeeze(0)
    if source.dim() != 4:
        raise ValueError(
            f"pool_masked: 'source' must have shape (B, C, H, W) or (C, H, W), "
            f"got {tuple(source.shape)}."
        )
    b, c = source.shape[:2]
    flat = source.flatten(2)  # (B, C, HW)
    index = mask.reshape(b, 1, -1).long()  # (B, 1, HW), broadcast over channels below
    if reduce in ("sum", "mean"):
        out = flat.new_zeros(b, c, num_cls).scatter_add(2, index.expand(-1, c, -1), flat)
        if reduce == "mean":
            # Counts per class do not depend on the channel: count once, divide all.
            ones = flat.new_ones(b, 1, index.shape[-1])
            counts = flat.new_zeros(b, 1, num_cls).scatter_add(2, index, ones)
            out = out / counts.clamp_min(1)
        return out
    # include_self=False leaves empty classes at their initial 0.
    return flat.new_zeros(b, c, num_cls).scatter_reduce(
        2, index.expand(-1, c, -1), flat, reduce=reduce, include_self=False
    )


def nearest_neighbors(
    input_maps: Tensor,
    candidate_maps: Tensor,
    distances: Tensor,
    num_matches: int | None,
) -> tuple[Tensor, Tensor]:
    """Matches local features to their nearest candidates and keeps the best matches.

    The local-matching step of VICRegL (Bardes et al. 2022): each input feature is paired
    with its nearest candidate; the ``num_matches`` pairs with the smallest distance are
    kept.

    Args:
        input_maps: Tensor of shape (B, N, D).
        candidate_maps: Tensor of shape (B, M, D).
        distances: Tensor of shape (B, N, M), distance from input i to candidate j.
        num_matches: Pairs to keep per sample; None, -1 or more than N keep all N.

    Returns:
        ``(inputs, candidates)``, both of shape (B, num_matches, D): matched pairs ordered
        by increasing distance.
    """
    num_inputs = input_maps.shape[1]
    if num_matches is None or num_matches == -1 or num_matches > num_inputs:
        num_matches = num_inputs
    nearest_dist, nearest_idx = distances.min(dim=2)  # (B, N) each
    best = nearest_dist.topk(num_matches, dim=1, largest=False).indices  # (B, num_matches)
    inputs = get_at_index(input_maps, best)
    candidates = get_at_index(candidate_maps, torch.gather(nearest_idx, 1, best))
    return inputs, candidates


def most_similar_index(x: Tensor, y: Tensor) -> Tensor:
    """Index of the most cosine-similar feature of ``y`` for every feature of ``x`` (DenseCL).

    Args:
        x: Tensor of shape (B, N, C).
        y: Tensor of shape (B, M, C).

    Returns:
        Long tensor of shape (B, N) such that ``y[b, out[b, i]]`` is the feature of
        ``y[b]`` most similar to ``x[b, i]``.
    """
    x = nn.functional.normalize(x, dim=-1)
    y = nn.functional.normalize(y, dim=-1)
    return torch.bmm(x, y.transpose(1, 2)).argmax(dim=2)


def select_most_similar(x: Tensor, y: Tensor, y_values: Tensor) -> Tensor:
    """For every feature of ``x``, the row of ``y_values`` at its most similar ``y`` (DenseCL).

    Args:
        x: Tensor of shape (B, N, C).
        y: Tensor of shape (B, M, C).
        y_values: Tensor of shape (B, M, D).

    Returns:
        Tensor of shape (B, N, D).
    """
    return get_at_index(y_values, most_similar_index(x, y))


def _mask_reduce(source: Tensor, mask: Tensor, num_cls: int, reduce: str = "mean") -> Tensor:
    """:func:`pool_masked` of one feature map: (C, H, W) and (H, W) -> (C, num_cls).

    LightlySSL's private helper of the same name, kept for code that imports it.
    """
    if source.dim() != 3:
        raise ValueError(
            f"_mask_reduce: 'source' must have shape (C, H, W), got {tuple(source.shape)}."
        )
    return pool_masked(source, mask, num_cls, reduce)


def _mask_reduce_batched(
    source: Tensor, mask: Tensor, num_cls: int, reduce: str = "mean"
) -> Tensor:
    """:func:`pool_masked` of a batch: (B, C, H, W) and (B, H, W) -> (B, C, num_cls).

    LightlySSL's private helper of the same name, kept for code that imports it.
    """
    if source.dim() != 4:
        raise ValueError(
            "_mask_reduce_batched: 'source' must have shape (B, C, H, W), "
            f"got {tuple(source.shape)}."
        )
    return pool_masked(source, mask, num_cls, reduce)
