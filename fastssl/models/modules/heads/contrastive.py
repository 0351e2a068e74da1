"""Projection heads of contrastive methods: SimCLR, MoCo and DenseCL."""

from __future__ import annotations

from torch import nn

from fastssl.models.modules.heads.base import Block, ProjectionHead, mlp_blocks


def _contrastive_blocks(
    input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, batch_norm: bool
) -> list[Block]:
    """SimCLR's and MoCo's MLP: batch norm after every layer (the output's too) or none."""
    return mlp_blocks(
        input_dim,
        hidden_dim,
        output_dim,
        num_layers=num_layers,
        norm=nn.BatchNorm1d if batch_norm else None,
        output_norm=nn.BatchNorm1d(output_dim) if batch_norm else None,
    )


class SimCLRProjectionHead(ProjectionHead):
    """Projection head of SimCLR (Chen et al., 2020, https://arxiv.org/abs/2002.05709).

    SimCLR v1 uses an MLP with one hidden ReLU layer; SimCLR v2
    (https://arxiv.org/abs/2006.10029) goes deeper (``num_layers=3``). With ``batch_norm``
    every layer, the output one included, is followed by ``BatchNorm1d`` and has no bias.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.
        num_layers: Number of linear layers (2 for v1, 3 for v2); at least 2.
        batch_norm: Whether every linear layer is followed by batch norm.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> head = SimCLRProjectionHead(512, 512, 128)
        >>> head(torch.randn(8, 512)).shape
        torch.Size([8, 128])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(
            _contrastive_blocks(input_dim, hidden_dim, output_dim, num_layers, batch_norm)
        )


class MoCoProjectionHead(ProjectionHead):
    """Projection head of MoCo v2 / v3.

    MoCo v2 (Chen et al., 2020, https://arxiv.org/abs/2003.04297) replaces MoCo's linear
    head with a 2-layer MLP (hidden 2048, ReLU, no batch norm). MoCo v3 (Chen et al., 2021,
    https://arxiv.org/abs/2104.02057) uses 3 layers of width 4096, output 256, with batch
    norm after every layer.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers (2048 for v2, 4096 for v3).
        output_dim: Features of the projection (128 for v2, 256 for v3).
        num_layers: Number of linear layers (2 for v2, 3 for v3); at least 2.
        batch_norm: Whether every linear layer is followed by batch norm (v3).

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> v3 = MoCoProjectionHead(512, 4096, 256, num_layers=3, batch_norm=True)
        >>> v3(torch.randn(8, 512)).shape
        torch.Size([8, 256])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            _contrastive_blocks(input_dim, hidden_dim, output_dim, num_layers, batch_norm)
        )


class DenseCLProjectionHead(ProjectionHead):
    """Projection head of DenseCL (Wang et al., 2021, https://arxiv.org/abs/2011.09157).

    A 2-layer MLP without normalisation, used both for the global (pooled) features and,
    applied to every location, for the dense features.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.

    Shapes:
        - Input: (..., input_dim), e.g. (B, input_dim) or (B, H * W, input_dim).
        - Output: (..., output_dim).

    Example:
        >>> import torch
        >>> head = DenseCLProjectionHead(512, 512, 128)
        >>> head(torch.randn(2, 49, 512)).shape
        torch.Size([2, 49, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim, norm=None))
