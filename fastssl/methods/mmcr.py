"""MMCR: maximum manifold capacity representations.

- Yerxa et al. 2023, "Learning Efficient Coding of Natural Images with Maximum Manifold
  Capacity Representations", https://arxiv.org/abs/2303.03307

Each image is seen through ``k`` views; the centroid of its (unit-norm) embeddings is a
point of its "object manifold". The loss maximises the nuclear norm of the matrix of the
batch's centroids, which spreads the manifolds over many dimensions and shrinks each one.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = MMCR(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16, k=2)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.loss.mmcr_loss import MMCRLoss
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_dims,
    check_momentum,
    embed,
    forward_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.redundancy import MMCRProjectionHead
from fastssl.models.utils import momentum_copy
from fastssl.transforms.mmcr_transform import MMCRTransform
from fastssl.utils import dist


class MMCR(EMAMethod):
    """MMCR with a momentum encoder (Yerxa et al. 2023, https://arxiv.org/abs/2303.03307).

    Each step first moves the momentum encoder, ``ema = m * ema + (1 - m) * online`` with
    ``m`` a cosine from ``momentum_start`` to ``momentum_end`` over the run's optimizer steps
    (constant with the defaults), then embeds the ``k`` views with the online and the
    momentum network, L2-normalises every embedding (the paper's embeddings lie on the unit
    sphere) and returns :class:`~fastssl.loss.mmcr_loss.MMCRLoss` of the (B, k, D) stacks:
    ``-||C||_* + lmda * mean_i ||Z_i||_*`` with ``C`` the centroids of the ``2k`` embeddings
    of every image. With ``gather_distributed`` the embeddings of all processes form the
    batch, as the reference code does (the nuclear norm is not a sum over images).

    Defaults are the reference code's ImageNet run (``pretrain_imagenet.py``): projector
    8192-8192-512 without biases (batch norm on the hidden layers), 8 views, momentum 0.99,
    ``lmda = 0``, LARS with lr 0.8 x B/256, weight decay 1e-6, 10 warm-up epochs.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Width of the projector's hidden layers.
        output_dim: Output width of the projector.
        num_layers: Hidden layers of the projector.
        k: Views per image of the default transform.
        lmda: Weight of the per-image nuclear norms (``MMCRLoss.lmda``).
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.
        gather_distributed: Compute the loss over the embeddings of all processes.

    Shapes:
        ``training_step`` views: ``k`` tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "mmcr"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head", "projection_head_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.8, weight_decay=1e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 8192,
        output_dim: int = 512,
        num_layers: int = 2,
        k: int = 8,
        lmda: float = 0.0,
        momentum_start: float = 0.99,
        momentum_end: float = 0.99,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim, num_layers=num_layers)
        check_count("k", k, 1)
        check_momentum(momentum_start, momentum_end)
        if lmda < 0:
            raise ValueError(f"'lmda' must be >= 0, got lmda={lmda!r}.")
        super().__init__(backbone, input_size, feature_dim)
        self.k = k
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.gather_distributed = gather_distributed
        self.projection_head = MMCRProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = MMCRLoss(lmda=lmda)

    def online(self, images: Tensor) -> Tensor:
        """Online embeddings (B, output_dim)."""
        return embed(self.backbone, self.projection_head, images)

    @torch.no_grad()
    def target(self, images: Tensor) -> Tensor:
        """Momentum embeddings (B, output_dim), without gradient."""
        return embed(self.backbone_momentum, self.projection_head_momentum, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """MMCR loss of the ``k`` views of a batch (any number of views >= 1)."""
        if len(views) < 1:
            raise ValueError("MMCR needs at least 1 view per batch, got 0.")
        self.update_ema(info)
        # All views in one batch, as the reference code concatenates them.
        online = torch.stack(forward_views(self.online, views), dim=1)  # (B, k, D)
        momentum = torch.stack(forward_views(self.target, views), dim=1)
        # In float32, outside autocast: singular values have no half-precision kernels.
        with torch.autocast(online.device.type, enabled=False):
            online = F.normalize(online.float(), dim=-1)
            momentum = F.normalize(momentum.float(), dim=-1)
            if self.gather_distributed:
                online, momentum = dist.gather_cat(online), dist.gather_cat(momentum)
            loss: Tensor = self.criterion(online, momentum)
        return loss

    def default_transform(self, **views: Any) -> MMCRTransform:
        """``k`` views at ``input_size``, each BYOL's first view (MMCR's augmentations)."""
        return build_views(MMCRTransform, views, {"input_size": self.input_size, "k": self.k})

    def trainable_modules(self) -> list[nn.Module]:
        """The online backbone and projector (the momentum encoder is an EMA)."""
        return [self.backbone, self.projection_head]
