"""Prediction head of AIM, the autoregressive image model.

AIM predicts the pixels of the next patch from a causal ViT's features with a stack of
residual MLP blocks. The blocks use timm's ``Mlp`` (as LightlySSL does, so checkpoints
match); timm is imported only when a head is built, so this module imports without it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def _timm_mlp() -> type[nn.Module]:
    try:
        from timm.layers import Mlp
    except ImportError as error:
        raise ImportError(
            "AIMPredictionHead uses timm's Mlp by default, and timm is not installed: "
            "run `pip install timm`, or pass your own mlp_layer."
        ) from error
    mlp: type[nn.Module] = Mlp
    return mlp


class AIMPredictionHeadBlock(nn.Module):
    """Residual MLP block of the AIM prediction head: ``x + mlp(norm(x))``.

    AIM: El-Nouby et al., 2024, https://arxiv.org/abs/2401.08541.

    Args:
        input_dim: Features of the input.
        output_dim: Features of the output; must equal ``input_dim`` (residual).
        mlp_ratio: Width of the MLP's hidden layer relative to ``input_dim``.
        proj_drop: Dropout rate in the MLP.
        act_layer: Activation class.
        norm_layer: Normalisation class, built as ``norm_layer(input_dim)``.
        mlp_layer: MLP class with timm's ``Mlp`` keyword arguments; ``None`` for timm's.

    Shapes:
        - Input: (B, N, input_dim).
        - Output: (B, N, output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        mlp_layer: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if output_dim != input_dim:
            raise ValueError(
                "AIMPredictionHeadBlock is residual: output_dim must equal input_dim, "
                f"got input_dim={input_dim} and output_dim={output_dim}."
            )
        mlp_cls = _timm_mlp() if mlp_layer is None else mlp_layer
        self.norm = norm_layer(input_dim)
        self.mlp = mlp_cls(
            in_features=input_dim,
            hidden_features=int(input_dim * mlp_ratio),
            out_features=output_dim,
            act_layer=act_layer,
            drop=proj_drop,
            bias=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Applies the residual block to ``x`` of shape (..., input_dim)."""
        out: Tensor = x + self.mlp(self.norm(x))
        return out


class AIMPredictionHead(nn.Module):
    """Prediction head of AIM (El-Nouby et al., 2024, https://arxiv.org/abs/2401.08541).

    Linear projection to ``hidden_dim`` -> ``num_blocks`` residual MLP blocks -> norm ->
    linear projection to ``output_dim`` (the pixels of a patch). No layer has a bias.

    Args:
        input_dim: Features of the backbone tokens.
        output_dim: Features predicted per token (e.g. patch_size**2 * 3).
        hidden_dim: Width of the residual stream.
        num_blocks: Number of residual MLP blocks.
        mlp_ratio: Width of each block's hidden layer relative to ``hidden_dim``.
        proj_drop: Dropout rate in the MLPs.
        act_layer: Activation class.
        norm_layer: Normalisation class.
        mlp_layer: MLP class with timm's ``Mlp`` keyword arguments; ``None`` for
            ``timm.layers.Mlp`` (needs ``pip install timm``).
        block_fn: Block class, called with the keyword arguments of
            :class:`AIMPredictionHeadBlock`.

    Shapes:
        - Input: (B, N, input_dim).
        - Output: (B, N, output_dim).

    Example:
        >>> import torch
        >>> head = AIMPredictionHead(input_dim=192, output_dim=768, hidden_dim=256, num_blocks=2)
        >>> head(torch.randn(2, 16, 192)).shape
        torch.Size([2, 16, 768])
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 2048,
        num_blocks: int = 12,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        mlp_layer: type[nn.Module] | None = None,
        block_fn: type[nn.Module] = AIMPredictionHeadBlock,
    ) -> None:
        super().__init__()
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}.")
        mlp_cls = _timm_mlp() if mlp_layer is None else mlp_layer
        block_kwargs: dict[str, Any] = {
            "input_dim": hidden_dim,
            "output_dim": hidden_dim,
            "mlp_ratio": mlp_ratio,
            "proj_drop": proj_drop,
            "norm_layer": norm_layer,
            "act_layer": act_layer,
            "mlp_layer": mlp_cls,
        }
        self.blocks = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False),
            *(block_fn(**block_kwargs) for _ in range(num_blocks)),
            norm_layer(hidden_dim),
            nn.Linear(hidden_dim, output_dim, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps tokens (B, N, input_dim) to per-token predictions (B, N, output_dim)."""
        out: Tensor = self.blocks(x)
        return out
