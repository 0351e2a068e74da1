"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (and MoCo with a bank).

The math lives in two pure functions, :func:`ntxent_loss` (in-batch negatives, optionally
gathered from all processes) and :func:`ntxent_memory_bank_loss` (negatives from a bank), so a
fused kernel can replace them without touching :class:`NTXentLoss`. Neither uses boolean-mask
indexing nor branches on data: the similarity of a view to itself is masked with ``-inf``
instead of being cut out, which leaves every shape static and ``torch.compile(fullgraph=True)``
traces the loss in one graph (LightlySSL 1.6 breaks the graph there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.utils import dist


def _check_pair(out0: Tensor, out1: Tensor) -> None:
    if out0.ndim != 2 or out0.shape != out1.shape:
        raise ValueError(
            "out0 and out1 must both have shape (batch_size, embedding_size), got "
            f"{tuple(out0.shape)} and {tuple(out1.shape)}."
        )


def ntxent_loss(
    out0: Tensor, out1: Tensor, temperature: float = 0.5, gather_distributed: bool = False
) -> Tensor:
    """NT-Xent loss with in-batch negatives (SimCLR, Chen et al. 2020, arXiv:2002.05709).

    For each of the ``2 * n`` local views, the positive is the other view of the same image
    and the negatives are all other views of the (global) batch. With ``N`` the global batch
    size, the loss is the mean over local views ``a`` of
    ``-s(a, a+) / t + log sum_{b != a} exp(s(a, b) / t)`` with ``s`` the cosine similarity.
    The mean of this value over processes equals the full-batch loss.

    Args:
        out0: Projections of the first views, shape (n, d).
        out1: Projections of the second views, shape (n, d).
        temperature: Logits are divided by it.
        gather_distributed: Use the views of all processes as negatives (with gradient).

    Returns:
        Scalar loss.

    Example:
        >>> out0, out1 = torch.randn(4, 8), torch.randn(4, 8)
        >>> ntxent_loss(out0, out1, temperature=0.5).shape
        torch.Size([])
    """
    _check_pair(out0, out1)
    n = out0.shape[0]
    local = F.normalize(torch.cat([out0, out1]), dim=1)  # (2n, d): views 0 then views 1
    views0, views1 = local[:n], local[n:]
    if gather_distributed:
        views0_all, views1_all = dist.gather_cat(views0), dist.gather_cat(views1)
        offset = dist.rank() * n
    else:
        views0_all, views1_all = views0, views1
        offset = 0
    big_n = views0_all.shape[0]
    everything = torch.cat([views0_all, views1_all])  # (2N, d)
    logits = local @ everything.T / temperature  # (2n, 2N)

    # Column c holds view c // N of global sample c % N; row r is view r // n of global
    # sample offset + r % n. A row's own column is the same view of the same sample.
    rows = torch.arange(2 * n, device=local.device)
    cols = torch.arange(2 * big_n, device=local.device)
    own_col = (rows // n) * big_n + offset + rows % n
    logits = logits.masked_fill(cols.unsqueeze(0) == own_col.unsqueeze(1), float("-inf"))

    positive = (views0 * views1).sum(dim=1) / temperature  # (n,), same for both views
    return (torch.logsumexp(logits, dim=1) - positive.repeat(2)).mean()


def ntxent_memory_bank_loss(
    out0: Tensor, out1: Tensor, negatives: Tensor, temperature: float = 0.5
) -> Tensor:
    """NT-Xent loss with negatives from a memory bank (MoCo, He et al. 2020).

    For each sample ``i`` the loss is ``-log softmax([s(out0_i, out1_i), s(out0_i, k_1), ...,
    s(out0_i, k_K)] / t)[0]``, averaged over the batch; ``s`` is the cosine similarity.

    Args:
        out0: Queries, shape (n, d).
        out1: Positive keys, shape (n, d).
        negatives: Negative keys of shape (K, d), assumed of unit norm (a memory bank).
        temperature: Logits are divided by it.

    Returns:
        Scalar loss.

    Example:
        >>> bank = F.normalize(torch.randn(16, 8), dim=1)
        >>> ntxent_memory_bank_loss(torch.randn(4, 8), torch.randn(4, 8), bank).shape
        torch.Size([])
    """
    _check_pair(out0, out1)
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    positive = (out0 * out1).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, out0 @ negatives.to(out0.dtype).T], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


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
        self.eps = 1e-8
        if abs(temperature) < self.eps:
            raise ValueError(
                f"Illegal temperature={temperature}: abs(temperature) must be >= 1e-8."
            )
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
        _check_pair(out0, out1)
        # The bank stores normalised keys; normalising twice in the loss is harmless.
        keys = F.normalize(out1, dim=1)
        keys, negatives = self.memory_bank(keys, update=out0.requires_grad)
        assert negatives is not None  # the bank is enabled
        # The bank returns (dim, num_features); the pure function takes (num_features, dim).
        return ntxent_memory_bank_loss(out0, keys, negatives.T, self.temperature)
