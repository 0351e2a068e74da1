"""MMCR loss: maximum manifold capacity representations (Yerxa et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mmcr_loss(online: Tensor, momentum: Tensor, lmda: float = 5e-3) -> Tensor:
    """MMCR loss (Yerxa et al. 2023, arXiv:2303.03307, Eq. 4 with the local term).

    With ``z_i`` (2k, D) the online and momentum embeddings of the ``k`` views of image
    ``i`` and ``c`` (B, D) the matrix of their centroids, the loss is
    ``-||c||_* + lmda * mean_i ||z_i||_*`` (``||.||_*``: nuclear norm, the sum of the
    singular values): a large centroid nuclear norm spreads the images' manifolds over many
    dimensions, a small per-image one keeps each manifold compact.

    Args:
        online: Online network outputs, shape (B, k, D).
        momentum: Momentum network outputs, same shape.
        lmda: Weight of the per-image nuclear norms.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or are not 3-D.

    Example:
        >>> mmcr_loss(torch.randn(4, 2, 8), torch.randn(4, 2, 8)).shape
        torch.Size([])
    """
    if online.ndim != 3 or online.shape != momentum.shape:
        raise ValueError(
            "online and momentum must both have shape (batch_size, k, embedding_size), got "
            f"{tuple(online.shape)} and {tuple(momentum.shape)}."
        )
    z = torch.cat([online, momentum], dim=1)  # (B, 2k, D)
    centroids = z.mean(dim=1)  # (B, D)
    # Only singular values are needed: svdvals skips the singular vectors in the forward
    # pass (its gradient U V^T is the nuclear norm's, as for torch.linalg.svd).
    centroid_norm = torch.linalg.svdvals(centroids).sum()
    view_norms = torch.linalg.svdvals(z).sum()
    return -centroid_norm + lmda * view_norms / online.shape[0]


class MMCRLoss(nn.Module):
    """MMCR loss (Yerxa et al., "Learning Efficient Coding of Natural Images with Maximum
    Manifold Capacity Representations", NeurIPS 2023, https://arxiv.org/abs/2303.03307).

    Maximises the nuclear norm of the matrix of per-image centroids (the manifold capacity)
    while keeping each image's views compact. Defaults are the paper's ImageNet values. See
    :func:`mmcr_loss`.

    Shapes: ``online`` and ``momentum`` of shape (batch_size, k, embedding_size) with ``k``
    views per image; returns a scalar.

    Attributes:
        lmda: Weight of the per-image nuclear norms, >= 0.

    Example:
        >>> loss_fn = MMCRLoss()
        >>> online = torch.randn(8, 2, 32, requires_grad=True)
        >>> loss = loss_fn(online, torch.randn(8, 2, 32))
        >>> loss.backward()
    """

    def __init__(self, lmda: float = 5e-3) -> None:
        """Builds the loss.

        Args:
            lmda: Weight of the per-image nuclear norms; must be >= 0.

        Raises:
            ValueError: If ``lmda < 0``.
        """
        super().__init__()
        if lmda < 0:
            raise ValueError(f"lmda must be greater than or equal to 0, got lmda={lmda}.")
        self.lmda = lmda

    def forward(self, online: Tensor, momentum: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            online: Online network outputs, shape (batch_size, k, embedding_size).
            momentum: Momentum network outputs, same shape.

        Returns:
            Scalar loss.
        """
        return mmcr_loss(online, momentum, self.lmda)
