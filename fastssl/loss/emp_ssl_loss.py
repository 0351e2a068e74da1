"""EMP-SSL loss: total coding rate plus invariance over many crops (Tong et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _check_views(z: Tensor) -> None:
    if z.ndim != 3:
        raise ValueError(f"z must have shape (num_views, batch_size, dim), got {tuple(z.shape)}.")


def tcr_loss(z: Tensor, eps: float) -> Tensor:
    """Total coding rate of each view, averaged over the views (EMP-SSL, Eq. 1).

    ``R(Z_v) = 1/2 * logdet(I_d + d / (b * eps) * Z_v^T Z_v)`` for each view ``Z_v`` of
    shape (b, d). As in LightlySSL 1.6 (and unlike the paper), ``eps`` is not squared.

    Args:
        z: Embeddings of shape (num_views, batch_size, dim).
        eps: Distortion of the coding rate; must be > 0.

    Returns:
        Scalar ``mean_v R(Z_v)`` (the coding rate itself, which EMP-SSL maximises).

    Raises:
        ValueError: If ``z`` is not 3-D or ``eps <= 0``.

    Example:
        >>> tcr_loss(torch.randn(4, 8, 16), eps=0.2).shape
        torch.Size([])
    """
    _check_views(z)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got eps={eps}.")
    _, batch_size, dim = z.shape
    # logdet(I_d + c Z^T Z) = logdet(I_b + c Z Z^T) (Sylvester): use the smaller Gram matrix.
    gram = z.mT @ z if dim <= batch_size else z @ z.mT
    if gram.dtype not in (torch.float32, torch.float64):
        gram = gram.float()  # no half-precision Cholesky
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    # I + c * (a Gram matrix) is symmetric positive definite: its Cholesky factor gives the
    # log-determinant as twice the sum of the logs of its diagonal.
    factor = torch.linalg.cholesky(eye + dim / (batch_size * eps) * gram)
    logdet = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)
    return 0.5 * logdet.mean()


def invariance_loss(z: Tensor) -> Tensor:
    """Negative mean cosine similarity of every view with the mean view (EMP-SSL, Eq. 2).

    Args:
        z: Embeddings of shape (num_views, batch_size, dim).

    Returns:
        Scalar ``-mean_{v, i} cos(z[v, i], mean_v' z[v', i])``.

    Raises:
        ValueError: If ``z`` is not 3-D.

    Example:
        >>> invariance_loss(torch.ones(3, 2, 4)).item()
        -1.0
    """
    _check_views(z)
    return -F.cosine_similarity(z, z.mean(dim=0, keepdim=True), dim=-1).mean()


class EMPSSLLoss(nn.Module):
    """EMP-SSL loss (Tong et al., "EMP-SSL: Towards Self-Supervised Learning in One Training
    Epoch", 2023, https://arxiv.org/abs/2304.03977).

    Many small crops (e.g. 100) of each image are embedded; the loss combines the total
    coding rate of each crop's batch of embeddings (:func:`tcr_loss`) with an invariance
    term that pulls every crop towards the mean embedding of its image
    (:func:`invariance_loss`): ``tcr_loss(z) + inv_coef * invariance_loss(z)``.

    Note:
        EMP-SSL *maximises* the coding rate (the official code minimises ``-R``), but
        LightlySSL 1.6 adds ``+R``, which rewards collapsed embeddings. This class returns
        LightlySSL's value by default, for drop-in compatibility; pass
        ``maximize_coding_rate=True`` for the paper's objective
        ``-tcr_loss(z) + inv_coef * invariance_loss(z)``.

    Shapes: ``z_views`` is a list of ``num_views`` tensors of shape (batch_size, dim);
    returns a scalar.

    Attributes:
        tcr_eps: Distortion ``eps`` of the coding rate (not squared, as in the official code).
        inv_coef: Weight of the invariance term (lambda in the paper).
        maximize_coding_rate: Subtract the coding rate instead of adding it.

    Example:
        >>> loss_fn = EMPSSLLoss(maximize_coding_rate=True)
        >>> z_views = [torch.randn(8, 32) for _ in range(4)]  # 4 crops of 8 images
        >>> loss = loss_fn(z_views)
    """

    def __init__(
        self,
        tcr_eps: float = 0.2,
        inv_coef: float = 200.0,
        *,
        maximize_coding_rate: bool = False,
    ) -> None:
        """Builds the loss.

        Args:
            tcr_eps: Distortion of the coding rate; must be > 0.
            inv_coef: Weight of the invariance term.
            maximize_coding_rate: If True, the coding rate is subtracted (the paper's
                objective); False (default) adds it, as LightlySSL 1.6 does.

        Raises:
            ValueError: If ``tcr_eps <= 0``.
        """
        super().__init__()
        if tcr_eps <= 0:
            raise ValueError(f"tcr_eps must be > 0, got tcr_eps={tcr_eps}.")
        self.tcr_eps = tcr_eps
        self.inv_coef = inv_coef
        self.maximize_coding_rate = maximize_coding_rate

    def forward(self, z_views: list[Tensor]) -> Tensor:
        """Computes the loss.

        Args:
            z_views: ``num_views`` embeddings of shape (batch_size, dim) each.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If ``z_views`` is empty or its tensors differ in shape or are not 2-D.
        """
        if len(z_views) == 0:
            raise ValueError("z_views must hold at least one view, got an empty list.")
        shape = z_views[0].shape
        if len(shape) != 2 or any(z.shape != shape for z in z_views):
            raise ValueError(
                "z_views must hold tensors of one shape (batch_size, dim), got "
                f"{[tuple(z.shape) for z in z_views]}."
            )
        z = torch.stack(list(z_views))
        rate = tcr_loss(z, eps=self.tcr_eps)
        if self.maximize_coding_rate:
            rate = -rate
        return rate + self.inv_coef * invariance_loss(z)
