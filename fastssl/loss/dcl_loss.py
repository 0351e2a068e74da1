"""Decoupled contrastive learning losses DCL and DCLW (Yeh et al. 2022, arXiv:2110.06848).

DCL is NT-Xent with the positive pair removed from the denominator. The math is in the pure
function :func:`dcl_loss`, which runs the log-sum-exp over the negatives through the
blockwise kernels of :mod:`fastssl.kernels.contrastive` (no ``(2B, 2B)`` matrix, also under
``torch.compile``; ``FASTSSL_FUSED_LOSS=0`` selects the plain formula).

Where LightlySSL 1.6 evaluates the weighting function on each process's own batch, here it
sees the gathered batch when ``gather_distributed=True`` (and this process keeps its rows):
the batch-level softmax of DCLW then matches full-batch training exactly. In one process the
two are identical.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from fastssl.kernels import contrastive
from fastssl.kernels.contrastive import DEFAULT_BLOCK_COLS, DEFAULT_BLOCK_ROWS
from fastssl.loss.ntx_ent_loss import normalized_views

WeightFn = Callable[[Tensor, Tensor], Tensor]


def negative_mises_fisher_weights(out0: Tensor, out1: Tensor, sigma: float = 0.5) -> Tensor:
    """Negative von Mises-Fisher weights of DCLW (Yeh et al. 2022, Eq. 7).

    ``w_i = 2 - n * softmax_i(<out0_i, out1_i> / sigma)``: pairs that already agree get a
    smaller weight. The weights carry no gradient.

    Args:
        out0: Shape (n, d), usually L2-normalised.
        out1: Shape (n, d).
        sigma: Similarities are divided by it.

    Returns:
        Weights of shape (n,), averaging to 1.

    Example:
        >>> w = negative_mises_fisher_weights(torch.randn(4, 8), torch.randn(4, 8))
        >>> round(w.mean().item(), 4)
        1.0
    """
    similarity = (out0.detach() * out1.detach()).sum(dim=1) / sigma
    return 2 - out0.shape[0] * torch.softmax(similarity, dim=0)


def dcl_loss(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.1,
    weight_fn: WeightFn | None = None,
    gather_distributed: bool = False,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """Symmetric DCL loss (Yeh et al. 2022, Eq. 6), averaged over the local views.

    For view ``a`` of image ``i`` with positive ``a+`` (the other view of ``i``), the term is
    ``-w_i * s(a, a+) / t + log sum_{b not a view of i} exp(s(a, b) / t)`` with ``s`` the
    cosine similarity; negatives are all views of the other (global) images.

    Args:
        out0: Projections of the first views, shape (n, d).
        out1: Projections of the second views, shape (n, d).
        temperature: Similarities are divided by it.
        weight_fn: ``w = weight_fn(x, y)`` with x, y normalised, shape (N, d) -> (N,); called
            as ``(out0, out1)`` for the first views and ``(out1, out0)`` for the second.
            None means ``w = 1``.
        gather_distributed: Use the views of all processes as negatives (with gradient).
        fused: True/False forces the blockwise kernel / the plain formula; None reads
            ``$FASTSSL_FUSED_LOSS``.
        strategy: "eager" (gradients formed in the forward sweep) or "recompute".
        block_rows: Rows per tile of the CPU kernel.
        block_cols: Columns per tile of the CPU kernel.

    Returns:
        Scalar loss; its mean over processes equals the full-batch loss.

    Example:
        >>> dcl_loss(torch.randn(4, 8), torch.randn(4, 8), temperature=0.1).shape
        torch.Size([])
    """
    local, keys, offset, n = normalized_views(out0, out1, gather_distributed)
    rows = torch.arange(2 * n, device=local.device)
    # Both views of a row's own image leave the denominator: itself and its partner.
    exclude = torch.stack([rows, (rows + n) % (2 * n)], dim=1) + offset
    total = contrastive.lse_sum(
        local, keys, exclude, temperature,
        fused=fused, strategy=strategy, block_rows=block_rows, block_cols=block_cols,
    )  # fmt: skip
    views0, views1 = local[:n], local[n:]
    positive = (views0 * views1).sum(dim=1) / temperature  # (n,)
    if weight_fn is None:
        weighted = 2 * positive.sum()
    else:
        # Weights see the global batch, so batch-level weightings match full-batch training.
        views0_all, views1_all = views0, views1
        if keys is not local:  # gathered: keys holds [views0, views1] of each rank in turn
            per_rank = keys.view(-1, 2, n, keys.shape[1])
            views0_all = per_rank[:, 0].reshape(-1, keys.shape[1])
            views1_all = per_rank[:, 1].reshape(-1, keys.shape[1])
        start = offset // 2
        weight0 = weight_fn(views0_all, views1_all)[start : start + n]
        weight1 = weight_fn(views1_all, views0_all)[start : start + n]
        weighted = (positive * weight0).sum() + (positive * weight1).sum()
    return (total - weighted) / (2 * n)


class DCLLoss(nn.Module):
    """Decoupled Contrastive Learning loss (Yeh et al. 2022, arXiv:2110.06848).

    Implements Eq. 6 of the paper summed over both views and averaged over the batch.
    Shapes: ``out0`` and ``out1`` of shape (batch_size, embedding_size); returns a scalar.

    Attributes:
        temperature: Similarities are divided by it.
        weight_fn: Optional weighting ``w(out0, out1) -> (batch_size,)`` of the positive term.
        gather_distributed: Use the batches of all processes as negatives.

    Example:
        >>> loss_fn = DCLLoss(temperature=0.07)
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
        >>> weighted = DCLLoss(weight_fn=lambda a, b: ((a - b) ** 2).sum(dim=1))
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight_fn: WeightFn | None = None,
        gather_distributed: bool = False,
    ) -> None:
        """Builds the loss.

        Args:
            temperature: Similarities are divided by it; ``abs(temperature) >= 1e-8``.
            weight_fn: Weighting function of the positive term, None for no weighting.
            gather_distributed: Use the batches of all processes as negatives.

        Raises:
            ValueError: If ``abs(temperature) < 1e-8``.
            TypeError: If ``weight_fn`` is neither None nor callable.
        """
        super().__init__()
        contrastive.check_temperature(temperature)
        if weight_fn is not None and not callable(weight_fn):
            raise TypeError(
                f"weight_fn must be None or a callable (out0, out1) -> weights, got {weight_fn!r}."
            )
        self.temperature = temperature
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            out0: Projections of the first views, shape (batch_size, embedding_size).
            out1: Projections of the second views, shape (batch_size, embedding_size).

        Returns:
            Mean loss over the batch (scalar).
        """
        return dcl_loss(out0, out1, self.temperature, self.weight_fn, self.gather_distributed)


class DCLWLoss(DCLLoss):
    """DCL with negative von Mises-Fisher weights, DCLW (Yeh et al. 2022, arXiv:2110.06848).

    Shapes: ``out0`` and ``out1`` of shape (batch_size, embedding_size); returns a scalar.

    Example:
        >>> loss_fn = DCLWLoss(temperature=0.1, sigma=0.5)
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
    """

    def __init__(
        self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False
    ) -> None:
        """Builds the loss.

        Args:
            temperature: Similarities are divided by it; ``abs(temperature) >= 1e-8``.
            sigma: Similarities in the weighting are divided by it; ``abs(sigma) >= 1e-8``.
            gather_distributed: Use the batches of all processes as negatives.

        Raises:
            ValueError: If ``abs(temperature) < 1e-8`` or ``abs(sigma) < 1e-8``.
        """
        contrastive.check_temperature(sigma, "sigma")
        super().__init__(
            temperature=temperature,
            weight_fn=partial(negative_mises_fisher_weights, sigma=sigma),
            gather_distributed=gather_distributed,
        )
        self.sigma = sigma
