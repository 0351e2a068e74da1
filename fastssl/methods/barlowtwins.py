"""Barlow Twins: redundancy reduction.

- Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
  https://arxiv.org/abs/2103.03230

The cross-correlation matrix of the (batch-standardised) projections of two views is
pushed towards the identity: diagonal terms make the projection invariant to the
augmentations, off-diagonal terms decorrelate its features.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = BarlowTwins(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=32)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fastssl.loss.barlow_twins_loss import BarlowTwinsLoss
from fastssl.methods._common import TwoViewMethod, check_dims
from fastssl.methods.base import OptimizerDefaults, build_view_pair
from fastssl.models.modules.heads.redundancy import BarlowTwinsProjectionHead
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)


class BarlowTwins(TwoViewMethod):
    """Barlow Twins (Zbontar et al. 2021, https://arxiv.org/abs/2103.03230).

    ``loss = BarlowTwinsLoss(head(backbone(view0)), head(backbone(view1)))``; with
    ``gather_distributed`` (the default) the cross-correlation is taken over the global
    batch, as the reference code does with an all-reduce.

    Defaults are the paper's: projector 8192-8192-8192, lambda 5e-3 (the reference code
    uses 0.0051), LARS with lr 0.2 x B/256 for the weights and 0.0048 x B/256 for biases
    and batch-norm parameters (``optimizer_defaults.extra["lr_biases"]``), weight decay
    1.5e-6, 10 warm-up epochs, BYOL's asymmetric views (the paper's augmentations).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projector.
        output_dim: Output width of the projector.
        lambda_param: Weight of the off-diagonal (redundancy reduction) term.
        gather_distributed: Cross-correlation over the batches of all processes.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "barlowtwins"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1.5e-6, lr_biases=0.0048
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        lambda_param: float = 5e-3,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = BarlowTwinsProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion = BarlowTwinsLoss(
            lambda_param=lambda_param, gather_distributed=gather_distributed
        )

    def default_transform(self, **views: Any) -> BYOLTransform:
        """BYOL's asymmetric views, which the paper uses."""
        return build_view_pair(
            BYOLTransform, BYOLView1Transform, BYOLView2Transform, views, self.input_size
        )
