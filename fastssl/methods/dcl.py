"""DCL and DCLW: decoupled contrastive learning.

- Yeh et al. 2022, "Decoupled Contrastive Learning", https://arxiv.org/abs/2110.06848

SimCLR with the positive pair removed from the denominator of the contrastive loss, which
removes the coupling between positive and negative gradients that makes SimCLR need large
batches. DCLW additionally weights the positive term by a negative von Mises-Fisher
weight, so harder positives count more.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = DCLW(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fastssl.loss.dcl_loss import DCLLoss, DCLWLoss
from fastssl.methods._common import TwoViewMethod, check_count, check_dims
from fastssl.methods.base import OptimizerDefaults, build_views
from fastssl.models.modules.heads.contrastive import SimCLRProjectionHead
from fastssl.transforms.simclr_transform import SimCLRTransform

#: SimCLR's large-batch optimizer, which the paper keeps when comparing with SimCLR.
_DCL_OPTIMIZER = OptimizerDefaults.lars(lr=0.3, weight_decay=1e-6)


class DCL(TwoViewMethod):
    """DCL (Yeh et al. 2022, https://arxiv.org/abs/2110.06848).

    ``loss = DCLLoss(head(backbone(view0)), head(backbone(view1)))``, the two views
    forwarded together as in SimCLR; with ``gather_distributed`` (the default) the
    negatives are the views of all processes.

    Defaults follow the paper, which reuses SimCLR's ImageNet setting: projection head
    2048-2048-128 with batch norm, temperature 0.1, LARS with lr 0.3 x B/256, weight decay
    1e-6, 10 warm-up epochs, SimCLR's views.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Output width of the projection head.
        num_layers: Linear layers of the projection head.
        temperature: Similarities are divided by it.
        gather_distributed: Use the views of all processes as negatives.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "dcl"
    joint_forward: ClassVar[bool] = True
    optimizer_defaults: ClassVar[OptimizerDefaults] = _DCL_OPTIMIZER

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("num_layers", num_layers, 2)
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers
        )
        self.criterion: DCLLoss = DCLLoss(
            temperature=temperature, gather_distributed=gather_distributed
        )

    def default_transform(self, **views: Any) -> SimCLRTransform:
        """SimCLR's two views at ``input_size``."""
        return build_views(SimCLRTransform, views, {"input_size": self.input_size})


class DCLW(DCL):
    """DCLW (Yeh et al. 2022, https://arxiv.org/abs/2110.06848): DCL with the positive term
    weighted by a negative von Mises-Fisher weight of concentration ``1 / sigma``.

    Same defaults as :class:`DCL`, plus ``sigma`` 0.5 (the paper's).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Output width of the projection head.
        num_layers: Linear layers of the projection head.
        temperature: Similarities are divided by it.
        sigma: Similarities in the positive weighting are divided by it.
        gather_distributed: Use the views of all processes as negatives.
    """

    name: ClassVar[str] = "dclw"

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        temperature: float = 0.1,
        sigma: float = 0.5,
        gather_distributed: bool = True,
    ) -> None:
        # Built first so that a bad sigma fails before the backbone is built.
        criterion = DCLWLoss(
            temperature=temperature, sigma=sigma, gather_distributed=gather_distributed
        )
        super().__init__(
            backbone,
            input_size,
            feature_dim,
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            num_layers=num_layers,
            temperature=temperature,
            gather_distributed=gather_distributed,
        )
        self.criterion = criterion
