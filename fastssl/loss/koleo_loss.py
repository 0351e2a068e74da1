"""KoLeo regulariser: the Kozachenko-Leonenko entropy estimator (Sablayrolles et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class KoLeoLoss(nn.Module):
    """KoLeo loss (Sablayrolles et al., "Spreading vectors for similarity search", ICLR
    2019, https://arxiv.org/abs/1806.03198), as used by DINOv2.

    The embeddings are L2-normalised; each is paired with its nearest neighbour in the
    batch (largest cosine similarity, itself excluded), and the loss is
    ``-mean_i log(||x_i - x_nn(i)||_p + eps)``: a differential-entropy estimate whose
    minimisation spreads the batch uniformly. The neighbour search carries no gradient.

    Shapes: ``x`` of shape (batch_size, embedding_size), batch_size >= 2; returns a scalar.

    Attributes:
        p: Norm degree of the distance to the neighbour.
        eps: Smallest norm in the normalisation, and added to the distances (and, as in
            :class:`torch.nn.PairwiseDistance`, to the differences).
        pairwise_distance: The :class:`torch.nn.PairwiseDistance` that measures it.

    Example:
        >>> loss_fn = KoLeoLoss()
        >>> x = torch.randn(8, 32, requires_grad=True)
        >>> loss = loss_fn(x)
        >>> loss.backward()
    """

    def __init__(self, p: float = 2, eps: float = 1e-8) -> None:
        """Builds the loss.

        Args:
            p: Norm degree of the distance to the nearest neighbour; must be > 0.
            eps: Small value that keeps the normalisation and the log finite; must be >= 0.

        Raises:
            ValueError: If ``p <= 0`` or ``eps < 0``.
        """
        super().__init__()
        if p <= 0:
            raise ValueError(f"p must be > 0, got p={p}.")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got eps={eps}.")
        self.p = p
        self.eps = eps
        self.pairwise_distance = nn.PairwiseDistance(p=p, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            x: Embeddings of shape (batch_size, embedding_size).

        Returns:
            Scalar loss.

        Raises:
            ValueError: If ``x`` is not 2-D or has fewer than 2 rows.
        """
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(
                "x must have shape (batch_size, embedding_size) with batch_size >= 2 (each "
                f"row needs a neighbour), got {tuple(x.shape)}."
            )
        x = F.normalize(x, p=2, dim=-1, eps=self.eps)
        with torch.no_grad():
            similarity = x @ x.T
            # Cosine similarities are >= -1, so -2 rules out each row's match with itself.
            similarity.fill_diagonal_(-2)
            neighbour = similarity.argmax(dim=1)
        distance: Tensor = self.pairwise_distance(x, x[neighbour])
        return -(distance + self.eps).log().mean()
