"""MoCo v2 and v3: momentum contrast.

- He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning",
  https://arxiv.org/abs/1911.05722
- Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning" (v2),
  https://arxiv.org/abs/2003.04297
- Chen et al. 2021, "An Empirical Study of Training Self-Supervised Vision Transformers"
  (v3), https://arxiv.org/abs/2104.02057

A query encoder is trained to recognise the key of its own image, computed by a momentum
(EMA) copy of itself. v2 contrasts against a queue of past keys; v3 drops the queue for the
other keys of the (global) batch and adds a predictor on the query side.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = MoCo(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16,
    ...              memory_bank_size=64)
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

from fastssl.kernels import contrastive
from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_dims,
    check_momentum,
    embed,
    two_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_view_pair, build_views
from fastssl.models.modules.heads.base import ProjectionHead, mlp_blocks
from fastssl.models.modules.heads.contrastive import MoCoProjectionHead
from fastssl.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    momentum_copy,
)
from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)
from fastssl.transforms.moco_transform import MoCoV2Transform
from fastssl.utils import dist

_VERSIONS = ("v2", "v3")

#: Optimizers of the papers (ResNet-50 recipes).
_V2_OPTIMIZER = OptimizerDefaults(
    name="sgd", lr=0.03, weight_decay=1e-4, momentum=0.9, warmup_epochs=0
)
_V3_OPTIMIZER = OptimizerDefaults(
    name="lars", lr=0.3, weight_decay=1.5e-6, momentum=0.9, warmup_epochs=10
)


def moco_v3_loss(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """InfoNCE of MoCo v3 (Chen et al. 2021, Algorithm 1) with the keys of all processes.

    ``2 * t * CrossEntropy(q @ k_all^T / t, own index)`` with L2-normalised rows; the factor
    ``2 * t`` is the paper's, it keeps the gradient scale independent of ``t``. The
    cross-entropy is ``lse_i - s(q_i, k_i) / t``; the log-sum-exp over all keys runs in the
    blockwise kernel (:func:`fastssl.kernels.contrastive.lse_sum`), so the ``(B, B * world)``
    logits are never held.

    Args:
        query: Predictions of the query encoder, shape (B, d).
        key: Momentum keys of the other view, shape (B, d), without gradient.
        temperature: Logits are divided by it.

    Returns:
        Scalar loss.
    """
    query = F.normalize(query, dim=1)
    own = F.normalize(key.detach(), dim=1)
    keys = dist.gather_cat(own)  # (B * world_size, d)
    none = torch.empty(query.shape[0], 0, dtype=torch.long, device=query.device)
    total = contrastive.lse_sum(query, keys, none, temperature)
    positive = (query * own.to(query.dtype)).sum(dim=1) / temperature
    return (total - positive.sum()) / query.shape[0] * (2 * temperature)


class MoCoPredictionHead(ProjectionHead):
    """Predictor of MoCo v3 (https://arxiv.org/abs/2104.02057): Linear -> BN -> ReLU -> Linear.

    Shapes: (B, input_dim) -> (B, output_dim).
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(mlp_blocks(input_dim, hidden_dim, output_dim))


class MoCo(EMAMethod):
    """MoCo v2 (Chen et al. 2020) or v3 (Chen et al. 2021), chosen by ``version``.

    **v2** (https://arxiv.org/abs/2003.04297): the query is ``head(backbone(view0))``, the key
    ``head_m(backbone_m(view1))`` from the momentum encoder, updated first as
    ``ema = m * ema + (1 - m) * online`` with a constant ``m`` (``momentum_end`` is
    ignored). The loss is :class:`~fastssl.loss.ntx_ent_loss.NTXentLoss` with a queue of
    ``memory_bank_size`` past keys (the queue takes the keys of all processes when
    distributed). Across processes, the key batch is shuffled before the momentum encoder
    (MoCo's shuffle BN); in one process the shuffle cannot change batch-norm statistics,
    so it is skipped.

    **v3** (https://arxiv.org/abs/2104.02057): a predictor follows the query head, the loss
    is symmetric, ``moco_v3_loss(q0, k1) + moco_v3_loss(q1, k0)``, with the keys of the
    global batch as negatives, and ``m`` follows a cosine from ``momentum`` to
    ``momentum_end`` over the run's optimizer steps.

    Defaults (``None`` takes the version's paper value, ResNet-50 recipes):

    ============== ========================== ===================================
    argument       v2                         v3
    ============== ========================== ===================================
    head           2048-2048-128, no BN       2048-4096-256, BN (2 layers)
    predictor      none                       256-4096-256
    momentum       0.999 (constant)           0.99 -> 1 (cosine)
    temperature    0.2                        0.2
    queue          65536                      none
    optimizer      SGD lr 0.03 x B/256, 1e-4  LARS lr 0.3 x B/256, wd 1.5e-6
    views          MoCoV2Transform            BYOLTransform (asymmetric blur/solarize)
    ============== ========================== ===================================

    ``optimizer_defaults`` is the v2 optimizer (class attribute); an instance of v3 carries
    the v3 one.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the views.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        version: ``"v2"`` or ``"v3"``.
        hidden_dim: Hidden width of the projection (and v3 prediction) head.
        output_dim: Output width of the heads.
        num_layers: Linear layers of the projection head.
        momentum: EMA momentum (v2: constant; v3: at the first step).
        momentum_end: EMA momentum at the last step (v3 only).
        temperature: Softmax temperature.
        memory_bank_size: Keys in the queue (v2 only).
        gather_distributed: Use the keys of all processes (v3 negatives, v2 queue updates,
            v2 shuffle BN).

    Shapes:
        ``training_step`` views: 2 tensors (B, 3, input_size, input_size);
        ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "moco"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head", "projection_head_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = _V2_OPTIMIZER

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        version: str = "v2",
        hidden_dim: int | None = None,
        output_dim: int | None = None,
        num_layers: int = 2,
        momentum: float | None = None,
        momentum_end: float = 1.0,
        temperature: float = 0.2,
        memory_bank_size: int = 65536,
        gather_distributed: bool = True,
    ) -> None:
        if version not in _VERSIONS:
            raise ValueError(f"'version' must be one of {_VERSIONS}, got version={version!r}.")
        v3 = version == "v3"
        hidden_dim = hidden_dim if hidden_dim is not None else (4096 if v3 else 2048)
        output_dim = output_dim if output_dim is not None else (256 if v3 else 128)
        momentum = momentum if momentum is not None else (0.99 if v3 else 0.999)
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("num_layers", num_layers, 2)
        check_momentum(momentum, momentum_end)
        if not v3:
            check_count("memory_bank_size", memory_bank_size, 1)
        if abs(temperature) < 1e-8:
            raise ValueError(f"'temperature' must be non-zero, got temperature={temperature!r}.")
        super().__init__(backbone, input_size, feature_dim)
        self.version = version
        self.momentum_start, self.momentum_end = momentum, momentum_end
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        if v3:
            self.optimizer_defaults = _V3_OPTIMIZER  # type: ignore[misc]
        self.projection_head = MoCoProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers, batch_norm=v3
        )
        self.prediction_head: nn.Module | None = (
            MoCoPredictionHead(output_dim, hidden_dim, output_dim) if v3 else None
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion: NTXentLoss | None = (
            None
            if v3
            else NTXentLoss(
                temperature=temperature,
                memory_bank_size=(memory_bank_size, output_dim),
                gather_distributed=gather_distributed,
            )
        )

    def momentum(self, info: StepInfo) -> float:
        """EMA momentum of the step: constant for v2, cosine to ``momentum_end`` for v3."""
        if self.version == "v2":
            return self.momentum_start
        return super().momentum(info)

    def query(self, images: Tensor) -> Tensor:
        """Query embeddings (B, output_dim): projection, then the v3 predictor."""
        out: Tensor = self.projection_head(self(images))
        if self.prediction_head is not None:
            out = self.prediction_head(out)
        return out

    @torch.no_grad()
    def key(self, images: Tensor) -> Tensor:
        """Keys (B, output_dim) of the momentum encoder, without gradient."""
        shuffle = self.version == "v2" and self.gather_distributed and dist.is_distributed()
        if shuffle:
            images, order = batch_shuffle(images, distributed=True)
        out = embed(self.backbone_momentum, self.projection_head_momentum, images)
        if shuffle:
            out = batch_unshuffle(out, order, distributed=True)
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """MoCo loss of the two views (v2: view 0 queries, view 1 keys; v3: symmetric)."""
        x0, x1 = two_views("MoCo", views)
        self.update_ema(info)
        if self.criterion is not None:
            loss: Tensor = self.criterion(self.query(x0), self.key(x1))
            return loss
        q0, q1 = self.query(x0), self.query(x1)
        k0, k1 = self.key(x0), self.key(x1)
        return moco_v3_loss(q0, k1, self.temperature) + moco_v3_loss(q1, k0, self.temperature)

    def default_transform(self, **views: Any) -> MoCoV2Transform | BYOLTransform:
        """The paper's views: MoCo v2's for v2, BYOL's asymmetric pair for v3."""
        if self.version == "v3":
            return build_view_pair(
                BYOLTransform, BYOLView1Transform, BYOLView2Transform, views, self.input_size
            )
        return build_views(MoCoV2Transform, views, {"input_size": self.input_size})

    def trainable_modules(self) -> list[nn.Module]:
        """Backbone and heads of the query encoder (the key encoder is an EMA)."""
        modules: list[nn.Module] = [self.backbone, self.projection_head]
        if self.prediction_head is not None:
            modules.append(self.prediction_head)
        return modules
