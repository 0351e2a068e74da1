"""NNCLR: nearest-neighbour contrastive learning.

- Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
  Learning of Visual Representations", https://arxiv.org/abs/2104.14548

SimCLR with the positive of each view replaced by its nearest neighbour in a support set,
a queue of past projections, so that positives cover more variation than augmentations.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = NNCLR(backbone="resnet18", input_size=32, proj_hidden_dim=32,
    ...               pred_hidden_dim=32, output_dim=16, memory_bank_size=64)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods._common import FIRST_STEP, TwoViewMethod, check_dims
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.siamese import NNCLRPredictionHead, NNCLRProjectionHead
from fastssl.models.modules.nn_memory_bank import NNMemoryBankModule
from fastssl.transforms.simclr_transform import SimCLRTransform


class NNCLR(TwoViewMethod):
    """NNCLR (Dwibedi et al. 2021, https://arxiv.org/abs/2104.14548).

    With projections ``z``, predictions ``p`` and ``NN(z)`` the nearest neighbour of ``z`` in
    the support set (looked up without gradient),
    ``loss = 0.5 * (NTXent(NN(z0), p1) + NTXent(NN(z1), p0))``. The support set is a
    first-in first-out queue; only ``z1`` is enqueued after the look-ups, so a batch is never
    its own neighbour (LightlySSL's example does the same).

    Defaults are the paper's: projector 2048-2048-256 (3 layers, batch norm), predictor
    256-4096-256, support set of 98304, temperature 0.1, LARS with lr 0.3 x B/256 (4.8 at
    batch 4096), weight decay 1e-6, 10 warm-up epochs, SimCLR's views. The loss and the
    support set use the views of all processes when distributed (the paper's global batch).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        proj_hidden_dim: Hidden width of the projector.
        pred_hidden_dim: Hidden width of the predictor.
        output_dim: Output width of the projector and the predictor.
        memory_bank_size: Entries of the support set.
        temperature: NT-Xent temperature.
        gather_distributed: Use the views of all processes (negatives and queue updates).

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "nnclr"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.3, weight_decay=1e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        proj_hidden_dim: int = 2048,
        pred_hidden_dim: int = 4096,
        output_dim: int = 256,
        memory_bank_size: int = 98304,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(
            proj_hidden_dim=proj_hidden_dim,
            pred_hidden_dim=pred_hidden_dim,
            output_dim=output_dim,
            memory_bank_size=memory_bank_size,
        )
        super().__init__(backbone, input_size, feature_dim)
        self.projection_head = NNCLRProjectionHead(self.feature_dim, proj_hidden_dim, output_dim)
        self.prediction_head = NNCLRPredictionHead(output_dim, pred_hidden_dim, output_dim)
        self.memory_bank = NNMemoryBankModule(
            size=(memory_bank_size, output_dim), gather_distributed=gather_distributed
        )
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """Symmetric NNCLR loss of the two views."""
        z0, z1 = self.projections(views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        # The queue only moves during training, so evaluating the loss leaves it unchanged.
        nn0 = self.memory_bank(z0.detach(), update=False)
        nn1 = self.memory_bank(z1.detach(), update=self.training)
        loss: Tensor = 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))
        return loss

    def default_transform(self, **views: Any) -> SimCLRTransform:
        """SimCLR's two views at ``input_size`` (the paper's augmentations)."""
        return build_views(SimCLRTransform, views, {"input_size": self.input_size})
