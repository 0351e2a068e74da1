"""Negative cosine similarity, the loss of SimSiam (Chen & He 2021, arXiv:2011.10566)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


def negative_cosine_similarity(x0: Tensor, x1: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Mean of ``-cos(x0, x1)`` along ``dim`` (``torch.nn.functional.cosine_similarity``).

    Args:
        x0: Any shape broadcastable with ``x1``, e.g. (batch_size, dim).
        x1: Same shape as ``x0``.
        dim: Dimension the cosine similarity is taken over.
        eps: Lower bound of the norms, avoids division by zero.

    Returns:
        Scalar in [-1, 1].

    Example:
        >>> import torch
        >>> x = torch.randn(4, 8)
        >>> round(negative_cosine_similarity(x, 2 * x).item(), 4)
        -1.0
    """
    return -F.cosine_similarity(x0, x1, dim=dim, eps=eps).mean()


class NegativeCosineSimilarity(nn.Module):
    """Negative cosine similarity of SimSiam (Chen & He 2021, arXiv:2011.10566).

    SimSiam applies it between the predictor output of one view and the (stop-gradient)
    projection of the other. Shapes: ``x0`` and ``x1`` of shape (batch_size, dim), or any
    pair of shapes that broadcast; returns a scalar.

    Attributes:
        dim: Dimension the cosine similarity is taken over.
        eps: Lower bound of the norms.

    Example:
        >>> import torch
        >>> loss_fn = NegativeCosineSimilarity()
        >>> loss = loss_fn(torch.randn(10, 128), torch.randn(10, 128))
    """

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        """Builds the loss (same arguments as ``torch.nn.CosineSimilarity``).

        Args:
            dim: Dimension the cosine similarity is taken over.
            eps: Lower bound of the norms; must be >= 0.

        Raises:
            ValueError: If ``eps < 0``.
        """
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got eps={eps}.")
        self.dim = dim
        self.eps = eps

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Returns the mean negative cosine similarity of ``x0`` and ``x1``.

        Args:
            x0: First tensor, e.g. (batch_size, dim).
            x1: Second tensor of the same shape.

        Returns:
            Scalar loss.
        """
        return negative_cosine_similarity(x0, x1, self.dim, self.eps)


__all__ = ["NegativeCosineSimilarity", "negative_cosine_similarity"]
