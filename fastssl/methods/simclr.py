"""SimCLR: contrastive learning of visual representations.

- Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
  https://arxiv.org/abs/2002.05709

Two augmented views of every image go through the same backbone and projection head; the
NT-Xent loss pulls each pair together and pushes it away from the other ``2B - 2`` views of
the (global) batch.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = SimCLR(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods._common import TwoViewMethod, check_count, check_dims
from fastssl.methods.base import OptimizerDefaults, build_views
from fastssl.models.modules.heads.contrastive import SimCLRProjectionHead
from fastssl.transforms.simclr_transform import SimCLRTransform


class SimCLR(TwoViewMethod):
    """SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709).

    ``loss = NTXentLoss(head(backbone(view0)), head(backbone(view1)))``; with
    ``gather_distributed`` (the default) the negatives are the views of every process, as
    in the paper's large-batch TPU training; in a single process it is a no-op.

    Defaults are the paper's ImageNet recipe (batch 4096): projection head
    2048-2048-128 with batch norm (the reference code's head), temperature 0.1, LARS with
    lr 0.3 x B/256 (linear scaling; the paper's alternative, 0.075 x sqrt(B), is in
    ``optimizer_defaults.extra``), weight decay 1e-6, 10 warm-up epochs.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Output width of the projection head.
        num_layers: Linear layers of the projection head (2: SimCLR v1, 3: SimCLR v2).
        batch_norm: Batch norm in the projection head.
        temperature: NT-Xent temperature.
        gather_distributed: Use the views of all processes as negatives.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "simclr"
    joint_forward: ClassVar[bool] = True
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.3,
        weight_decay=1e-6,
        # Paper, appendix B.1: square-root scaling lr = 0.075 * sqrt(B) is better for small
        # batches or short runs; LARS excludes biases and batch norm from adaptation/decay.
        sqrt_scaling_lr=0.075,
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("num_layers", num_layers, 2)
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers, batch_norm=batch_norm
        )
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def default_transform(self, **views: Any) -> SimCLRTransform:
        """SimCLR's two views at ``input_size``."""
        return build_views(SimCLRTransform, views, {"input_size": self.input_size})
