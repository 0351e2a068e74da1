"""Heads of siamese methods with a predictor: BYOL, SimSiam, NNCLR and TiCo.

These methods pass one view through a projection head and a prediction head and regress
the projection of the other view; the prediction head is what keeps them from collapsing
together with a stop-gradient (SimSiam) or a momentum encoder (BYOL, TiCo).
"""

from __future__ import annotations

from torch import nn

from fastssl.models.modules.heads.base import ProjectionHead, mlp_blocks


class BYOLProjectionHead(ProjectionHead):
    """Projection head of BYOL (Grill et al., 2020, https://arxiv.org/abs/2006.07733).

    Linear (4096) -> batch norm -> ReLU -> linear (256).

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> BYOLProjectionHead(512, 1024, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 4096, output_dim: int = 256
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class BYOLPredictionHead(ProjectionHead):
    """Prediction head of BYOL (Grill et al., 2020, https://arxiv.org/abs/2006.07733).

    Same architecture as the projection head, mapping projections to predictions.

    Args:
        input_dim: Features of the projection.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the prediction.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> BYOLPredictionHead(128, 1024, 128)(torch.randn(4, 128)).shape
        torch.Size([4, 128])
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class SimSiamProjectionHead(ProjectionHead):
    """Projection head of SimSiam (Chen & He, 2020, https://arxiv.org/abs/2011.10566).

    Three linear layers, each followed by batch norm; ReLU after the two hidden ones. The
    output batch norm has no affine parameters.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> SimSiamProjectionHead(512, 512, 512)(torch.randn(4, 512)).shape
        torch.Size([4, 512])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 2048
    ) -> None:
        super().__init__(
            mlp_blocks(
                input_dim,
                hidden_dim,
                output_dim,
                num_layers=3,
                output_norm=nn.BatchNorm1d(output_dim, affine=False),
            )
        )


class SimSiamPredictionHead(ProjectionHead):
    """Prediction head of SimSiam (Chen & He, 2020, https://arxiv.org/abs/2011.10566).

    A bottleneck MLP: linear (512) -> batch norm -> ReLU -> linear, no norm on the output.

    Args:
        input_dim: Features of the projection.
        hidden_dim: Width of the bottleneck.
        output_dim: Features of the prediction.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> SimSiamPredictionHead(512, 128, 512)(torch.randn(4, 512)).shape
        torch.Size([4, 512])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 512, output_dim: int = 2048
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class NNCLRProjectionHead(ProjectionHead):
    """Projection head of NNCLR (Dwibedi et al., 2021, https://arxiv.org/abs/2104.14548).

    Three linear layers of sizes [2048, 2048, d], each followed by batch norm; ReLU after
    every batch norm but the last.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection (d).

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> NNCLRProjectionHead(512, 512, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 256
    ) -> None:
        super().__init__(
            mlp_blocks(
                input_dim,
                hidden_dim,
                output_dim,
                num_layers=3,
                output_norm=nn.BatchNorm1d(output_dim),
            )
        )


class NNCLRPredictionHead(ProjectionHead):
    """Prediction head of NNCLR (Dwibedi et al., 2021, https://arxiv.org/abs/2104.14548).

    Linear (4096) -> batch norm -> ReLU -> linear (d), no norm on the output.

    Args:
        input_dim: Features of the projection.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the prediction.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> NNCLRPredictionHead(128, 512, 128)(torch.randn(4, 128)).shape
        torch.Size([4, 128])
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class TiCoProjectionHead(ProjectionHead):
    """Projection head of TiCo (Zhu et al., 2022, https://arxiv.org/abs/2206.10698).

    TiCo reuses BYOL's projector: linear (4096) -> batch norm -> ReLU -> linear (256).

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> TiCoProjectionHead(512, 1024, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 4096, output_dim: int = 256
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))
