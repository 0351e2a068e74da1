"""CO2: consistency regularisation of the pseudo-labels of a contrastive loss (Wei et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.models.modules.memory_bank import MemoryBankModule


def co2_divergence(
    out0: Tensor, out1: Tensor, negatives: Tensor | None, t_consistency: float = 0.05
) -> Tensor:
    """Symmetric KL divergence between the pseudo-labels of the two views (CO2, Eq. 4).

    The pseudo-label of query ``q`` with positive ``k+`` is
    ``softmax([<q, k+>, <q, n_1>, ..., <q, n_K>] / t_consistency)``. For ``p`` (queries
    ``out0``, positives ``out1``) and ``q`` (the roles swapped) the result is
    ``(KL(p || q) + KL(q || p)) / batch_size``. Without a bank, the negatives of row ``i``
    are the other rows of the other view: the similarity matrix ``S = out0 @ out1.T`` then
    holds ``p``'s logits in its rows and ``q``'s in its columns, with the positive on the
    diagonal, so no masking is needed.

    Args:
        out0: L2-normalised embeddings of the first views, shape (n, d).
        out1: L2-normalised embeddings of the second views, shape (n, d).
        negatives: Bank of shape (d, K), or None for in-batch negatives.
        t_consistency: Temperature of the pseudo-labels.

    Returns:
        Scalar divergence.

    Example:
        >>> z = F.normalize(torch.randn(4, 8), dim=1)
        >>> co2_divergence(z, z, None).item()
        0.0
    """
    if negatives is None:
        similarity = out0 @ out1.T
        logits_p, logits_q = similarity, similarity.T
    else:
        bank = negatives.to(device=out0.device, dtype=out0.dtype).detach()
        positive = (out0 * out1).sum(dim=1, keepdim=True)
        logits_p = torch.cat([positive, out0 @ bank], dim=1)
        logits_q = torch.cat([positive, out1 @ bank], dim=1)
    log_p = F.log_softmax(logits_p / t_consistency, dim=1)
    log_q = F.log_softmax(logits_q / t_consistency, dim=1)
    # KL(p || q) + KL(q || p) = sum (p - q) * (log p - log q).
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum() / out0.shape[0]


class CO2Regularizer(nn.Module):
    """CO2 regulariser (Wei et al., "CO2: Consistent Contrast for Unsupervised Visual
    Representation Learning", ICLR 2021, https://arxiv.org/abs/2010.02217).

    A contrastive loss treats the two views of an image as one positive and everything else
    as negatives; CO2 adds that the *similarities to the negatives* should agree between
    the views: it penalises the symmetric KL divergence between the softmax pseudo-labels
    of ``out0`` and of ``out1`` (see :func:`co2_divergence`), weighted by ``alpha / 2``.
    The negatives are the other images of the batch, or a memory bank as in MoCo (read
    before the normalised ``out1`` is enqueued, at every call, as in LightlySSL).

    Unlike LightlySSL 1.6, which wraps its result in ``torch.tensor(...)`` and so returns
    the same value *without a gradient* (the regulariser then does not train anything),
    the returned value is differentiable.

    Shapes: ``out0`` and ``out1`` of shape (batch_size, dim); returns a scalar.

    Attributes:
        alpha: Weight of the regularisation term.
        t_consistency: Temperature of the pseudo-labels.
        memory_bank: The :class:`~fastssl.models.modules.memory_bank.MemoryBankModule`
            (disabled when the size is 0).

    Example:
        >>> co2 = CO2Regularizer(alpha=1.0, memory_bank_size=(64, 16))
        >>> out0 = torch.randn(8, 16, requires_grad=True)
        >>> loss = co2(out0, torch.randn(8, 16))
        >>> loss.backward()
    """

    def __init__(
        self,
        alpha: float = 1,
        t_consistency: float = 0.05,
        memory_bank_size: int | Sequence[int] = 0,
    ) -> None:
        """Builds the regulariser.

        Args:
            alpha: Weight of the regularisation term.
            t_consistency: Temperature of the pseudo-labels; ``abs(t_consistency)`` must be
                >= 1e-8.
            memory_bank_size: 0 for in-batch negatives, or ``(num_features, dim)`` for a
                memory bank.

        Raises:
            ValueError: If ``abs(t_consistency) < 1e-8`` or the bank size is invalid.
            TypeError: If the bank size is not an int or a sequence of ints.
        """
        super().__init__()
        if abs(t_consistency) < 1e-8:
            raise ValueError(
                f"t_consistency must satisfy abs(t_consistency) >= 1e-8, got {t_consistency}."
            )
        self.memory_bank = MemoryBankModule(size=memory_bank_size)
        self.t_consistency = t_consistency
        self.alpha = alpha

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        """Computes the regularisation term and enqueues ``out1`` in the bank (if any).

        Args:
            out0: Projections of the first views, shape (batch_size, dim).
            out1: Projections of the second views, same shape.

        Returns:
            Scalar ``alpha * 0.5 * (KL(p || q) + KL(q || p))``.

        Raises:
            ValueError: If the shapes differ or are not 2-D.
        """
        if out0.ndim != 2 or out0.shape != out1.shape:
            raise ValueError(
                "out0 and out1 must both have shape (batch_size, dim), got "
                f"{tuple(out0.shape)} and {tuple(out1.shape)}."
            )
        out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
        out1, negatives = self.memory_bank(out1, update=True)
        divergence = co2_divergence(out0, out1, negatives, self.t_consistency)
        return self.alpha * 0.5 * divergence
