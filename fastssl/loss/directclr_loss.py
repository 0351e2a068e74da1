"""DirectCLR loss: NT-Xent on the first ``loss_dim`` features of the backbone output.

DirectCLR (Jing et al. 2022) drops the projection head and applies the contrastive loss to
a fixed sub-vector of the representation, so the backbone's own features must avoid
dimensional collapse. :class:`DirectCLRLoss` is :class:`~fastssl.loss.NTXentLoss` (and its
blockwise kernels, memory bank and ``gather_distributed``) on ``out[:, :loss_dim]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from fastssl.loss.ntx_ent_loss import NTXentLoss


class DirectCLRLoss(NTXentLoss):
    """DirectCLR loss (Jing et al., "Understanding Dimensional Collapse in Contrastive
    Self-supervised Learning", ICLR 2022, https://arxiv.org/abs/2110.09348).

    Meant for backbone outputs without a projection head: each output is flattened and
    truncated to its first ``loss_dim`` values, then the NT-Xent loss of SimCLR (or MoCo's
    with a memory bank) is computed on the truncated vectors.

    Shapes: ``out0`` and ``out1`` of shape (batch_size, ...) with the same shape; returns a
    scalar.

    Attributes:
        loss_dim: Number of leading features (after flattening) the loss sees.
        temperature: Logits are divided by it.
        memory_bank: The :class:`~fastssl.models.modules.memory_bank.MemoryBankModule`
            (disabled when the size is 0); it stores ``loss_dim``-dimensional vectors.
        gather_distributed: Use the batches of all processes as negatives; with a memory
            bank, gather them before each bank update instead.

    Example:
        >>> import torch
        >>> loss_fn = DirectCLRLoss(loss_dim=32)
        >>> out0 = torch.randn(8, 512, requires_grad=True)  # backbone features
        >>> loss = loss_fn(out0, torch.randn(8, 512))
        >>> loss.backward()
    """

    def __init__(
        self,
        loss_dim: int = 64,
        temperature: float = 0.5,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
    ) -> None:
        """Builds the loss.

        Args:
            loss_dim: Number of leading features the loss sees; must be >= 1.
            temperature: Logits are divided by it; ``abs(temperature)`` must be >= 1e-8.
            memory_bank_size: 0 for in-batch negatives, or ``(num_features, loss_dim)`` for
                a memory bank.
            gather_distributed: Gather the negatives (or the bank updates) of all processes.

        Raises:
            ValueError: If ``loss_dim < 1``, and as :class:`~fastssl.loss.NTXentLoss`.
        """
        if isinstance(loss_dim, bool) or not isinstance(loss_dim, int) or loss_dim < 1:
            raise ValueError(f"loss_dim must be a positive int, got {loss_dim!r}.")
        super().__init__(
            temperature=temperature,
            memory_bank_size=memory_bank_size,
            gather_distributed=gather_distributed,
        )
        self.loss_dim = loss_dim

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        """Computes the loss on the first ``loss_dim`` features.

        Args:
            out0: Backbone outputs of the first views, shape (batch_size, ...).
            out1: Backbone outputs of the second views, same shape.

        Returns:
            Scalar loss.
        """
        out0 = out0.flatten(start_dim=1)[:, : self.loss_dim]
        out1 = out1.flatten(start_dim=1)[:, : self.loss_dim]
        return super().forward(out0, out1)
