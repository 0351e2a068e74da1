"""DirectCLR: contrastive learning on a sub-vector of the representation, no projector.

- Jing et al. 2022, "Understanding Dimensional Collapse in Contrastive Self-supervised
  Learning", https://arxiv.org/abs/2110.09348

A projector lets contrastive learning collapse the representation to few dimensions.
DirectCLR drops it and applies the InfoNCE loss directly to the first ``loss_dim``
features of the backbone output, which keeps the representation itself full-rank.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = DirectCLR(backbone="resnet18", input_size=32, loss_dim=64)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fastssl.loss.directclr_loss import DirectCLRLoss
from fastssl.methods._common import TwoViewMethod, check_count
from fastssl.methods.base import OptimizerDefaults, build_view_pair
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)


class DirectCLR(TwoViewMethod):
    """DirectCLR (Jing et al. 2022, https://arxiv.org/abs/2110.09348).

    ``loss = DirectCLRLoss(backbone(view0), backbone(view1))``: the NT-Xent loss of SimCLR
    on the first ``loss_dim`` backbone features of the two views (no projection head; the
    projection is the identity). With ``gather_distributed`` (the default) the negatives
    come from every process, as in the reference code.

    Defaults are the reference code's ImageNet run (ResNet-50, ``--mode directclr``):
    ``loss_dim`` 360, temperature 0.1, LARS with lr 4.8 at batch 4096 (0.3 x B/256),
    weight decay 1e-6, 10 warm-up epochs, and its views, BYOL's asymmetric pair.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        loss_dim: Leading backbone features the loss sees; at most D.
        temperature: NT-Xent temperature.
        gather_distributed: Use the views of all processes as negatives.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "directclr"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.3, weight_decay=1e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        loss_dim: int = 360,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        check_count("loss_dim", loss_dim, 1)
        if abs(temperature) < 1e-8:
            raise ValueError(f"'temperature' must be non-zero, got temperature={temperature!r}.")
        super().__init__(backbone, input_size, feature_dim)
        if loss_dim > self.feature_dim:
            raise ValueError(
                f"'loss_dim' must be at most the backbone's feature dimension "
                f"{self.feature_dim}, got loss_dim={loss_dim}."
            )
        self.loss_dim = loss_dim
        self.projection_head = nn.Identity()  # DirectCLR has no projector
        self.criterion = DirectCLRLoss(
            loss_dim=loss_dim, temperature=temperature, gather_distributed=gather_distributed
        )

    def default_transform(self, **views: Any) -> BYOLTransform:
        """The reference code's views: BYOL's asymmetric pair (blur 1.0 / 0.1, solarization
        0.0 / 0.2) at ``input_size``."""
        return build_view_pair(
            BYOLTransform, BYOLView1Transform, BYOLView2Transform, views, self.input_size
        )
