"""Batch shuffling for MoCo's shuffled BatchNorm, in one process or across processes.

Public path: :mod:`fastssl.models.utils`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastssl.utils import dist


def _inverse_permutation(perm: Tensor) -> Tensor:
    """Returns ``inv`` with ``inv[perm[i]] = i`` (an O(n) scatter instead of an argsort)."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    return inverse


@torch.no_grad()
def batch_shuffle(
    batch: Tensor, distributed: bool = False, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffles ``batch`` along dim 0 (MoCo's shuffled BatchNorm, He et al. 2020).

    Args:
        batch: Tensor of shape (B, ...).
        distributed: If True, shuffle across all processes with
            :func:`batch_shuffle_distributed`.
        generator: Optional random generator on ``batch``'s device. Without one the
            global generator is used, which reproduces LightlySSL under the same seed.

    Returns:
        ``(shuffled, shuffle)``: the shuffled batch of shape (B, ...) and the permutation
        of shape (B,) that :func:`batch_unshuffle` needs to restore the order.

    Example:
        >>> x = torch.arange(4)
        >>> shuffled, shuffle = batch_shuffle(x)
        >>> torch.equal(batch_unshuffle(shuffled, shuffle), x)
        True
    """
    if distributed:
        return batch_shuffle_distributed(batch, generator=generator)
    shuffle = torch.randperm(batch.shape[0], device=batch.device, generator=generator)
    return batch[shuffle], shuffle


@torch.no_grad()
def batch_unshuffle(batch: Tensor, shuffle: Tensor, distributed: bool = False) -> Tensor:
    """Restores the order of a batch shuffled by :func:`batch_shuffle`.

    Args:
        batch: Shuffled tensor of shape (B, ...), e.g. the momentum encoder's output.
        shuffle: The permutation returned by :func:`batch_shuffle`.
        distributed: Must match the ``distributed`` flag given to :func:`batch_shuffle`.

    Returns:
        Tensor of shape (B, ...) in the original order.
    """
    if distributed:
        return batch_unshuffle_distributed(batch, shuffle)
    return batch[_inverse_permutation(shuffle)]


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenates ``x`` from all processes along dim 0, without gradient.

    Args:
        x: Tensor of shape (B, ...), the same shape on every process.

    Returns:
        Tensor of shape (B * world_size, ...) ordered by rank; ``x`` when not distributed
        (LightlySSL 1.6 fails there).
    """
    return dist.gather_cat(x)


@torch.no_grad()
def batch_shuffle_distributed(
    batch: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffles the global batch across processes (MoCo, He et al. 2020).

    The global batch (every process's batch, in rank order) is permuted and each process
    keeps its slice of the permuted batch. All processes must use the same permutation.
    MoCo draws it on rank 0 and broadcasts it; here every process draws one random key per
    local sample, the keys are gathered (so every process holds the same vector of
    ``B * world_size`` keys), and the permutation is the stable argsort of that vector. This
    needs no broadcast and no host synchronisation, and sorting i.i.d. keys gives a uniformly
    random permutation (stability only breaks ties, deterministically on every process).

    Args:
        batch: Tensor of shape (B, ...), the same shape on every process.
        generator: Optional random generator for the keys (its own device is used).

    Returns:
        ``(shuffled, shuffle)``: this process's slice of shape (B, ...) of the permuted
        global batch, and the global inverse permutation of shape (B * world_size,) that
        :func:`batch_unshuffle_distributed` needs.
    """
    device = generator.device if generator is not None else batch.device
    keys = torch.rand(batch.shape[0], device=device, generator=generator).to(batch.device)
    all_keys = dist.gather_cat(keys)
    all_batch = dist.gather_cat(batch)
    perm = torch.argsort(all_keys, stable=True)
    local = perm.view(dist.world_size(), -1)[dist.rank()]
    return all_batch[local], _inverse_permutation(perm)


@torch.no_grad()
def batch_unshuffle_distributed(batch: Tensor, shuffle: Tensor) -> Tensor:
    """Undoes :func:`batch_shuffle_distributed`.

    Args:
        batch: Tensor of shape (B, ...), this process's slice of the shuffled batch.
        shuffle: The inverse permutation of shape (B * world_size,) returned by
            :func:`batch_shuffle_distributed`.

    Returns:
        Tensor of shape (B, ...): this process's original samples, in their original order.
    """
    all_batch = dist.gather_cat(batch)
    local = shuffle.view(dist.world_size(), -1)[dist.rank()]
    return all_batch[local]
