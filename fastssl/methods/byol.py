"""BYOL: bootstrap your own latent.

- Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
  Learning", https://arxiv.org/abs/2006.07733

An online network (backbone, projector, predictor) predicts the projection that a target
network, an exponential moving average (EMA) of the online backbone and projector, gives
to the other view. No negatives: the predictor and the slowly moving target avoid collapse.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = BYOL(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastssl.loss.negative_cosine_similarity import NegativeCosineSimilarity
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_dims,
    check_momentum,
    embed,
    two_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_view_pair
from fastssl.models.modules.heads.siamese import BYOLPredictionHead, BYOLProjectionHead
from fastssl.models.utils import momentum_copy
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)


class BYOL(EMAMethod):
    """BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733).

    Each step first moves the target towards the online network,
    ``target = tau * target + (1 - tau) * online``, with ``tau`` following a cosine from
    ``momentum_start`` to ``momentum_end`` over the run's optimizer steps, then computes the
    paper's symmetrised loss ``(2 - 2 cos(p0, t1)) + (2 - 2 cos(p1, t0))`` (batch means)
    where ``p`` are online predictions and ``t`` target projections (no gradient); its
    gradients are those of lightly's ``2 x NegativeCosineSimilarity`` per direction.

    Defaults are the paper's: projector and predictor 4096-256 with batch norm, tau
    0.996 -> 1, LARS with lr 0.2 x B/256, weight decay 1.5e-6, 10 warm-up epochs,
    BYOL's asymmetric views.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projector and the predictor.
        output_dim: Output width of the projector and the predictor.
        momentum_start: tau at the first step.
        momentum_end: tau at the last step.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "byol"
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
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_momentum(momentum_start, momentum_end)
        super().__init__(backbone, input_size, feature_dim)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.projection_head = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def online(self, images: Tensor) -> Tensor:
        """Online predictions (B, output_dim)."""
        out: Tensor = self.prediction_head(self.projection_head(self(images)))
        return out

    @torch.no_grad()
    def target(self, images: Tensor) -> Tensor:
        """Target projections (B, output_dim), without gradient."""
        return embed(self.backbone_momentum, self.projection_head_momentum, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """The paper's symmetrised loss: ``sum over both directions of 2 - 2 cos(q, z')``.

        Equation 2 of the paper, ``||q/|q| - z'/|z'|||^2 = 2 - 2 cos``, averaged over the
        batch and summed over the two directions (its ``L + L~``): in ``[0, 8]``, with
        the gradients of lightly's benchmark loss (``2 x NegativeCosineSimilarity`` per
        direction), so LARS's weight decay and the biases (outside its trust ratio) get
        the paper's step sizes.
        """
        x0, x1 = two_views("BYOL", views)
        self.update_ema(info)
        p0, p1 = self.online(x0), self.online(x1)
        t0, t1 = self.target(x0), self.target(x1)
        # criterion = -mean(cos), so 2 - 2 cos = 2 + 2 * criterion per direction.
        loss: Tensor = 4.0 + 2.0 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return loss

    def default_transform(self, **views: Any) -> BYOLTransform:
        """BYOL's asymmetric views (blur 1.0 / 0.1, solarization 0.0 / 0.2)."""
        return build_view_pair(
            BYOLTransform, BYOLView1Transform, BYOLView2Transform, views, self.input_size
        )

    def trainable_modules(self) -> list[nn.Module]:
        """The online backbone, projector and predictor (the target is an EMA)."""
        return [self.backbone, self.projection_head, self.prediction_head]
