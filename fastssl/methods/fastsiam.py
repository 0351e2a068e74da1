"""FastSiam: SimSiam with a target averaged over several views.

- Pototzky, Sultan & Schmidt-Thieme 2022, "FastSiam: Resource-Efficient Self-supervised
  Learning on a Single GPU", DAGM GCPR 2022 (LNCS 13485),
  https://doi.org/10.1007/978-3-031-16788-1_4 (no arXiv version)

SimSiam predicts the projection of one other view, a noisy target at small batch sizes.
FastSiam takes ``K + 1`` views of every image and predicts, from each view, the mean
projection of the ``K`` others (stop-gradient), which stabilises training on one GPU.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = FastSiam(backbone="resnet18", input_size=32, proj_hidden_dim=32,
    ...                  pred_hidden_dim=8, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32) for _ in range(4)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastssl.methods._common import FIRST_STEP, check_count
from fastssl.methods.base import StepInfo, build_views
from fastssl.methods.simsiam import SimSiam
from fastssl.transforms.fast_siam_transform import FastSiamTransform


class FastSiam(SimSiam):
    """FastSiam (Pototzky et al. 2022, https://doi.org/10.1007/978-3-031-16788-1_4).

    SimSiam's networks, optimizer and stop-gradient (:class:`~fastssl.methods.simsiam.SimSiam`)
    with ``n = num_views`` views: with ``z_j`` the projections and ``p_i`` the predictions,
    ``loss = 1/n * sum_i ncs(p_i, mean_{j != i} z_j.detach())`` (``ncs``: negative cosine
    similarity), as LightlySSL's FastSiam example. Every view goes through the network on
    its own (batch norm per view), as in SimSiam.

    Defaults: SimSiam's (projector 2048-2048-2048, predictor 2048-512-2048, SGD lr
    0.05 x B/256, weight decay 1e-4, fixed predictor lr) with 4 views (K = 3 targets).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        proj_hidden_dim: Hidden width of the projector.
        pred_hidden_dim: Bottleneck width of the predictor.
        output_dim: Output width of the projector and the predictor.
        num_views: Views per image of the default transform (K + 1), at least 2.

    Shapes:
        ``training_step`` views: ``num_views`` tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "fastsiam"

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        proj_hidden_dim: int = 2048,
        pred_hidden_dim: int = 512,
        output_dim: int = 2048,
        num_views: int = 4,
    ) -> None:
        check_count("num_views", num_views, 2)
        super().__init__(
            backbone,
            input_size,
            feature_dim,
            proj_hidden_dim=proj_hidden_dim,
            pred_hidden_dim=pred_hidden_dim,
            output_dim=output_dim,
        )
        self.num_views = num_views

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """FastSiam loss: every view predicts the mean projection of the other views."""
        n = len(views)
        if n < 2:
            raise ValueError(f"FastSiam needs at least 2 views per batch, got {n}.")
        z = [self.project(view) for view in views]
        p = [self.prediction_head(z_i) for z_i in z]
        # The target of view i is the mean of the other projections, without gradient.
        stacked = torch.stack(z).detach()  # (n, B, D)
        targets = (stacked.sum(dim=0, keepdim=True) - stacked) / (n - 1)
        losses = [self.criterion(p_i, target) for p_i, target in zip(p, targets, strict=True)]
        loss: Tensor = torch.stack(losses).mean()
        return loss

    def default_transform(self, **views: Any) -> FastSiamTransform:  # type: ignore[override]
        """``num_views`` SimSiam views at ``input_size``."""
        return build_views(
            FastSiamTransform,
            views,
            {"input_size": self.input_size, "num_views": self.num_views},
        )
