"""FroSSL loss: Frobenius-norm entropy regulariser plus invariance (Skean et al. 2024)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def frossl_loss(z_views: list[Tensor], invariance_weight: float = 1.0) -> Tensor:
    """FroSSL loss (Skean et al. 2024, arXiv:2310.02903, Eq. 5-6) for ``V >= 2`` views.

    Each view ``Z_v`` (N, D) is L2-normalised along the batch (every feature gets unit
    norm). With ``K_v`` its Gram matrix divided by its trace, the loss is
    ``sum_v log ||K_v||_F^2 + invariance_weight * sum_v V * D * mse(Z_v, mean_v' Z_v')``:
    the first term is minus a matrix-based Rényi entropy of order 2, which spreads the
    eigenvalues (no collapsed dimension); the second pulls the views together.

    Args:
        z_views: ``V`` embeddings of shape (N, D) each.
        invariance_weight: Weight of the invariance term.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If there are fewer than two views or their shapes differ or are not 2-D.

    Example:
        >>> frossl_loss([torch.randn(8, 4), torch.randn(8, 4)]).shape
        torch.Size([])
    """
    if len(z_views) < 2:
        raise ValueError(f"z_views must contain at least two views but found {len(z_views)}.")
    shape = z_views[0].shape
    if len(shape) != 2 or any(z.shape != shape for z in z_views):
        raise ValueError(
            "z_views must hold tensors of one shape (batch_size, dim), got "
            f"{[tuple(z.shape) for z in z_views]}."
        )
    num_views, (n, dim) = len(z_views), shape
    z = nn.functional.normalize(torch.stack(list(z_views)), dim=1)  # (V, N, D)

    # K = Z^T Z (D, D) and Z Z^T (N, N) have the same non-zero eigenvalues and so the same
    # Frobenius norm: use the smaller one.
    gram = z.mT @ z if n > dim else z @ z.mT
    # Every column has unit norm, so the trace is D whatever the input: treating it as a
    # constant gives the same gradient (LightlySSL reads it with .item()) and avoids a sync.
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(dim=-1).detach()
    normalized = gram / trace.view(-1, 1, 1)
    regularization = torch.log(normalized.square().sum(dim=(-2, -1))).sum()

    # sum_v V * D * mean((z_v - mean)^2) over the N * D entries.
    invariance = num_views * (z - z.mean(dim=0)).square().sum() / n
    return regularization + invariance_weight * invariance


class FroSSLLoss(nn.Module):
    """FroSSL loss (Skean et al., "FroSSL: Frobenius Norm Minimization for Self-Supervised
    Learning", ECCV 2024, https://arxiv.org/abs/2310.02903).

    Minimising the log of the squared Frobenius norm of each view's trace-normalised
    covariance maximises a matrix entropy of the embeddings (no dimensional collapse), while
    a mean-squared-error term makes the views agree. Any number of views ``V >= 2`` is
    supported. See :func:`frossl_loss`.

    Shapes: ``z_views`` is a list of ``V`` tensors of shape (batch_size, dim); returns a
    scalar.

    Attributes:
        invariance_weight: Weight of the invariance term.

    Example:
        >>> loss_fn = FroSSLLoss()
        >>> z0 = torch.randn(8, 32, requires_grad=True)
        >>> loss = loss_fn([z0, torch.randn(8, 32)])
        >>> loss.backward()
    """

    def __init__(self, invariance_weight: float = 1.0) -> None:
        """Builds the loss.

        Args:
            invariance_weight: Weight of the invariance term.
        """
        super().__init__()
        self.invariance_weight = invariance_weight

    def forward(self, z_views: list[Tensor]) -> Tensor:
        """Computes the loss.

        Args:
            z_views: ``V >= 2`` embeddings of shape (batch_size, dim) each.

        Returns:
            Scalar loss.
        """
        return frossl_loss(z_views, self.invariance_weight)
