"""Heads of clustering and prototype methods: SwAV, DINO, DINOv2, MSN, SMoG and CAPI.

These methods score embeddings against a set of learnable prototypes (a linear layer on
L2-normalised features). The prototypes are often frozen for the first steps or epochs,
because early on their gradients are noisy enough to make training collapse.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from fastssl.models.modules.heads.base import (
    Block,
    ProjectionHead,
    WeightNormLinear,
    _check_positive_int,
    mlp_blocks,
)


def _l2_normalize(x: Tensor) -> Tensor:
    # 1e-12 underflows to 0 in float16, so half-precision inputs get a representable eps.
    eps = 1e-6 if x.dtype == torch.float16 else 1e-12
    return nn.functional.normalize(x, dim=-1, p=2, eps=eps)


def _trunc_normal_inverse_cdf_(tensor: Tensor, std: float, low: float, high: float) -> None:
    """Fills ``tensor`` with N(0, std^2) truncated to [low, high] by inverse-CDF sampling.

    Draw u uniformly between the CDF values of the bounds, map it through the normal's
    inverse CDF. This is the sampler DINO's reference code (and LightlySSL) uses; recent
    PyTorch's ``trunc_normal_`` samples by rejection instead, which gives the same
    distribution but other numbers for the same seed.
    """

    def cdf(value: float) -> float:
        return 0.5 * (1.0 + math.erf(value / (std * math.sqrt(2.0))))

    with torch.no_grad():
        # erfinv(2u - 1) * sqrt(2) is the standard normal's inverse CDF at u.
        tensor.uniform_(2.0 * cdf(low) - 1.0, 2.0 * cdf(high) - 1.0)
        tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(min=low, max=high)


def _dino_init(module: nn.Module) -> None:
    # DINO initialises its MLP with N(0, 0.02^2) truncated to [-2, 2] and zero biases.
    if isinstance(module, nn.Linear):
        _trunc_normal_inverse_cdf_(module.weight, std=0.02, low=-2.0, high=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _dinov2_init(module: nn.Module) -> None:
    # DINOv2's reference code uses PyTorch's own trunc_normal_ (same distribution as above).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _dino_blocks(
    input_dim: int, hidden_dim: int, bottleneck_dim: int, output_dim: int, batch_norm: bool
) -> list[Block]:
    """The MLP of DINO's and DINOv2's heads: 3 GELU layers down to ``bottleneck_dim``.

    ``output_dim`` (the prototypes, built by the head) is checked here too, with the rest.
    """
    _check_positive_int("bottleneck_dim", bottleneck_dim)
    _check_positive_int("output_dim", output_dim)
    return mlp_blocks(
        input_dim,
        hidden_dim,
        bottleneck_dim,
        num_layers=3,
        norm=nn.BatchNorm1d if batch_norm else None,
        activation=nn.GELU,
    )


class SwaVProjectionHead(ProjectionHead):
    """Projection head of SwAV (Caron et al., 2020, https://arxiv.org/abs/2006.09882).

    Linear -> batch norm -> ReLU -> linear.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> SwaVProjectionHead(512, 512, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128
    ) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class SwaVPrototypes(nn.Module):
    """Prototypes of SwAV (Caron et al., 2020, https://arxiv.org/abs/2006.09882).

    SwAV assigns the (L2-normalised) features of one view to prototypes and predicts that
    assignment from another view. Several sets of prototypes ("multi-head" SwAV) are
    supported by passing a list of sizes. The prototypes can be kept frozen for the first
    ``n_steps_frozen_prototypes`` steps; :meth:`forward` then needs the current ``step``.

    Args:
        input_dim: Features of the (normalised) projection.
        n_prototypes: Number of prototypes, or a list with one number per head.
        n_steps_frozen_prototypes: Steps during which the prototypes receive no gradient.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, n_prototypes), or a list of (B, n_prototypes[i]) for a list.

    Example:
        >>> prototypes = SwaVPrototypes(128, n_prototypes=512)
        >>> features = nn.functional.normalize(torch.randn(4, 128), dim=1)
        >>> prototypes(features).shape
        torch.Size([4, 512])
    """

    def __init__(
        self,
        input_dim: int = 128,
        n_prototypes: list[int] | int = 3000,
        n_steps_frozen_prototypes: int = 0,
    ) -> None:
        super().__init__()
        _check_positive_int("input_dim", input_dim)
        sizes = [n_prototypes] if isinstance(n_prototypes, int) else list(n_prototypes)
        if not sizes:
            raise ValueError("n_prototypes must be a positive integer or a non-empty list.")
        for size in sizes:
            _check_positive_int("n_prototypes", size)
        if (
            isinstance(n_steps_frozen_prototypes, bool)
            or not isinstance(n_steps_frozen_prototypes, int)
            or n_steps_frozen_prototypes < 0
        ):
            raise ValueError(
                "n_steps_frozen_prototypes must be an integer >= 0, "
                f"got {n_steps_frozen_prototypes!r}."
            )
        self.n_prototypes = sizes
        self._is_single_prototype = isinstance(n_prototypes, int)
        self.heads = nn.ModuleList(nn.Linear(input_dim, size) for size in sizes)
        self.n_steps_frozen_prototypes = n_steps_frozen_prototypes

    def forward(self, x: Tensor, step: int | None = None) -> Tensor | list[Tensor]:
        """Scores ``x`` of shape (B, input_dim) against every set of prototypes.

        Args:
            x: Normalised features of shape (B, input_dim).
            step: Current training step; required when ``n_steps_frozen_prototypes > 0``.

        Returns:
            Logits of shape (B, n_prototypes), or one such tensor per head for a list.
        """
        self._freeze_prototypes_if_required(step)
        logits = [head(x) for head in self.heads]
        return logits[0] if self._is_single_prototype else logits

    @torch.no_grad()
    def normalize(self) -> None:
        """Projects every prototype back onto the unit sphere (call after each update)."""
        for head in self.heads:
            weight = cast(nn.Linear, head).weight
            weight.div_(weight.norm(dim=1, keepdim=True))

    def _freeze_prototypes_if_required(self, step: int | None) -> None:
        if self.n_steps_frozen_prototypes > 0:
            if step is None:
                raise ValueError(
                    f"n_steps_frozen_prototypes is {self.n_steps_frozen_prototypes} > 0: "
                    "pass the current training step as forward(x, step=...)."
                )
            self.requires_grad_(step >= self.n_steps_frozen_prototypes)


class DINOProjectionHead(ProjectionHead):
    """Projection head of DINO (Caron et al., 2021, https://arxiv.org/abs/2104.14294).

    A 3-layer MLP with GELU (hidden ``hidden_dim``, output ``bottleneck_dim``), then L2
    normalisation and a weight-normalised linear layer with ``output_dim`` prototypes, as in
    SwAV. The MLP is initialised with a truncated normal (std 0.02) and zero biases. With
    ``norm_last_layer`` the scale ``weight_g`` of the last layer stays fixed at 1, so the
    prototypes keep unit norm. The last layer can be frozen for the first
    ``freeze_last_layer`` epochs with :meth:`cancel_last_layer_gradients`.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        bottleneck_dim: Features before the last layer.
        output_dim: Number of prototypes (K).
        batch_norm: Whether the hidden layers use batch norm (False for ViT backbones).
        freeze_last_layer: Epochs during which the last layer receives no update.
        norm_last_layer: Whether the last layer's scale ``weight_g`` is frozen at 1.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> head = DINOProjectionHead(384, 512, 64, 1024, freeze_last_layer=1)
        >>> head(torch.randn(4, 384)).shape
        torch.Size([4, 1024])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
        freeze_last_layer: int = -1,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__(
            _dino_blocks(input_dim, hidden_dim, bottleneck_dim, output_dim, batch_norm)
        )
        self.apply(_dino_init)
        self.freeze_last_layer = freeze_last_layer
        self.last_layer = WeightNormLinear(bottleneck_dim, output_dim, bias=False)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)

    def cancel_last_layer_gradients(self, current_epoch: int) -> None:
        """Drops the last layer's gradients while ``current_epoch < freeze_last_layer``.

        Call it between ``backward()`` and ``optimizer.step()``: the optimizer then skips
        the last layer (no update, no momentum or weight decay either).
        """
        if current_epoch < self.freeze_last_layer:
            for param in self.last_layer.parameters():
                param.grad = None

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``x`` of shape (B, input_dim) to prototype logits of shape (B, output_dim)."""
        out: Tensor = self.last_layer(_l2_normalize(self.layers(x)))
        return out


class DINOv2ProjectionHead(ProjectionHead):
    """Projection head of DINOv2 (Oquab et al., 2023, https://arxiv.org/abs/2304.07193).

    DINO's head (3-layer GELU MLP, L2 normalisation, weight-normalised prototypes with
    ``weight_g`` initialised to 1), but the scale ``weight_g`` stays trainable.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layers.
        bottleneck_dim: Features before the last layer.
        output_dim: Number of prototypes.
        batch_norm: Whether the hidden layers use batch norm.

    Shapes:
        - Input: (B, input_dim) or (B, N, input_dim) without batch norm.
        - Output: (B, output_dim) or (B, N, output_dim).

    Example:
        >>> DINOv2ProjectionHead(384, 512, 64, 1024)(torch.randn(4, 384)).shape
        torch.Size([4, 1024])
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            _dino_blocks(input_dim, hidden_dim, bottleneck_dim, output_dim, batch_norm)
        )
        self.apply(_dinov2_init)
        self.last_layer = WeightNormLinear(bottleneck_dim, output_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``x`` of shape (..., input_dim) to prototype logits (..., output_dim)."""
        out: Tensor = self.last_layer(_l2_normalize(self.layers(x)))
        return out


class MSNProjectionHead(ProjectionHead):
    """Projection head of MSN (Assran et al., 2022, https://arxiv.org/abs/2204.07141).

    A 3-layer MLP with batch norm and GELU after the input and hidden layers; output 256.
    The same head serves PMSN (https://arxiv.org/abs/2210.07277).

    Args:
        input_dim: Features of the backbone output (768 for ViT-B).
        hidden_dim: Width of the hidden layers.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> MSNProjectionHead(384, 512, 256)(torch.randn(4, 384)).shape
        torch.Size([4, 256])
    """

    def __init__(self, input_dim: int = 768, hidden_dim: int = 2048, output_dim: int = 256) -> None:
        super().__init__(
            mlp_blocks(input_dim, hidden_dim, output_dim, num_layers=3, activation=nn.GELU)
        )


class SMoGProjectionHead(ProjectionHead):
    """Projection head of SMoG (Pang et al., 2022, https://arxiv.org/abs/2207.06167).

    Linear -> batch norm -> ReLU -> linear -> batch norm without affine parameters.

    Args:
        input_dim: Features of the backbone output.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the projection.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> SMoGProjectionHead(512, 512, 128)(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128
    ) -> None:
        super().__init__(
            mlp_blocks(
                input_dim,
                hidden_dim,
                output_dim,
                output_norm=nn.BatchNorm1d(output_dim, affine=False),
            )
        )


class SMoGPredictionHead(ProjectionHead):
    """Prediction head of SMoG (Pang et al., 2022, https://arxiv.org/abs/2207.06167).

    Linear -> batch norm -> ReLU -> linear.

    Args:
        input_dim: Features of the projection.
        hidden_dim: Width of the hidden layer.
        output_dim: Features of the prediction.

    Shapes:
        - Input: (B, input_dim).
        - Output: (B, output_dim).

    Example:
        >>> SMoGPredictionHead(128, 512, 128)(torch.randn(4, 128)).shape
        torch.Size([4, 128])
    """

    def __init__(self, input_dim: int = 128, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class SMoGPrototypes(nn.Module):
    """Group features of SMoG (Pang et al., 2022, https://arxiv.org/abs/2207.06167).

    SMoG contrasts samples against group features that follow the samples assigned to
    them with a momentum ``beta``. The group features are a non-trainable parameter (so
    they move with the module across devices and into checkpoints).

    Args:
        group_features: Initial group features of shape (n_groups, dim).
        beta: Momentum of the group update, in [0, 1].

    Example:
        >>> prototypes = SMoGPrototypes(torch.randn(10, 16), beta=0.99)
        >>> x = torch.randn(32, 16)
        >>> prototypes(x, prototypes.group_features).shape
        torch.Size([32, 10])
        >>> prototypes.set_group_features(prototypes.get_updated_group_features(x))
    """

    def __init__(self, group_features: Tensor, beta: float) -> None:
        super().__init__()
        if group_features.ndim != 2:
            raise ValueError(
                "group_features must have shape (n_groups, dim), "
                f"got shape {tuple(group_features.shape)}."
            )
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}.")
        self.group_features = nn.Parameter(group_features, requires_grad=False)
        self.beta = beta

    def forward(self, x: Tensor, group_features: Tensor, temperature: float = 0.1) -> Tensor:
        """Cosine similarities of ``x`` (B, dim) to ``group_features`` (G, dim) / temperature.

        Returns:
            Logits of shape (B, G).
        """
        return _l2_normalize(x) @ _l2_normalize(group_features).t() / temperature

    def get_updated_group_features(self, x: Tensor) -> Tensor:
        """Momentum update of every group towards the mean of the samples assigned to it.

        Groups without samples keep their features. One scatter-add replaces a Python loop
        over groups (which would synchronise with the GPU once per group).

        Args:
            x: Features of shape (B, dim).

        Returns:
            The updated group features of shape (G, dim).
        """
        old = self.group_features.detach()
        assignments = self.assign_groups(x)
        sums = torch.zeros_like(old).index_add(0, assignments, x.to(old.dtype))
        counts = torch.bincount(assignments, minlength=old.shape[0]).unsqueeze(1)
        means = sums / counts.clamp_min(1).to(old.dtype)
        return torch.where(counts > 0, self.beta * old + (1.0 - self.beta) * means, old)

    def set_group_features(self, x: Tensor) -> None:
        """Replaces the group features by ``x`` of shape (G, dim), on this module's device."""
        self.group_features.data = x.to(self.group_features.device)

    @torch.no_grad()
    def assign_groups(self, x: Tensor) -> Tensor:
        """Index of the most similar group for every row of ``x`` (B, dim); shape (B,)."""
        return self.forward(x, self.group_features).argmax(dim=-1)


class CAPIProjectionHead(nn.Module):
    """Projection head of CAPI (Darcet et al., 2025, https://arxiv.org/abs/2502.08769).

    L2-normalises the features and projects them with one linear layer whose rows are the
    cluster prototypes. With ``weight_norm`` (the student head) the prototypes are weight
    normalised with a scale fixed at 1, i.e. kept at unit norm.

    Args:
        input_dim: Features of the input.
        num_clusters: Number of clusters (prototypes).
        bias: Whether the linear layer has a bias.
        weight_norm: Whether the prototypes are weight normalised to unit norm.

    Shapes:
        - Input: (..., input_dim).
        - Output: (..., num_clusters).

    Example:
        >>> head = CAPIProjectionHead(input_dim=384, num_clusters=1024)
        >>> head(torch.randn(2, 49, 384)).shape
        torch.Size([2, 49, 1024])
    """

    def __init__(
        self,
        input_dim: int = 384,
        num_clusters: int = 16384,
        bias: bool = False,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int("input_dim", input_dim)
        _check_positive_int("num_clusters", num_clusters)
        self.layer: nn.Module
        if weight_norm:
            self.layer = WeightNormLinear(input_dim, num_clusters, bias=bias)
            self.layer.weight_g.requires_grad_(False)
        else:
            self.layer = nn.Linear(input_dim, num_clusters, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps features (..., input_dim) to cluster logits (..., num_clusters)."""
        logits: Tensor = self.layer(_l2_normalize(x))
        return logits
