"""VICReg: variance-invariance-covariance regularisation.

- Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for
  Self-Supervised Learning", https://arxiv.org/abs/2105.04906

The embeddings of two views are pulled together (invariance) while each embedding
dimension keeps a standard deviation of at least 1 over the batch (variance) and different
dimensions are decorrelated (covariance).

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = VICReg(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=32)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fastssl.loss.vicreg_loss import VICRegLoss
from fastssl.methods._common import TwoViewMethod, check_count, check_dims
from fastssl.methods.base import OptimizerDefaults, build_views
from fastssl.models.modules.heads.redundancy import VICRegProjectionHead
from fastssl.transforms.vicreg_transform import VICRegTransform


class VICReg(TwoViewMethod):
    """VICReg (Bardes et al. 2022, https://arxiv.org/abs/2105.04906).

    ``loss = VICRegLoss(head(backbone(view0)), head(backbone(view1)))``; with
    ``gather_distributed`` (the default) the variance and covariance terms use the
    embeddings of every process, as the reference code does.

    Defaults are the paper's: expander 8192-8192-8192 (3 layers), coefficients
    lambda = mu = 25 (invariance, variance) and nu = 1 (covariance), LARS with lr
    0.2 x B/256, weight decay 1e-6, 10 warm-up epochs.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the expander.
        output_dim: Output width of the expander.
        num_layers: Linear layers of the expander.
        lambda_param: Weight of the invariance term.
        mu_param: Weight of the variance term.
        nu_param: Weight of the covariance term.
        gather_distributed: Variance and covariance over the batches of all processes.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "vicreg"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        num_layers: int = 3,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("num_layers", num_layers, 2)
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = VICRegProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers
        )
        self.criterion = VICRegLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            gather_distributed=gather_distributed,
        )

    def default_transform(self, **views: Any) -> VICRegTransform:
        """VICReg's two views at ``input_size``."""
        return build_views(VICRegTransform, views, {"input_size": self.input_size})
