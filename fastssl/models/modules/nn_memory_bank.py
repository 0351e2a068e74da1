"""Nearest-neighbour memory bank: replaces each embedding by its nearest stored one (NNCLR).

Same interface as LightlySSL 1.6's ``lightly.models.modules.nn_memory_bank``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastssl.models.modules.memory_bank import MemoryBankModule

#: Most similarities one nearest-neighbour block holds (16M: 64 MiB in float32).
_NN_TILE_ELEMS = 1 << 24


class NNMemoryBankModule(MemoryBankModule):
    """Memory bank that returns nearest neighbours (NNCLR, Dwibedi et al. 2021,
    https://arxiv.org/abs/2104.14548).

    For every embedding of the batch, ``forward`` returns the entry of the bank with the
    highest cosine similarity; with ``update=True`` the batch is then enqueued (first in,
    first out). The bank stores the raw embeddings and starts as random unit vectors.

    ``size`` may be ``(num_features, dim)`` as in LightlySSL 1.6, or a bare number of
    entries (the default ``2**16``): the bank then takes its feature dimension from the
    first batch it sees (LightlySSL 1.6 rejects a bare int).

    Attributes:
        size: ``(num_features, dim)``; ``(num_features,)`` until a lazily sized bank has
            seen its first batch.
        gather_distributed: If True, the batches of all processes are enqueued, so the bank
            is the same on every process.

    Example:
        >>> nn_replacer = NNMemoryBankModule(size=(4096, 128))
        >>> z0, z1 = torch.randn(8, 128), torch.randn(8, 128)
        >>> nn0 = nn_replacer(z0, update=False)  # (8, 128), no gradient
        >>> nn1 = nn_replacer(z1, update=True)
        >>> nn0.shape
        torch.Size([8, 128])
    """

    def __init__(
        self,
        size: int | Sequence[int] = 2**16,
        gather_distributed: bool = False,
    ) -> None:
        """Creates the bank.

        Args:
            size: ``(num_features, dim)``, or a positive number of entries whose feature
                dimension is taken from the first batch.
            gather_distributed: Gather the batches of all processes before each update.

        Raises:
            TypeError: If ``size`` is not an int or a sequence of ints.
            ValueError: If ``size`` disables the bank (0 entries) or is malformed.
        """
        self._lazy_num_features: int | None = None
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            # Build a disabled bank now; it is sized at the first forward.
            self._lazy_num_features = size
            size = 0
        elif (isinstance(size, int) and size == 0) or (
            isinstance(size, Sequence) and len(size) > 0 and size[0] == 0
        ):
            raise ValueError(
                f"NNMemoryBankModule needs a non-empty bank, got size={size!r}; "
                "use size=(num_features, dim) with num_features > 0."
            )
        # The bank is kept (num_features, dim): the similarity and the look-up both index
        # rows, so no transpose is needed.
        super().__init__(size, gather_distributed=gather_distributed, feature_dim_first=False)
        if self._lazy_num_features is not None:
            self.size = (self._lazy_num_features,)

    def _materialize(self, output: Tensor) -> None:
        """Sizes a lazily created bank from the first batch."""
        assert self._lazy_num_features is not None
        self.size = (self._lazy_num_features, output.shape[1])
        self.bank = torch.empty(self.size, device=output.device)
        self.bank_ptr = torch.zeros(1, dtype=torch.long, device=output.device)
        self._init_memory_bank(self.size)
        self._lazy_num_features = None

    def forward(  # type: ignore[override]
        self,
        output: Tensor,
        update: bool = False,
    ) -> Tensor:
        """Returns the nearest neighbour in the bank of every row of ``output``.

        Args:
            output: Embeddings of shape (batch_size, dim).
            update: If True, ``output`` is enqueued after the look-up, so a batch is never
                its own neighbour.

        Returns:
            Tensor of shape (batch_size, dim) (the bank's dtype), without gradient.

        Raises:
            ValueError: If ``output`` is not (batch_size, dim) with the bank's dim.
        """
        if output.dim() != 2:
            raise ValueError(
                f"NNMemoryBankModule: 'output' must have shape (batch_size, dim), "
                f"got {tuple(output.shape)}."
            )
        if self._lazy_num_features is not None:
            self._materialize(output)
        if output.shape[1] != self.size[1]:
            raise ValueError(
                f"NNMemoryBankModule: 'output' has dim {output.shape[1]} but the bank "
                f"stores dim {self.size[1]} (size={self.size})."
            )
        _, bank = super().forward(output, update=update)
        assert bank is not None
        with torch.no_grad():
            query = nn.functional.normalize(output.detach().to(bank.dtype), dim=1)
            keys = nn.functional.normalize(bank, dim=1)
            # Row blocks bound the (rows, K) similarities to _NN_TILE_ELEMS (64 MiB in
            # float32) instead of a (B, K) matrix: a 4096-image batch against ImageNet's
            # 98,304-row bank would otherwise hold 1.5 GiB.
            rows = max(1, _NN_TILE_ELEMS // max(1, keys.shape[0]))
            nearest = torch.cat([(block @ keys.T).argmax(dim=1) for block in query.split(rows)])
            return bank.index_select(0, nearest)
