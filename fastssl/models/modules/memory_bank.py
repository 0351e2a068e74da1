"""A first-in first-out bank of past embeddings, used as extra negatives (MoCo).

Same interface as LightlySSL 1.6's ``lightly.models.modules.memory_bank``. The enqueue is
written with tensor operations only (no ``int(ptr)`` host read, no Python branch on the
pointer), so a loss that owns a bank still compiles with ``torch.compile(fullgraph=True)``
and never waits for the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastssl.utils import dist


def _size_tuple(size: int | Sequence[int]) -> tuple[int, ...]:
    """Validates a bank size and returns it as a tuple: ``(0,)`` or ``(num_features, dim)``."""
    if isinstance(size, bool) or not isinstance(size, int | Sequence):
        raise TypeError(
            f"Memory bank 'size' must be 0 or a (num_features, dim) tuple of ints, "
            f"got {size!r} of type {type(size).__name__}."
        )
    entries = (size,) if isinstance(size, int) else tuple(size)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in entries):
        raise TypeError(
            f"Memory bank 'size' entries must be ints, got {size!r}; "
            "use size=(num_features, dim) or size=0."
        )
    if any(x < 0 for x in entries):
        raise ValueError(
            f"Memory bank 'size' entries must be non-negative, got size={size!r}; "
            "use size=(num_features, dim) or size=0 to disable the bank."
        )
    if isinstance(size, int) and size > 0:
        # LightlySSL 1.6 rejects this too: the feature dimension cannot be guessed.
        raise ValueError(
            f"Memory bank size={size} does not give the feature dimension; pass "
            f"size=({size}, dim), or size=0 to disable the bank."
        )
    if entries != (0,) and len(entries) != 2:
        raise ValueError(
            f"Memory bank 'size' must be 0 or a (num_features, dim) tuple, got size={size!r}."
        )
    return entries


class MemoryBankModule(nn.Module):
    """Memory bank of past embeddings (MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722).

    The bank holds ``num_features`` unit-norm vectors of size ``dim``, initialised at random
    (``torch.randn`` then L2 normalisation, so a seed fixes it). Each update writes the
    newest batch at the pointer; a batch that reaches the end of the bank is cut there and
    the pointer returns to 0 (LightlySSL 1.6's rule: the rows past the end are dropped, not
    wrapped around).

    Attributes:
        size: ``(0,)`` when disabled, else ``(num_features, dim)``.
        gather_distributed: If True, the batches of all processes are gathered (rank order)
            before the update, so every process holds the same bank whatever the world size.
        feature_dim_first: If True, ``forward`` returns the bank as (dim, num_features),
            else as (num_features, dim).
        bank: Buffer of shape (num_features, dim) (shape (0,) when disabled), not saved in
            the state dict.
        bank_ptr: Buffer of shape (1,), the row the next update starts at.

    Example:
        >>> bank = MemoryBankModule(size=(16, 4))
        >>> out, negatives = bank(torch.randn(3, 4), update=True)
        >>> negatives.shape  # (dim, num_features): the bank *before* this update
        torch.Size([4, 16])
        >>> int(bank.bank_ptr)
        3
    """

    bank: Tensor
    bank_ptr: Tensor

    def __init__(
        self,
        size: int | Sequence[int],
        gather_distributed: bool = False,
        feature_dim_first: bool = True,
    ) -> None:
        """Creates the bank.

        Args:
            size: 0 to disable the bank, or ``(num_features, dim)``.
            gather_distributed: Gather the batches of all processes before each update.
            feature_dim_first: Return the bank as (dim, num_features) instead of
                (num_features, dim).

        Raises:
            TypeError: If ``size`` is not an int or a sequence of ints.
            ValueError: If ``size`` has negative entries, is a bare positive int or is not
                of length 2.
        """
        super().__init__()
        self.size = _size_tuple(size)
        self.gather_distributed = gather_distributed
        self.feature_dim_first = feature_dim_first
        self.register_buffer("bank", torch.empty(self.size), persistent=False)
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long), persistent=False)
        if len(self.size) == 2:
            self._init_memory_bank(self.size)

    @torch.no_grad()
    def _init_memory_bank(self, size: tuple[int, ...]) -> None:
        """Fills the bank with random unit vectors and resets the pointer."""
        self.bank.copy_(nn.functional.normalize(torch.randn(size), dim=-1))
        self.bank_ptr.zero_()

    def forward(
        self, output: Tensor, labels: Tensor | None = None, update: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Returns ``output`` and a detached copy of the bank, then optionally enqueues.

        Args:
            output: Embeddings of shape (batch_size, dim).
            labels: Ignored; kept for LightlySSL compatibility.
            update: If True, ``output`` is written into the bank *after* the copy is taken,
                so the returned negatives never contain the current batch.

        Returns:
            ``(output, None)`` when the bank is disabled, else ``(output, negatives)`` with
            negatives of shape (dim, num_features) if ``feature_dim_first`` else
            (num_features, dim).
        """
        if self.size[0] == 0:
            return output, None
        negatives = self.bank.detach().clone()
        if self.feature_dim_first:
            negatives = negatives.transpose(0, 1)
        if update:
            self._dequeue_and_enqueue(output)
        return output, negatives

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch: Tensor) -> None:
        """Writes ``batch`` at the pointer; rows past the end of the bank are dropped.

        Args:
            batch: Tensor of shape (batch_size, dim).
        """
        if self.gather_distributed:
            batch = dist.gather_cat(batch.detach())
        batch = batch.detach().to(self.bank.dtype)
        num_features = self.size[0]
        batch_size = batch.shape[0]
        # Scatter into the bank extended by batch_size spare rows, then drop the spare rows:
        # this reproduces "cut at the end" without reading the pointer on the host.
        rows = self.bank_ptr + torch.arange(batch_size, device=self.bank.device)
        extended = torch.cat([self.bank, self.bank.new_zeros(batch_size, self.bank.shape[1])])
        extended = extended.index_copy(0, rows, batch)
        self.bank.copy_(extended[:num_features])
        next_ptr = self.bank_ptr + batch_size
        self.bank_ptr.copy_(torch.where(next_ptr >= num_features, 0, next_ptr))
