"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (and MoCo with a bank).

The math lives in two pure functions, :func:`ntxent_loss` (in-batch negatives, optionally
gathered from all processes) and :func:`ntxent_memory_bank_loss` (negatives from a bank).
Both reduce the loss to a per-row log-sum-exp over the negatives and run it through the
blockwise kernels of :mod:`fastssl.kernels.contrastive` by default: no ``(2B, 2B)``
similarity matrix is ever held, on CPUs (tiled code) or GPUs (Triton), in eager mode or
under ``torch.compile(fullgraph=True)`` (the kernels are custom operators). With
``gather_distributed`` each process computes only its own rows against the gathered views.
``FASTSSL_FUSED_LOSS=0`` (or ``fused=False``) selects the plain formula instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.kernels import contrastive
from fastssl.kernels.contrastive import DEFAULT_BLOCK_COLS, DEFAULT_BLOCK_ROWS, check_pair
from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.utils import dist


def normalized_views(
    out0: Tensor, out1: Tensor, gather_distributed: bool
) -> tuple[Tensor, Tensor, int, int]:
    """L2-normalised views for a two-view contrastive loss, and the keys they meet.

    Args:
        out0: Projections of the first views, shape (n, d).
        out1: Projections of the second views, shape (n, d).
        gather_distributed: Gather the views of all processes as keys (with gradient).

    Returns:
        ``(local, keys, offset, n)``: ``local`` (2n, d) holds the first views, then the
        second; ``keys`` (2N, d) is ``local`` of every process in rank order (``local``
        itself in one process); ``local[r]`` is ``keys[offset + r]``.
    """
    check_pair(out0, out1)
    local = F.normalize(torch.cat([out0, out1]), dim=1)
    if gather_distributed and dist.is_distributed():
        # One collective for both views; its backward reduce-scatters the key gradients.
        return local, dist.gather_cat(local), dist.rank() * local.shape[0], out0.shape[0]
    return local, local, 0, out0.shape[0]


