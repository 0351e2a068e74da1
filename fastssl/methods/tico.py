"""TiCo: transformation invariance and covariance contrast.

- Zhu et al. 2022, "TiCo: Transformation Invariance and Covariance Contrast for
  Self-Supervised Visual Representation Learning", https://arxiv.org/abs/2206.10698

The online embedding of one view is pulled towards the momentum-encoder embedding of the
other view, and pushed away from the principal directions of a running covariance matrix
of past embeddings (an implicit memory bank of unlimited size).

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = TiCo(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastssl.loss.tico_loss import TiCoLoss
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_dims,
    check_momentum,
    embed,
    two_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_view_pair
from fastssl.models.modules.heads.siamese import TiCoProjectionHead
from fastssl.models.utils import momentum_copy
from fastssl.transforms.tico_transform import TiCoTransform, TiCoView1Transform, TiCoView2Transform


class TiCo(EMAMethod):
    """TiCo (Zhu et al. 2022, https://arxiv.org/abs/2206.10698).

    Structured as LightlySSL's TiCo example: each step first moves the momentum encoder,
    ``ema = m * ema + (1 - m) * online`` with ``m`` a cosine from ``momentum_start`` to
    ``momentum_end`` over the run's optimizer steps, then computes
    ``TiCoLoss(head(backbone(view0)), head_m(backbone_m(view1)))``. The loss's running
    covariance only moves in training mode.

    Defaults: projector 4096-256 (BYOL's, as in the paper), beta 0.9, rho 8, momentum
    0.996 -> 1, BYOL's asymmetric views; the optimizer is BYOL's recipe, which the paper
    follows (LARS, lr 0.2 x B/256, weight decay 1.5e-6, 10 warm-up epochs).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projector.
        output_dim: Output width of the projector.
        beta: EMA coefficient of the loss's covariance matrix.
        rho: Weight of the covariance contrast term.
        momentum_start: Momentum of the encoder EMA at the first step.
        momentum_end: Momentum of the encoder EMA at the last step.
        gather_distributed: Compute the loss over the batches of all processes.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "tico"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head", "projection_head_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1.5e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        beta: float = 0.9,
        rho: float = 8.0,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_momentum(momentum_start, momentum_end)
        super().__init__(backbone, input_size, feature_dim)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.projection_head = TiCoProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = TiCoLoss(beta=beta, rho=rho, gather_distributed=gather_distributed)

    @torch.no_grad()
    def forward_momentum(self, images: Tensor) -> Tensor:
        """Momentum-encoder embeddings (B, output_dim), without gradient."""
        return embed(self.backbone_momentum, self.projection_head_momentum, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """TiCo loss: online embedding of view 0 against the momentum embedding of view 1."""
        x0, x1 = two_views("TiCo", views)
        self.update_ema(info)
        z0 = self.projection_head(self(x0))
        z1 = self.forward_momentum(x1)
        loss: Tensor = self.criterion(z0, z1, update_covariance_matrix=self.training)
        return loss

    def default_transform(self, **views: Any) -> TiCoTransform:
        """TiCo's (BYOL's) asymmetric views at ``input_size``."""
        return build_view_pair(
            TiCoTransform, TiCoView1Transform, TiCoView2Transform, views, self.input_size
        )

    def trainable_modules(self) -> list[nn.Module]:
        """The online backbone and projector (the momentum encoder is an EMA)."""
        return [self.backbone, self.projection_head]
