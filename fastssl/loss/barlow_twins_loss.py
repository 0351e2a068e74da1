"""Barlow Twins loss (Zbontar et al. 2021, arXiv:2103.03230).

Correct where LightlySSL 1.6 is not: lightly standardises each process's batch with that
process's own mean and standard deviation and then averages the per-process
cross-correlation matrices (its issues #1920 and #1977), which is not the full-batch loss.
Here, with ``gather_distributed=True``, the embeddings of all processes are gathered with
gradient, standardised with the *global* batch statistics, and the cross-correlation is taken
over the global batch: training on W processes computes the same loss and, after DDP's
gradient averaging, the same gradients as one process on the whole batch. In one process the
value equals lightly's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastssl.loss._pairs import gathered_pair

# F.batch_norm's default, used by LightlySSL and the authors' code.
_BN_EPS = 1e-5


def standardize(z: Tensor, eps: float = _BN_EPS) -> Tensor:
    """Standardises every feature over the batch: ``(z - mean) / sqrt(var + eps)``.

    Uses the biased variance, as ``BatchNorm1d(affine=False)`` in training mode does.

    Args:
        z: Shape (n, d).
        eps: Added to the variance.

    Returns:
        Tensor of shape (n, d).

    Example:
        >>> standardize(torch.tensor([[1.0], [3.0]])).flatten().round(decimals=3).tolist()
        [-1.0, 1.0]
    """
    centered = z - z.mean(dim=0)
    return centered * torch.rsqrt(centered.pow(2).mean(dim=0) + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Cross-correlation matrix of two batches of embeddings.

    Args:
        z_a: Shape (n, d).
        z_b: Shape (n, d).

    Returns:
        ``standardize(z_a).T @ standardize(z_b) / n``, shape (d, d).
    """
    return standardize(z_a).T @ standardize(z_b) / z_a.shape[0]


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambda_param: float = 5e-3) -> Tensor:
    """Barlow Twins loss of two batches (Zbontar et al. 2021, Algorithm 1).

    ``sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2`` with ``c`` the cross-correlation.

    Args:
        z_a: Embeddings of the first views, shape (n, d), n >= 2.
        z_b: Embeddings of the second views, shape (n, d).
        lambda_param: Weight of the redundancy reduction term.

    Returns:
        Scalar loss.

    Example:
        >>> barlow_twins_loss(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """
    c = cross_correlation(z_a, z_b)
    diagonal = torch.diagonal(c)
    invariance = (diagonal - 1).pow(2).sum()
    # Off-diagonal sum of squares without boolean indexing: zero the diagonal instead.
    eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    redundancy = c.masked_fill(eye, 0.0).pow(2).sum()
    return invariance + lambda_param * redundancy


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss (Zbontar et al. 2021, arXiv:2103.03230).

    Shapes: ``z_a`` and ``z_b`` of shape (batch_size, dim); returns a scalar.

    Attributes:
        lambda_param: Weight of the redundancy reduction (off-diagonal) term.
        gather_distributed: Standardise and correlate over the batches of all processes,
            gathered with gradient (full-batch equivalent; see the module docstring).

    Example:
        >>> loss_fn = BarlowTwinsLoss()
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
    """

    def __init__(self, lambda_param: float = 5e-3, gather_distributed: bool = False) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of the redundancy reduction term, >= 0.
            gather_distributed: Compute the loss over the global batch.

        Raises:
            ValueError: If ``lambda_param < 0``.
        """
        super().__init__()
        if lambda_param < 0:
            raise ValueError(f"lambda_param must be >= 0, got lambda_param={lambda_param}.")
        self.lambda_param = lambda_param
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            z_a: Projections of the first views, shape (batch_size, dim).
            z_b: Projections of the second views, same shape.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes differ or the (global) batch has fewer than 2 rows.
        """
        z_a, z_b = gathered_pair(
            "BarlowTwinsLoss", z_a, z_b, self.gather_distributed, needs=" to standardise"
        )
        return barlow_twins_loss(z_a, z_b, self.lambda_param)
