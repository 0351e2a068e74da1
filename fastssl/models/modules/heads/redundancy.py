"""Projection heads of methods that regularise the embedding statistics.

Barlow Twins, VICReg(L), MMCR, LeJEPA and LeWM need no negatives and no predictor: their
losses act on the (cross-)covariance or distribution of wide projections, so the heads are
plain, often very wide, MLPs.
"""

from __future__ import annotations

from torch import nn

from fastssl.models.modules.heads.base import ProjectionHead, mlp_blocks


class BarlowTwinsProjectionHead(ProjectionHead):
    """Projection head of Barlow Twins (Zbontar et al., 2021, https://arxiv.org/abs/2103.03230).

    Three linear layers of 8192 units; the first two are followed by batch norm and ReLU.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> BarlowTwinsProjectionHead(512, 1024, 1024)(torch.randn(4, 512)).shape
        torch.Size([4, 1024])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 8192, output_dim: int = 8192
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim, num_layers=3))


class VICRegProjectionHead(ProjectionHead):
    """Projection head of VICReg (Bardes et al., 2022, https://arxiv.org/abs/2105.04906).

    ``num_layers`` linear layers (8192 units by default); all but the last are followed by
    batch norm and ReLU.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.
        num_layers: Number of linear layers; at least 2.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> VICRegProjectionHead(512, 1024, 1024, num_layers=2)(torch.randn(4, 512)).shape
        torch.Size([4, 1024])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        num_layers: int = 3,
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim, num_layers=num_layers))


class VicRegLLocalProjectionHead(ProjectionHead):
    """Local projection head of VICRegL (Bardes et al., 2022, https://arxiv.org/abs/2210.01571).

    Like the VICReg head with 3 layers, but with layer norm, so that it applies to every
    location of a feature map.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.

    Shapes:
        - Input: (..., input_dim), e.g. (B, H * W, input_dim).
        - Output: (..., output_dim).

    Example:
        >>> import torch
        >>> VicRegLLocalProjectionHead(512, 256, 256)(torch.randn(2, 49, 512)).shape
        torch.Size([2, 49, 256])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 8192, output_dim: int = 8192
    ) -> None:
        super().__init__(
            mlp_blocks(input_dim, hidden_dim, output_dim, num_layers=3, norm=nn.LayerNorm)
        )


class MMCRProjectionHead(ProjectionHead):
    """Projection head of MMCR (Yerxa et al., 2023, https://arxiv.org/abs/2303.03307).

    One input layer, ``num_layers - 1`` further hidden layers (each with optional batch
    norm and ReLU) and a plain output layer: ``num_layers + 1`` linear layers in total.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.
        num_layers: Number of hidden layers; at least 1.
        batch_norm: Whether the hidden layers are followed by batch norm.
        use_bias: Whether the linear layers have a bias.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> MMCRProjectionHead(512, 1024, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 8192,
        output_dim: int = 512,
        num_layers: int = 2,
        batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}.")
        super().__init__(
            mlp_blocks(
                input_dim,
                hidden_dim,
                output_dim,
                num_layers=num_layers + 1,
                norm=nn.BatchNorm1d if batch_norm else None,
                bias=use_bias,
            )
        )


class LeJEPAProjectionHead(ProjectionHead):
    """Projection head of LeJEPA (Balestriero & LeCun, 2025, https://arxiv.org/abs/2511.08544).

    An MLP with batch norm and ReLU after every hidden layer, whose output the SIGReg and
    invariance losses act on.

    Args:
        input_dim: Features of the backbone output (required).
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.
        num_layers: Number of linear layers; at least 2.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> LeJEPAProjectionHead(512, 1024, 64)(torch.randn(4, 512)).shape
        torch.Size([4, 64])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 64,
        num_layers: int = 3,
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim, num_layers=num_layers))


class LeWMProjectionHead(ProjectionHead):
    """Projection head of LeWM (LeWorldModel, 2026, https://arxiv.org/abs/2603.19312).

    Linear -> optional batch norm -> GELU -> linear, projecting backbone features to the
    predictor's width.

    Args:
        input_dim: Features of the backbone output (required).
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.
        batch_norm: Whether the hidden layer is followed by batch norm.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> import torch
        >>> LeWMProjectionHead(512, 1024, 192)(torch.randn(4, 512)).shape
        torch.Size([4, 192])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 192,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(
            mlp_blocks(
                input_dim,
                hidden_dim,
                output_dim,
                norm=nn.BatchNorm1d if batch_norm else None,
                activation=nn.GELU,
            )
        )
