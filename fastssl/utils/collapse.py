"""Collapse statistics of a batch of embeddings: cheap enough to log during training.

Two numbers tell whether a self-supervised network is collapsing:

- :func:`~fastssl.utils.debug.std_of_l2_normalized` (SimSiam's measure, Chen & He 2021):
  the mean over dimensions of the standard deviation of the L2-normalised embeddings;
  0 when every image maps to the same direction (complete collapse), about
  ``1 / sqrt(D)`` for embeddings spread like an isotropic Gaussian.
- :func:`effective_rank` (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO; the RankMe measure of Garrido et al. 2023): the exponential of
  the Shannon entropy of the normalised singular values of the (B, D) embedding matrix;
  ``min(B, D)`` when all singular values are equal, 1 when the embeddings span a line
  (dimensional collapse shows here while the std can still look healthy).

``fastssl pretrain`` logs both on a batch of backbone features every
``trainer.log_every_n_steps`` steps (:class:`fastssl.train.callbacks.CollapseMonitor`).

Example:
    >>> import torch
    >>> float(effective_rank(torch.eye(4)))
    4.0
    >>> stats = collapse_statistics(torch.ones(8, 4))  # every embedding the same
    >>> stats["std"], round(stats["effective_rank"], 3)
    (0.0, 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastssl.utils.debug import std_of_l2_normalized


def _check_matrix(z: Tensor) -> None:
    if z.ndim != 2:
        raise ValueError(f"embeddings must have shape (B, D), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {z.dtype}")


@torch.no_grad()
def effective_rank(z: Tensor) -> Tensor:
    """Effective rank of the embedding matrix ``z`` (Roy & Vetterli 2007).

    ``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j`` over the singular values
    ``s`` of ``z`` (not centred: the rank of the identity is D, of a rank-1 matrix 1).
    Computed in float64; singular values below ``max(s) x max(B, D) x eps`` of ``z``'s
    dtype (the rounding noise of a low-rank matrix; ``torch.linalg.matrix_rank``'s
    default tolerance) count as 0.

    Args:
        z: Embeddings of shape (B, D).

    Returns:
        Scalar tensor (float32 or wider) between 1 and ``min(B, D)``; 0 for an all-zero
        (or empty) matrix, whose singular values do not normalise.

    Raises:
        ValueError: If ``z`` is not a two-dimensional floating-point tensor.
    """
    _check_matrix(z)
    dtype = torch.promote_types(z.dtype, torch.float32)
    if z.numel() == 0:
        return torch.zeros((), dtype=dtype, device=z.device)
    values = torch.linalg.svdvals(z.detach().to(torch.float64))
    noise = values.max() * max(z.shape) * torch.finfo(z.dtype).eps
    values = torch.where(values > noise, values, torch.zeros_like(values))
    total = values.sum()
    if not bool(total > 0):
        return torch.zeros((), dtype=dtype, device=z.device)
    entropy = torch.special.entr(values / total).sum()
    return torch.exp(entropy).to(dtype)


@torch.no_grad()
def collapse_statistics(z: Tensor) -> dict[str, float]:
    """``{"std": ..., "effective_rank": ...}`` of the embeddings ``z`` (B, D).

    ``std`` is :func:`~fastssl.utils.debug.std_of_l2_normalized` (computed in float32; NaN
    for a single embedding), ``effective_rank`` is :func:`effective_rank`.

    Raises:
        ValueError: If ``z`` is not a two-dimensional floating-point tensor.
    """
    _check_matrix(z)
    z = z.detach().float()
    return {
        "std": float(std_of_l2_normalized(z)),
        "effective_rank": float(effective_rank(z)),
    }


__all__ = ["collapse_statistics", "effective_rank", "std_of_l2_normalized"]
