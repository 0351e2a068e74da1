"""Alignment and uniformity loss on the unit hypersphere (Wang & Isola 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def alignment_loss(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment term: ``mean_i ||x_i - y_i||^alpha`` (Wang & Isola 2020, Eq. 4).

    Args:
        x: L2-normalised embeddings, shape (n, d).
        y: Their positives, same shape.
        alpha: Power of the distances.

    Returns:
        Scalar loss.

    Example:
        >>> alignment_loss(torch.eye(2), torch.eye(2)).item()
        0.0
    """
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity_loss(x: Tensor, t: float = 1.0) -> Tensor:
    """Uniformity term: ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` (Wang & Isola 2020, Eq. 5).

    The squared distances come from the Gram matrix instead of ``torch.pdist``: no square
    root, so identical rows have a finite gradient, and the log-mean-exp is computed as a
    log-sum-exp, which cannot underflow for large ``t``.

    Args:
        x: L2-normalised embeddings, shape (n, d) with n >= 2.
        t: Scale of the Gaussian potential.

    Returns:
        Scalar loss.

    Example:
        >>> round(uniformity_loss(torch.eye(3)).item(), 4)  # all pairs at distance sqrt(2)
        -2.0
    """
    n = x.shape[0]
    squared_norms = x.square().sum(dim=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2 * (x @ x.T)
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    pairs = squared[i, j].clamp(min=0)
    return torch.logsumexp(-t * pairs, dim=0) - math.log(pairs.numel())


class HypersphereLoss(nn.Module):
    """Alignment and uniformity loss (Wang & Isola, "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere", ICML 2020,
    https://arxiv.org/abs/2005.10242).

    Both inputs are L2-normalised; the loss is
    ``alignment(x, y) + lam * (uniformity(x) + uniformity(y)) / 2`` with
    :func:`alignment_loss` pulling positive pairs together and :func:`uniformity_loss`
    spreading each batch over the sphere.

    Note:
        The loss normalises its inputs itself; a linear or batch-norm layer (rather than a
        ReLU) right before it lets the embeddings cover the whole sphere.

    Shapes: ``z_a`` and ``z_b`` of shape (batch_size, embedding_dim), batch_size >= 2;
    returns a scalar.

    Attributes:
        t: Scale of the Gaussian potential of the uniformity term.
        lam: Weight of the uniformity term.
        alpha: Power of the distances in the alignment term.

    Example:
        >>> loss_fn = HypersphereLoss()
        >>> z_a = torch.randn(8, 32, requires_grad=True)
        >>> loss = loss_fn(z_a, torch.randn(8, 32))
        >>> loss.backward()
    """

    def __init__(self, t: float = 1.0, lam: float = 1.0, alpha: float = 2.0) -> None:
        """Builds the loss.

        Args:
            t: Scale of the Gaussian potential (inverse variance) of the uniformity term.
            lam: Weight of the uniformity term.
            alpha: Power of the distances in the alignment term (2 for squared distances).
        """
        super().__init__()
        self.t = t
        self.lam = lam
        self.alpha = alpha

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            z_a: Embeddings of the first views, shape (batch_size, embedding_dim).
            z_b: Embeddings of the second views, same shape.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes differ, are not 2-D or the batch size is below 2.
        """
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise ValueError(
                "z_a and z_b must both have shape (batch_size, embedding_dim), got "
                f"{tuple(z_a.shape)} and {tuple(z_b.shape)}."
            )
        if z_a.shape[0] < 2:
            raise ValueError(
                f"HypersphereLoss needs a batch size of at least 2 (uniformity over pairs), "
                f"got {z_a.shape[0]}."
            )
        x, y = F.normalize(z_a), F.normalize(z_b)
        uniformity = (uniformity_loss(x, self.t) + uniformity_loss(y, self.t)) / 2
        return alignment_loss(x, y, self.alpha) + self.lam * uniformity
