"""Building blocks shared by every head: the MLP-from-blocks base and a weight-normed linear.

A head is a short MLP described as a list of blocks. Each block becomes
``Linear -> [norm] -> [activation]`` inside one ``nn.Sequential`` called ``layers``, so the
parameter names (``layers.0.weight``, ``layers.1.running_mean``, ...) are the ones LightlySSL
uses and checkpoints move between the two libraries with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import Tensor, nn

#: One block of a :class:`ProjectionHead`: ``(in_features, out_features, norm, activation)``
#: with an optional fifth item ``use_bias``. Without it a block has a bias exactly when it has
#: no normalisation layer (the normalisation's shift makes the bias redundant).
Block: TypeAlias = (
    tuple[int, int, nn.Module | None, nn.Module | None]
    | tuple[int, int, nn.Module | None, nn.Module | None, bool]
)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class ProjectionHead(nn.Module):
    """Base class of all projection and prediction heads: an MLP assembled from blocks.

    Each block ``(in_features, out_features, norm, activation[, use_bias])`` appends a
    ``nn.Linear`` followed by ``norm`` and ``activation`` when they are not ``None``. When
    ``use_bias`` is omitted, the linear layer has a bias only if the block has no norm layer.

    Args:
        blocks: The blocks of the MLP, first to last.

    Shapes:
        - Input: (B, in_features of the first block), or (..., in_features) when no block
          uses ``BatchNorm1d``.
        - Output: (B, out_features of the last block).

    Example:
        >>> head = ProjectionHead([
        ...     (256, 256, nn.BatchNorm1d(256), nn.ReLU()),
        ...     (256, 128, None, None),
        ... ])
        >>> head(torch.randn(4, 256)).shape
        torch.Size([4, 128])
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, block in enumerate(blocks):
            if len(block) not in (4, 5):
                raise ValueError(
                    f"blocks[{index}] must be (in_features, out_features, norm, activation"
                    f"[, use_bias]), got a tuple of length {len(block)}."
                )
            in_features, out_features, norm, activation = block[:4]
            _check_positive_int(f"blocks[{index}] in_features", in_features)
            _check_positive_int(f"blocks[{index}] out_features", out_features)
            use_bias = bool(block[4]) if len(block) == 5 else norm is None
            layers.append(nn.Linear(in_features, out_features, bias=use_bias))
            if norm is not None:
                layers.append(norm)
            if activation is not None:
                layers.append(activation)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Projects ``x`` of shape (B, in_features) to (B, out_features)."""
        out: Tensor = self.layers(x)
        return out


def mlp_blocks(
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    num_layers: int = 2,
    norm: type[nn.Module] | None = nn.BatchNorm1d,
    activation: type[nn.Module] = nn.ReLU,
    output_norm: nn.Module | None = None,
    bias: bool | None = None,
) -> list[Block]:
    """Blocks of a ``num_layers``-deep MLP: hidden layers with norm + activation, linear output.

    Every head of this package is such an MLP; building them here validates the dimensions
    once, with messages that name the head's own arguments.

    Args:
        input_dim: Features entering the first layer.
        hidden_dim: Width of every hidden layer.
        output_dim: Features leaving the last layer.
        num_layers: Number of linear layers (at least 2).
        norm: Normalisation class applied after every hidden layer (``None`` for none).
        activation: Activation class applied after every hidden layer.
        output_norm: Normalisation module after the output layer, if any.
        bias: Bias of every linear layer; ``None`` means "only where no norm follows".

    Returns:
        The blocks, ready for :class:`ProjectionHead`.
    """
    for name, value in (
        ("input_dim", input_dim),
        ("hidden_dim", hidden_dim),
        ("output_dim", output_dim),
    ):
        _check_positive_int(name, value)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError(f"num_layers must be an integer >= 2, got {num_layers!r}.")

    def block(width_in: int, width_out: int, n: nn.Module | None, act: nn.Module | None) -> Block:
        if bias is None:
            return (width_in, width_out, n, act)
        return (width_in, width_out, n, act, bias)

    blocks = [
        block(
            input_dim if index == 0 else hidden_dim,
            hidden_dim,
            norm(hidden_dim) if norm is not None else None,
            activation(),
        )
        for index in range(num_layers - 1)
    ]
    blocks.append(block(hidden_dim, output_dim, output_norm, None))
    return blocks


class WeightNormLinear(nn.Module):
    """Linear layer with weight normalisation ``W = g * V / ||V||`` (Salimans & Kingma, 2016).

    Replaces ``torch.nn.utils.weight_norm(nn.Linear(...))``, which is deprecated and works
    through a forward pre-hook. The parameters keep that function's names (``weight_g`` of
    shape (out_features, 1), ``weight_v`` of shape (out_features, in_features), optional
    ``bias``) so checkpoints written with it load here. ``weight_g`` starts at 1: every row
    of ``W`` then has unit norm, as DINO, SwAV and CAPI want for their prototypes.

    Args:
        in_features: Input features.
        out_features: Output features.
        bias: Whether the layer has a bias.

    Shapes:
        - Input: (..., in_features).
        - Output: (..., out_features).

    Example:
        >>> layer = WeightNormLinear(16, 32)
        >>> bool(torch.allclose(layer.weight.norm(dim=1), torch.ones(32)))
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        # Build an ordinary nn.Linear to draw V (and the bias) exactly like nn.Linear does:
        # the same seed then gives the same parameters as weight_norm(nn.Linear(...)).
        template = nn.Linear(in_features, out_features, bias=bias)
        self.in_features = in_features
        self.out_features = out_features
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(template.weight.detach().clone())
        self.bias: nn.Parameter | None
        if template.bias is not None:
            self.bias = nn.Parameter(template.bias.detach().clone())
        else:
            self.register_parameter("bias", None)

    @property
    def weight(self) -> Tensor:
        """The effective weight ``g * V / ||V||`` of shape (out_features, in_features)."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        """Applies the weight-normalised linear map to ``x`` of shape (..., in_features)."""
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