def ntxent_loss(
    out0: Tensor,
    out1: Tensor,
    temperature: float = 0.5,
    gather_distributed: bool = False,
    *,
    fused: bool | None = None,
    strategy: str = "eager",
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """NT-Xent loss with in-batch negatives (SimCLR, Chen et al. 2020, arXiv:2002.05709).

    For each of the ``2 * n`` local views, the positive is the other view of the same image
    and the negatives are all other views of the (global) batch. The loss is the mean over
    local views ``a`` of ``-s(a, a+) / t + log sum_{b != a} exp(s(a, b) / t)`` with ``s``
    the cosine similarity. The mean of this value over processes equals the full-batch loss.

    Args:
        out0: Projections of the first views, shape (n, d).
        out1: Projections of the second views, shape (n, d).
        temperature: Logits are divided by it.
        gather_distributed: Use the views of all processes as negatives (with gradient).
        fused: True/False forces the blockwise kernel / the plain formula; None reads
            ``$FASTSSL_FUSED_LOSS`` (kernel unless it is 0).
        strategy: "eager" (gradients formed in the forward sweep) or "recompute"; see
            :data:`fastssl.kernels.contrastive.STRATEGIES`.
        block_rows: Rows per tile of the CPU kernel.
        block_cols: Columns per tile of the CPU kernel.

    Returns:
        Scalar loss.

    Example:
        >>> out0, out1 = torch.randn(4, 8), torch.randn(4, 8)
        >>> ntxent_loss(out0, out1, temperature=0.5).shape
        torch.Size([])
    """
    local, keys, offset, n = normalized_views(out0, out1, gather_distributed)
    own = (torch.arange(2 * n, device=local.device) + offset).unsqueeze(1)  # self-similarity
    total = contrastive.lse_sum(
        local, keys, own, temperature,
        fused=fused, strategy=strategy, block_rows=block_rows, block_cols=block_cols,
    )  # fmt: skip
    positive = (local[:n] * local[n:]).sum(dim=1) / temperature  # the same for both views
    return (total - 2 * positive.sum()) / (2 * n)


def ntxent_memory_bank_loss(
    out0: Tensor,
    out1: Tensor,
    negatives: Tensor,
    temperature: float = 0.5,
    *,
    fused: bool | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_cols: int = DEFAULT_BLOCK_COLS,
) -> Tensor:
    """NT-Xent loss with negatives from a memory bank (MoCo, He et al. 2020).

    For each sample ``i`` the loss is ``-log softmax([s(out0_i, out1_i), s(out0_i, k_1), ...,
    s(out0_i, k_K)] / t)[0]``, averaged over the batch; ``s`` is the cosine similarity. The
    ``(n, K)`` logits are never held: the log-sum-exp over the bank runs blockwise and the
    positive is folded in with ``logaddexp``.

    Args:
        out0: Queries, shape (n, d).
        out1: Positive keys, shape (n, d).
        negatives: Negative keys of shape (K, d), assumed of unit norm (a memory bank).
        temperature: Logits are divided by it.
        fused: True/False forces the blockwise kernel / the plain formula; None reads
            ``$FASTSSL_FUSED_LOSS``.
        block_rows: Rows per tile of the CPU kernel.
        block_cols: Columns per tile of the CPU kernel.

    Returns:
        Scalar loss.

    Example:
        >>> bank = F.normalize(torch.randn(16, 8), dim=1)
        >>> ntxent_memory_bank_loss(torch.randn(4, 8), torch.randn(4, 8), bank).shape
        torch.Size([])
    """
    check_pair(out0, out1)
    if negatives.ndim != 2 or negatives.shape[1] != out0.shape[1]:
        raise ValueError(
            f"negatives must have shape (K, {out0.shape[1]}), got {tuple(negatives.shape)}."
        )
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    positive = (out0 * out1).sum(dim=1) / temperature
    none = torch.empty(out0.shape[0], 0, dtype=torch.long, device=out0.device)
    bank = negatives.to(device=out0.device, dtype=out0.dtype)
    negative = contrastive.lse_rows(
        out0, bank, none, temperature, fused=fused, block_rows=block_rows, block_cols=block_cols
    )
    # The positive is one more column of the softmax.
    return (torch.logaddexp(positive, negative.to(positive.dtype)) - positive).mean()


class NTXentLoss(nn.Module):
    """Contrastive cross-entropy loss of SimCLR (Chen et al. 2020, arXiv:2002.05709).

    With ``memory_bank_size`` set to ``(num_features, dim)`` the negatives come from a memory
    bank instead of the batch (MoCo, He et al. 2020, arXiv:1911.05722): the bank is read
    before the normalised ``out1`` is enqueued, and it is only updated when ``out0`` requires
    a gradient (so evaluating the loss leaves the bank unchanged).

    Shapes: ``out0`` and ``out1`` of shape (batch_size, embedding_size); returns a scalar.

    Attributes:
        temperature: Logits are divided by it.
        memory_bank: The :class:`MemoryBankModule` (disabled when the size is 0).
        gather_distributed: Use the batches of all processes as negatives; with a memory
            bank, gather them before each bank update instead.

    Example:
        >>> loss_fn = NTXentLoss(temperature=0.1)
        >>> out0 = torch.randn(8, 32, requires_grad=True)
        >>> loss = loss_fn(out0, torch.randn(8, 32))
        >>> loss.backward()
    """

    def __init__(
        self,
        temperature: float = 0.5,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
    ) -> None:
        """Builds the loss.

        Args:
            temperature: Logits are divided by it; ``abs(temperature)`` must be >= 1e-8.
            memory_bank_size: 0 for SimCLR, or ``(num_features, dim)`` for a memory bank.
            gather_distributed: Gather the negatives (or the bank updates) of all processes.

        Raises:
            ValueError: If ``abs(temperature) < 1e-8`` or the memory bank size is invalid.
            TypeError: If the memory bank size is not an int or a sequence of ints.
        """
        super().__init__()
        self.eps = 1e-8  # LightlySSL's attribute: the smallest allowed abs(temperature)
        contrastive.check_temperature(temperature)
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.memory_bank = MemoryBankModule(
            size=memory_bank_size, gather_distributed=gather_distributed
        )

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            out0: Projections of the first views, shape (batch_size, embedding_size).
            out1: Projections of the second views, shape (batch_size, embedding_size).

        Returns:
            Scalar loss.
        """
        if self.memory_bank.size[0] == 0:
            return ntxent_loss(out0, out1, self.temperature, self.gather_distributed)
        check_pair(out0, out1)
        # The bank stores normalised keys; normalising twice in the loss is harmless.
        keys = F.normalize(out1, dim=1)
        keys, negatives = self.memory_bank(keys, update=out0.requires_grad)
        assert negatives is not None  # the bank is enabled
        # The bank returns (dim, num_features); the pure function takes (num_features, dim).
        return ntxent_memory_bank_loss(out0, keys, negatives.T, self.temperature)
