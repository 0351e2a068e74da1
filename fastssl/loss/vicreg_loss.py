"""VICReg loss: variance, invariance and covariance regularisation (Bardes et al. 2022).

Each term is a pure function with LightlySSL 1.6's signature. The covariance term zeroes the
diagonal instead of selecting the off-diagonal entries with a boolean mask, so the loss keeps
static shapes and ``torch.compile(fullgraph=True)`` traces it in one graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.utils import dist


def invariance_loss(x: Tensor, y: Tensor) -> Tensor:
    """VICReg invariance term: mean squared error between the two views.

    Args:
        x: Shape (batch_size, ..., dim).
        y: Same shape as ``x``.

    Returns:
        Scalar ``mean((x - y)^2)``.

    Example:
        >>> invariance_loss(torch.zeros(2, 3), torch.ones(2, 3)).item()
        1.0
    """
    return F.mse_loss(x, y)


def variance_loss(x: Tensor, eps: float = 0.0001) -> Tensor:
    """VICReg variance term: hinge on the standard deviation of every feature.

    ``mean_j relu(1 - sqrt(Var_batch(x_j) + eps))`` with the unbiased variance over dim 0.

    Args:
        x: Shape (batch_size, ..., dim), batch_size >= 2.
        eps: Added to the variance for numerical stability.

    Returns:
        Scalar loss.

    Example:
        >>> variance_loss(torch.zeros(4, 3), eps=0.0).item()
        1.0
    """
    std = torch.sqrt(x.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(x: Tensor) -> Tensor:
    """VICReg covariance term: squared off-diagonal covariances divided by ``dim``.

    For inputs with more than two dimensions (e.g. VICRegL's local features) one covariance
    matrix is computed per middle index and the losses are averaged.

    Args:
        x: Shape (batch_size, ..., dim), batch_size >= 2.

    Returns:
        Scalar loss.

    Example:
        >>> covariance_loss(torch.randn(8, 4)).shape
        torch.Size([])
    """
    batch_size, dim = x.shape[0], x.shape[-1]
    centered = x - x.mean(dim=0)
    cov = torch.einsum("b...c,b...d->...cd", centered, centered) / (batch_size - 1)
    eye = torch.eye(dim, dtype=torch.bool, device=x.device)
    off_diagonal = cov.masked_fill(eye, 0.0)
    return (off_diagonal.pow(2).sum(dim=(-2, -1)) / dim).mean()


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    lambda_param: float = 25.0,
    mu_param: float = 25.0,
    nu_param: float = 1.0,
    eps: float = 0.0001,
    gather_distributed: bool = False,
) -> Tensor:
    """VICReg loss (Bardes et al. 2022, arXiv:2105.04906, Eq. 6).

    The invariance term uses this process's pairs; variance and covariance use the batches of
    all processes when ``gather_distributed`` (gathered with gradient), so the mean of the loss
    over processes equals the full-batch loss.

    Args:
        z_a: Shape (batch_size, ..., dim).
        z_b: Same shape as ``z_a``.
        lambda_param: Weight of the invariance term.
        mu_param: Weight of the variance term.
        nu_param: Weight of the covariance term.
        eps: Added to the variances.
        gather_distributed: Compute variance and covariance over the global batch.

    Returns:
        Scalar loss.

    Example:
        >>> vicreg_loss(torch.randn(8, 4), torch.randn(8, 4)).shape
        torch.Size([])
    """
    invariance = invariance_loss(z_a, z_b)
    if gather_distributed:
        z_a, z_b = dist.gather_cat(z_a), dist.gather_cat(z_b)
    variance = 0.5 * (variance_loss(z_a, eps) + variance_loss(z_b, eps))
    covariance = covariance_loss(z_a) + covariance_loss(z_b)
    return lambda_param * invariance + mu_param * variance + nu_param * covariance


class VICRegLoss(nn.Module):
    """VICReg loss (Bardes et al. 2022, arXiv:2105.04906).

    Shapes: ``z_a`` and ``z_b`` of shape (batch_size, ..., dim); returns a scalar.

    Attributes:
        lambda_param: Weight of the invariance term.
        mu_param: Weight of the variance term.
        nu_param: Weight of the covariance term.
        gather_distributed: Compute variance and covariance over the batches of all processes.
        eps: Added to the variances for numerical stability.

    Example:
        >>> loss_fn = VICRegLoss()
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = False,
        eps: float = 0.0001,
    ) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of the invariance term.
            mu_param: Weight of the variance term.
            nu_param: Weight of the covariance term.
            gather_distributed: Compute variance and covariance over the global batch.
            eps: Added to the variances; must be >= 0.

        Raises:
            ValueError: If ``eps < 0``.
        """
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (it is added to a variance), got eps={eps}.")
        self.lambda_param = lambda_param
        self.mu_param = mu_param
        self.nu_param = nu_param
        self.gather_distributed = gather_distributed
        self.eps = eps

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            z_a: Shape (batch_size, ..., dim).
            z_b: Same shape as ``z_a``.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes differ or the batch size is below 2.
        """
        if z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must have the same shape, got {tuple(z_a.shape)} and "
                f"{tuple(z_b.shape)}."
            )
        if z_a.shape[0] < 2:
            raise ValueError(
                f"VICRegLoss needs a batch size of at least 2 (variances), got {z_a.shape[0]}."
            )
        return vicreg_loss(
            z_a,
            z_b,
            self.lambda_param,
            self.mu_param,
            self.nu_param,
            self.eps,
            self.gather_distributed,
        )
