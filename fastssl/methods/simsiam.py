"""SimSiam: simple Siamese networks.

- Chen & He 2021, "Exploring Simple Siamese Representation Learning",
  https://arxiv.org/abs/2011.10566

One network (backbone, projector) sees both views; a predictor maps the projection of
one view to that of the other, whose projection is treated as a constant (stop-gradient).
No negatives, no momentum encoder: the stop-gradient alone prevents collapse.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = SimSiam(backbone="resnet18", input_size=32, proj_hidden_dim=32,
    ...                 pred_hidden_dim=8, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from fastssl.loss.negative_cosine_similarity import NegativeCosineSimilarity
from fastssl.methods._common import FIRST_STEP, TwoViewMethod, check_dims
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.siamese import SimSiamPredictionHead, SimSiamProjectionHead
from fastssl.transforms.simsiam_transform import SimSiamTransform


class SimSiam(TwoViewMethod):
    """SimSiam (Chen & He 2021, https://arxiv.org/abs/2011.10566).

    ``loss = 0.5 * (ncs(p0, z1.detach()) + ncs(p1, z0.detach()))`` with ``z`` the
    projections, ``p`` the predictions and ``ncs`` the negative cosine similarity (the
    paper's Algorithm 1).

    Defaults are the paper's: projector 2048-2048-2048 (3 layers, batch norm), predictor
    2048-512-2048, SGD with lr 0.05 x B/256 (linear scaling), momentum 0.9, weight decay
    1e-4, no warm-up (the paper's batch 512; the predictor keeps a fixed lr in the paper,
    noted in ``optimizer_defaults.extra``).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        proj_hidden_dim: Hidden width of the projector.
        pred_hidden_dim: Bottleneck width of the predictor.
        output_dim: Output width of the projector and the predictor.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "simsiam"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="sgd",
        lr=0.05,
        reference_batch_size=256,
        lr_scaling="linear",
        weight_decay=1e-4,
        momentum=0.9,
        warmup_epochs=0,
        # Paper, sec. 4.1: the predictor's lr is not decayed (cosine schedule elsewhere);
        # the engine applies it through predictor_modules().
        extra={"fix_predictor_lr": True},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        proj_hidden_dim: int = 2048,
        pred_hidden_dim: int = 512,
        output_dim: int = 2048,
    ) -> None:
        check_dims(
            proj_hidden_dim=proj_hidden_dim, pred_hidden_dim=pred_hidden_dim, output_dim=output_dim
        )
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = SimSiamProjectionHead(self.feature_dim, proj_hidden_dim, output_dim)
        self.prediction_head = SimSiamPredictionHead(output_dim, pred_hidden_dim, output_dim)
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """Symmetric SimSiam loss of the two views."""
        z0, z1 = self.projections(views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        # The stop-gradient on z is what keeps SimSiam from collapsing (paper, sec. 4.1).
        loss: Tensor = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        return loss

    def predictor_modules(self) -> list[nn.Module]:
        """The prediction head, which keeps a fixed learning rate (paper, sec. 4.1)."""
        return [self.prediction_head]

    def default_transform(self, **views: Any) -> SimSiamTransform:
        """SimSiam's two views at ``input_size``."""
        return build_views(SimSiamTransform, views, {"input_size": self.input_size})
