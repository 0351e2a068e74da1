"""W-MSE: whitening mean squared error.

- Ermolov et al. 2021, "Whitening for Self-Supervised Representation Learning",
  https://arxiv.org/abs/2007.06346

The embeddings of every view are whitened over sub-batches (zero mean, identity
covariance), which scatters them and rules out collapse without negatives or asymmetric
networks; the loss is then the mean squared error between the normalised whitened
embeddings of all pairs of views of an image.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = WMSE(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=4,
    ...              w_size=8, num_views=2)
    >>> views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastssl.loss.wmse_loss import WMSELoss
from fastssl.methods._common import FIRST_STEP, check_count, check_dims
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.base import ProjectionHead, mlp_blocks
from fastssl.transforms.wmse_transform import WMSETransform


class WMSE(Method):
    """W-MSE (Ermolov et al. 2021, https://arxiv.org/abs/2007.06346).

    The backbone embeds one view at a time and the projector all views as one batch (the
    reference code's ``head(cat([backbone(view) for view in views]))``);
    :class:`~fastssl.loss.wmse_loss.WMSELoss` whitens each view's embeddings in random
    sub-batches of ``w_size`` images (``w_iter`` times) and averages ``2 - 2 cos`` over all
    pairs of views. The per-process batch must be a multiple of ``w_size``.

    Defaults are "W-MSE 4" of the paper and its reference code for the larger datasets
    (STL-10, Tiny ImageNet): 4 views, projector 1024 (batch norm, ReLU) -> 128, whitening
    sub-batches of 256, one iteration, Adam-style optimizer with lr 2e-3 at batch 256 and
    weight decay 1e-6 (``adamw`` here).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Width of the projector's hidden layers.
        output_dim: Embedding size (whitened dimension); at most ``w_size / 2``.
        num_layers: Linear layers of the projector.
        num_views: Views per image (the paper's ``d``), at least 2.
        w_size: Images per whitened sub-batch.
        w_iter: Whitening iterations (new random sub-batches each).
        eps: Shrinkage of the sub-batch covariance towards the identity.

    Shapes:
        ``training_step`` views: ``num_views`` tensors (B, 3, input_size, input_size) with B
        a multiple of ``w_size``; ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "wmse"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=2e-3,
        reference_batch_size=256,
        lr_scaling="sqrt",
        weight_decay=1e-6,
        warmup_epochs=0,  # the reference code warms up for 500 steps (see the recipe)
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 1024,
        output_dim: int = 128,
        num_layers: int = 2,
        num_views: int = 4,
        w_size: int = 256,
        w_iter: int = 1,
        eps: float = 0.0,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim, w_size=w_size, w_iter=w_iter)
        check_count("num_layers", num_layers, 2)
        check_count("num_views", num_views, 2)
        if 2 * output_dim > w_size:
            raise ValueError(
                f"'w_size' must be at least 2 * output_dim for a stable whitening, got "
                f"w_size={w_size} and output_dim={output_dim}."
            )
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"'eps' must be in [0, 1], got eps={eps!r}.")
        super().__init__(backbone, input_size, feature_dim)
        self.num_views = num_views
        self.projection_head = ProjectionHead(
            mlp_blocks(self.feature_dim, hidden_dim, output_dim, num_layers=num_layers)
        )
        self.criterion = WMSELoss(
            embedding_dim=output_dim,
            eps=eps,
            w_iter=w_iter,
            w_size=w_size,
            num_samples=num_views,
        )

    def project(self, images: Tensor) -> Tensor:
        """Embeddings (B, output_dim) of images (B, 3, H, W), before whitening."""
        out: Tensor = self.projection_head(self(images))
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """W-MSE loss of the ``num_views`` views of a batch."""
        if len(views) != self.num_views:
            raise ValueError(
                f"WMSE(num_views={self.num_views}) needs {self.num_views} views per batch, "
                f"got {len(views)}."
            )
        # As the reference code: the backbone sees one view at a time, the projector all of
        # them at once; rows are view 0 of every image, then view 1, ...
        features = torch.cat([self(view) for view in views])
        z = self.projection_head(features)
        # In float32, outside autocast: the Cholesky whitening has no half-precision kernels.
        with torch.autocast(z.device.type, enabled=False):
            loss: Tensor = self.criterion(z.float())
        return loss

    def default_transform(self, **views: Any) -> WMSETransform:
        """``num_views`` W-MSE views at ``input_size``."""
        return build_views(
            WMSETransform,
            views,
            {"input_size": self.input_size, "num_samples": self.num_views},
        )
