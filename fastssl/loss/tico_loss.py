"""TiCo loss: transformation invariance and covariance contrast (Zhu et al. 2022).

The math is the pure function :func:`tico_loss`; :class:`TiCoLoss` only keeps the running
covariance matrix ``C`` between steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.loss._pairs import gathered_pair


def tico_loss(
    z_a: Tensor, z_b: Tensor, covariance: Tensor | None, beta: float = 0.9, rho: float = 8.0
) -> tuple[Tensor, Tensor]:
    """TiCo loss (Zhu et al. 2022, arXiv:2206.10698, Algorithm 1).

    With ``z`` L2-normalised rows, ``B = z_a^T z_a / n`` (no gradient) and
    ``C = beta * C_prev + (1 - beta) * B``, the loss is
    ``1 - mean_i <z_a_i, z_b_i> + rho * mean_i z_a_i^T C z_a_i``.

    Args:
        z_a: Embeddings of the first views, shape (n, d) (already gathered if distributed).
        z_b: Embeddings of the second views, shape (n, d).
        covariance: The previous ``C``, shape (d, d), or None for zeros.
        beta: EMA coefficient of the covariance.
        rho: Weight of the covariance contrast term.

    Returns:
        ``(loss, C)``: the scalar loss and the new covariance matrix (detached).

    Example:
        >>> loss, c = tico_loss(torch.randn(8, 4), torch.randn(8, 4), None)
        >>> c.shape
        torch.Size([4, 4])
    """
    z_a = F.normalize(z_a, dim=1)
    z_b = F.normalize(z_b, dim=1)
    batch = (z_a.T @ z_a).detach() / z_a.shape[0]
    previous = torch.zeros_like(batch) if covariance is None else covariance.to(batch)
    new_covariance = beta * previous + (1 - beta) * batch
    invariance = 1.0 - (z_a * z_b).sum(dim=1).mean()
    contrast = rho * ((z_a @ new_covariance) * z_a).sum(dim=1).mean()
    return invariance + contrast, new_covariance.detach()


class TiCoLoss(nn.Module):
    """TiCo loss (Zhu et al. 2022, arXiv:2206.10698).

    Maximises the agreement of two views while pushing embeddings away from the directions
    of a running covariance matrix ``C`` (an exponential moving average over batches).
    Shapes: ``z_a`` and ``z_b`` of shape (batch_size, num_features); returns a scalar.

    Attributes:
        beta: EMA coefficient of ``C``.
        rho: Weight of the covariance contrast term.
        C: The running covariance matrix (num_features, num_features), None before the
            first step. Not part of the state dict (as in LightlySSL 1.6).
        gather_distributed: Compute the loss on the batches of all processes (gathered with
            gradient); every process then holds the same ``C``.

    Example:
        >>> loss_fn = TiCoLoss()
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
    """

    def __init__(self, beta: float = 0.9, rho: float = 8.0, gather_distributed: bool = False):
        """Builds the loss.

        Args:
            beta: EMA coefficient of the covariance, in [0, 1].
            rho: Weight of the covariance contrast term.
            gather_distributed: Gather the batches of all processes before the loss.

        Raises:
            ValueError: If ``beta`` is outside [0, 1].
        """
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1] (an EMA coefficient), got beta={beta}.")
        self.beta = beta
        self.rho = rho
        self.gather_distributed = gather_distributed
        self.C: Tensor | None = None

    def forward(self, z_a: Tensor, z_b: Tensor, update_covariance_matrix: bool = True) -> Tensor:
        """Computes the loss and, by default, updates ``C``.

        Args:
            z_a: Embeddings of the first views, shape (batch_size, num_features).
            z_b: Embeddings of the second views, same shape.
            update_covariance_matrix: Store the new ``C`` for the next step.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes differ or the (global) batch has fewer than 2 rows.
        """
        z_a, z_b = gathered_pair(
            "TiCoLoss", z_a, z_b, self.gather_distributed, dim_name="num_features"
        )
        loss, covariance = tico_loss(z_a, z_b, self.C, self.beta, self.rho)
        if update_covariance_matrix:
            self.C = covariance
        return loss
