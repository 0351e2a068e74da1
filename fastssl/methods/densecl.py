"""DenseCL: dense contrastive learning.

- Wang et al. 2021, "Dense Contrastive Learning for Self-Supervised Visual Pre-Training",
  https://arxiv.org/abs/2011.09157

MoCo v2 with a second, dense, contrastive task: every location of the query's feature map
is matched to the most similar location of the key's feature map, and their dense
projections form a positive pair; a second queue holds the negatives of the dense task.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = DenseCL(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16,
    ...                 memory_bank_size=64)
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

from fastssl.loss.ntx_ent_loss import ntxent_memory_bank_loss
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_dims,
    check_momentum,
    two_views,
)
from fastssl.methods._dense import feature_map_backbone
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.contrastive import DenseCLProjectionHead
from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    momentum_copy,
    select_most_similar,
)
from fastssl.transforms.densecl_transform import DenseCLTransform
from fastssl.utils import dist


class DenseCL(EMAMethod):
    """DenseCL (Wang et al. 2021, https://arxiv.org/abs/2011.09157).

    With query features ``f_q`` (B, C, h, w) of view 0 and key features ``f_k`` of view 1
    from the momentum encoder (EMA ``ema = m * ema + (1 - m) * online``, applied first):

    - global task: ``q = head_g(pool(f_q))``, ``k = head_g_m(pool(f_k))``, InfoNCE against
      the global queue;
    - dense task: every location ``i`` of ``head_d(f_q)`` is paired with the location
      ``j`` of ``head_d_m(f_k)`` whose *backbone* feature ``f_k[j]`` is most cosine-similar
      to ``f_q[i]``; InfoNCE against the dense queue;
    - ``loss = (1 - lambda) * global + lambda * dense``.

    As in the reference code, the global queue receives the normalised keys ``k`` and the
    dense queue the normalised mean over locations of the dense keys (one per image); the
    queues only move in training mode. Across processes, the queue updates are gathered
    and the key batch is shuffled before the momentum encoder (shuffle BN); in one
    process that shuffle cannot change batch-norm statistics, so it is skipped.

    Defaults are the paper's (MoCo v2's recipe): heads 2048-2048-128, queues of 65536,
    temperature 0.2, lambda 0.5, momentum 0.999 (constant: ``momentum_end`` equals
    ``momentum_start``), SGD with lr 0.03 x B/256, momentum 0.9, weight decay 1e-4.

    Args:
        backbone: A ResNet name, ``"timm:<cnn>"``, or a module returning (B, C, h, w) maps
            (see :func:`feature_map_backbone`).
        input_size: Size of the views.
        feature_dim: Channels C of a module's feature map (measured when None).
        hidden_dim: Hidden width of both heads.
        output_dim: Output width of both heads.
        memory_bank_size: Keys in each queue.
        temperature: InfoNCE temperature.
        lambda_: Weight of the dense loss.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step (cosine schedule between the two).
        gather_distributed: Gather queue updates and shuffle keys across processes.

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, C) pooled features.
    """

    name: ClassVar[str] = "densecl"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head_global", "projection_head_global_momentum"),
        ("projection_head_local", "projection_head_local_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="sgd", lr=0.03, weight_decay=1e-4, momentum=0.9, warmup_epochs=0
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        memory_bank_size: int = 65536,
        temperature: float = 0.2,
        lambda_: float = 0.5,
        momentum_start: float = 0.999,
        momentum_end: float = 0.999,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("memory_bank_size", memory_bank_size, 1)
        check_momentum(momentum_start, momentum_end)
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"'lambda_' must be in [0, 1], got lambda_={lambda_!r}.")
        if abs(temperature) < 1e-8:
            raise ValueError(f"'temperature' must be non-zero, got temperature={temperature!r}.")
        trunk, channels = feature_map_backbone(backbone, input_size, feature_dim)
        super().__init__(trunk, input_size, channels)
        self.temperature, self.lambda_ = temperature, lambda_
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.gather_distributed = gather_distributed
        self.projection_head_global = DenseCLProjectionHead(
            self.feature_dim, hidden_dim, output_dim
        )
        self.projection_head_local = DenseCLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_global_momentum = momentum_copy(self.projection_head_global)
        self.projection_head_local_momentum = momentum_copy(self.projection_head_local)
        size = (memory_bank_size, output_dim)
        self.memory_bank_global = MemoryBankModule(
            size, gather_distributed=gather_distributed, feature_dim_first=False
        )
        self.memory_bank_local = MemoryBankModule(
            size, gather_distributed=gather_distributed, feature_dim_first=False
        )

    def _momentum_modules(self) -> list[nn.Module]:
        return [
            self.backbone_momentum,
            self.projection_head_global_momentum,
            self.projection_head_local_momentum,
        ]

    def forward(self, images: Tensor) -> Tensor:
        """Globally pooled backbone features (B, C) of images (B, 3, H, W)."""
        return self.backbone(images).mean(dim=(2, 3))

    @staticmethod
    def _encode(
        backbone: nn.Module, head_global: nn.Module, head_local: nn.Module, images: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(features (B, hw, C), global projection (B, d), dense projections (B, hw, d))``."""
        maps = backbone(images)
        features = maps.flatten(start_dim=2).transpose(1, 2)
        return features, head_global(maps.mean(dim=(2, 3))), head_local(features)

    def query(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Backbone features, global and dense projections of the query encoder."""
        return self._encode(
            self.backbone, self.projection_head_global, self.projection_head_local, images
        )

    @torch.no_grad()
    def key(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Same as :meth:`query` for the momentum encoder, without gradient."""
        shuffle = self.gather_distributed and dist.is_distributed()
        if shuffle:
            images, order = batch_shuffle(images, distributed=True)
        out = self._encode(
            self.backbone_momentum,
            self.projection_head_global_momentum,
            self.projection_head_local_momentum,
            images,
        )
        if shuffle:
            return tuple(batch_unshuffle(x, order, distributed=True) for x in out)  # type: ignore[return-value]
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """DenseCL loss: view 0 queries, view 1 keys."""
        x_query, x_key = two_views("DenseCL", views)
        self.update_ema(info)
        q_features, q_global, q_local = self.query(x_query)
        k_features, k_global, k_local = self.key(x_key)
        # The correspondence comes from the backbone features, not the projections.
        k_matched = select_most_similar(q_features, k_features, k_local)
        k_global = F.normalize(k_global, dim=1)
        _, negatives_global = self.memory_bank_global(k_global, update=self.training)
        _, negatives_local = self.memory_bank_local(
            F.normalize(k_local.mean(dim=1), dim=1), update=self.training
        )
        assert negatives_global is not None and negatives_local is not None  # banks enabled
        loss_global = ntxent_memory_bank_loss(
            q_global, k_global, negatives_global, self.temperature
        )
        loss_local = ntxent_memory_bank_loss(
            q_local.flatten(end_dim=1),
            k_matched.flatten(end_dim=1),
            negatives_local,
            self.temperature,
        )
        return (1 - self.lambda_) * loss_global + self.lambda_ * loss_local

    def default_transform(self, **views: Any) -> DenseCLTransform:
        """DenseCL's (MoCo v2's) views at ``input_size``."""
        return build_views(DenseCLTransform, views, {"input_size": self.input_size})

    def trainable_modules(self) -> list[nn.Module]:
        """The query backbone and heads (the key encoder is an EMA)."""
        return [self.backbone, self.projection_head_global, self.projection_head_local]
