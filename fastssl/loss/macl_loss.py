"""MACL: model-aware contrastive loss with an alignment-adaptive temperature (Huang et al. 2023).

The softmax denominator of each view is a log-sum-exp over all other views of the batch,
the same primitive as NT-Xent, so it runs through the blockwise kernels of
:mod:`fastssl.kernels.contrastive` (no ``(2B, 2B)`` matrix; ``FASTSSL_FUSED_LOSS=0`` or
``fused=False`` selects the plain formula).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.kernels import contrastive


def macl_loss(
    z0: Tensor,
    z1: Tensor,
    temperature: float = 0.1,
    alpha: float = 0.5,
    A_0: float = 0.0,
    eps: float = 1e-8,
    *,
    fused: bool | None = None,
) -> Tensor:
    """Model-aware contrastive loss (Huang et al. 2023, arXiv:2207.07874, Eq. 5-7).

    With ``s`` the cosine similarity and ``A`` the mean similarity of the ``B`` positive
    pairs (no gradient), the temperature is ``t = temperature * (1 + alpha * (A - A_0))``.
    For each of the ``2B`` views ``a`` with positive ``a+``,
    ``log P_a = s(a, a+) / t - log sum_{b != a} exp(s(a, b) / t)``, and the loss is the mean
    of ``-log P_a / (1 - P_a + eps)``, the reweighting factor carrying no gradient.

    Args:
        z0: Embeddings of the first views, shape (B, D).
        z1: Embeddings of the second views, shape (B, D).
        temperature: Base temperature.
        alpha: How strongly the alignment ``A`` scales the temperature.
        A_0: Alignment at which the temperature equals ``temperature``.
        eps: Added to ``1 - P_a`` before dividing.
        fused: True/False forces the blockwise kernel / the plain formula; None reads
            ``$FASTSSL_FUSED_LOSS``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or are not 2-D.

    Example:
        >>> macl_loss(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """
    if z0.ndim != 2 or z0.shape != z1.shape:
        raise ValueError(
            "z0 and z1 must both have shape (batch_size, embedding_size), got "
            f"{tuple(z0.shape)} and {tuple(z1.shape)}."
        )
    n = z0.shape[0]
    views = F.normalize(torch.cat([z0, z1]), dim=1)
    positive = (views[:n] * views[n:]).sum(dim=1)  # the same for both views of an image
    if n == 1:
        # One pair has no negatives: P = 1 and the loss is exactly 0.
        return positive.sum() * 0.0
    alignment = positive.detach().mean()
    # The temperature depends on the batch but carries no gradient: scaling the queries by
    # 1 / t keeps it a tensor (no host sync) while the kernel runs at temperature 1.
    inv_t = 1.0 / (temperature * (1 + alpha * (alignment - A_0)))
    rows = torch.arange(2 * n, device=views.device)
    own_and_positive = torch.stack([rows, (rows + n) % (2 * n)], dim=1)
    negatives = contrastive.lse_rows(views * inv_t, views, own_and_positive, 1.0, fused=fused)
    # With x = lse(negatives) - s(a, a+) / t: -log P = softplus(x) and 1 - P = sigmoid(x).
    # Both stay accurate when P is close to 1, where 1 / (1 - P) amplifies any rounding
    # error of log P (a softmax over all columns loses it to cancellation).
    x = negatives - positive.repeat(2) * inv_t
    weight = 1.0 / (torch.sigmoid(x.detach()) + eps)
    return (weight * F.softplus(x)).mean()


class MACLLoss(nn.Module):
    """Model-aware contrastive loss (Huang et al., "Model-Aware Contrastive Learning:
    Towards Escaping the Dilemmas", ICML 2023, https://arxiv.org/abs/2207.07874).

    An NT-Xent loss whose temperature grows with the mean alignment of the positive pairs
    (so a well-aligned model is not pushed towards too uniform embeddings), and whose
    per-sample terms are reweighted by ``1 / (1 - P)`` with ``P`` the probability of the
    positive (a gradient correction for the small-batch regime). See :func:`macl_loss`.

    Shapes: ``z0`` and ``z1`` of shape (batch_size, embedding_size); returns a scalar.

    Attributes:
        temperature: Base temperature, > 0.
        alpha: Scaling of the temperature with the alignment, in [0, 1].
        A_0: Initial alignment threshold, in [0, 1].
        eps: Added to ``1 - P`` before dividing (and the smallest allowed temperature).

    Example:
        >>> loss_fn = MACLLoss(temperature=0.1, alpha=0.5, A_0=0.0)
        >>> z0 = torch.randn(8, 32, requires_grad=True)
        >>> loss = loss_fn(z0, torch.randn(8, 32))
        >>> loss.backward()
    """

    def __init__(self, temperature: float = 0.1, alpha: float = 0.5, A_0: float = 0.0) -> None:
        """Builds the loss.

        Args:
            temperature: Base temperature; must be >= 1e-8.
            alpha: Scaling of the temperature with the alignment, in [0, 1].
            A_0: Initial alignment threshold, in [0, 1].

        Raises:
            ValueError: If an argument is out of its range.
        """
        super().__init__()
        self.eps = 1e-8
        if temperature < self.eps:
            raise ValueError(f"temperature must be >= 1e-8, got temperature={temperature}.")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in the range [0, 1], got alpha={alpha}.")
        if not 0 <= A_0 <= 1:
            raise ValueError(f"A_0 must be in the range [0, 1], got A_0={A_0}.")
        self.temperature = temperature
        self.alpha = alpha
        self.A_0 = A_0

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            z0: Embeddings of the first views, shape (batch_size, embedding_size).
            z1: Embeddings of the second views, same shape.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes differ or are not 2-D.
        """
        return macl_loss(z0, z1, self.temperature, self.alpha, self.A_0, self.eps)
