"""SMoG: synchronous momentum grouping.

- Pang et al. 2022, "Unsupervised Visual Representation Learning by Synchronous Momentum
  Grouping", https://arxiv.org/abs/2207.06167

Contrastive learning between groups instead of instances: every momentum-encoder
embedding is assigned to its nearest group feature, and the online network predicts that
group (cross-entropy over the cosine similarities to all groups). The group features
follow the embeddings assigned to them with a momentum, synchronously with training, and
are periodically re-clustered with k-means.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = SMoG(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16,
    ...              n_groups=8, memory_bank_size=64, n_global_views=2, n_local_views=0)
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

from fastssl.loss.regularizer.dse import kmeans
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
from fastssl.models.modules.heads.clustering import (
    SMoGPredictionHead,
    SMoGProjectionHead,
    SMoGPrototypes,
)
from fastssl.models.modules.memory_bank import MemoryBankModule
from fastssl.models.utils import momentum_copy, update_momentum
from fastssl.transforms.smog_transform import SMoGTransform
from fastssl.utils import dist


class SMoG(EMAMethod):
    """SMoG (Pang et al. 2022, https://arxiv.org/abs/2207.06167), structured as LightlySSL's
    SMoG example, generalised to multi-crop.

    A step, with ``G = n_global_views`` global crops first and the local crops after them:

    1. The momentum encoder moves, ``ema = m * ema + (1 - m) * online``; every
       ``reset_interval`` steps it is instead reset to the online network (paper, Table 7b).
    2. Every view gets an online projection ``z`` and prediction ``p``; the momentum
       encoder projects the global views, and each of those is assigned to its most
       similar group (:meth:`SMoGPrototypes.assign_groups`).
    3. The group features move towards the online projections of the global views
       assigned to them (``beta`` momentum, :meth:`SMoGPrototypes.get_updated_group_features`),
       over the views of all processes with ``gather_distributed``.
    4. ``loss`` = mean over global views ``g`` and views ``i != g`` of the cross-entropy
       between ``cos(p_i, groups) / temperature`` and the group of ``g``.
    5. The online projections of the global views enter a memory bank; before the step
       that resets the momentum encoder (in :meth:`before_optimizer_step`), the group
       features are re-clustered from the bank with k-means (paper, Table 7b).

    With two views of one size (``n_global_views=2, n_local_views=0``) this is the
    symmetrised loss of LightlySSL's example (which alternates the two directions).

    Defaults: LightlySSL's SMoG heads (projector 2048 -> 128 with an affine-free output
    batch norm, predictor 2048 -> 128) and multi-crop (4 x ``input_size`` + 4 x 96/224 of
    it); 3000 groups (the paper's best setting), group momentum 0.99, temperature 0.1,
    encoder momentum 0.99, resets every 300 steps from a bank of 300 x 256 projections
    (LightlySSL's example). The optimizer is BYOL's LARS recipe (lr 0.2 x B/256, weight
    decay 1.5e-6, 10 warm-up epochs).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the global crops.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projector and the predictor.
        output_dim: Output width of the projector and the predictor (group features).
        n_groups: Number of groups.
        beta: Momentum of the group features.
        temperature: Softmax temperature of the group logits.
        momentum_start: Momentum of the encoder EMA at the first step.
        momentum_end: Momentum of the encoder EMA at the last step.
        reset_interval: Steps between k-means re-clusterings and momentum-encoder resets
            (0: never).
        memory_bank_size: Projections kept for the k-means, at least ``n_groups``.
        n_global_views: Global crops (targets) of the default transform, at least 1.
        n_local_views: Local crops of the default transform.
        local_crop_size: Size of the local crops; ``round(input_size * 96 / 224)`` if None.
        gather_distributed: Update the groups and the bank with the views of all processes.

    Shapes:
        ``training_step`` views: ``n_global_views`` tensors (B, 3, input_size, input_size),
        then local ones; at least 2 views in all. ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "smog"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head", "projection_head_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1.5e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        n_groups: int = 3000,
        beta: float = 0.99,
        temperature: float = 0.1,
        momentum_start: float = 0.99,
        momentum_end: float = 0.99,
        reset_interval: int = 300,
        memory_bank_size: int = 300 * 256,
        n_global_views: int = 4,
        n_local_views: int = 4,
        local_crop_size: int | None = None,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim, n_groups=n_groups)
        check_momentum(momentum_start, momentum_end)
        check_count("reset_interval", reset_interval, 0)
        check_count("n_global_views", n_global_views, 1)
        check_count("n_local_views", n_local_views, 0)
        if n_global_views + n_local_views < 2:
            raise ValueError(
                "SMoG needs at least 2 views: got n_global_views="
                f"{n_global_views} and n_local_views={n_local_views}."
            )
        check_count("memory_bank_size", memory_bank_size, n_groups)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"'beta' must be in [0, 1], got beta={beta!r}.")
        if abs(temperature) < 1e-8:
            raise ValueError(f"'temperature' must be non-zero, got temperature={temperature!r}.")
        if local_crop_size is None:
            local_crop_size = max(1, round(input_size * 96 / 224))
        check_count("local_crop_size", local_crop_size, 1)
        super().__init__(backbone, input_size, feature_dim)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.n_groups = n_groups
        self.temperature = temperature
        self.reset_interval = reset_interval
        self.n_global_views, self.n_local_views = n_global_views, n_local_views
        self.local_crop_size = local_crop_size
        self.gather_distributed = gather_distributed
        self.projection_head = SMoGProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = SMoGPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        # Random initial groups, as LightlySSL's example (reset by k-means later).
        self.smog = SMoGPrototypes(torch.rand(n_groups, output_dim), beta=beta)
        self.memory_bank = MemoryBankModule(
            size=(memory_bank_size, output_dim),
            gather_distributed=gather_distributed,
            feature_dim_first=False,
        )

    def is_reset_step(self, step: int) -> bool:
        """Whether the momentum encoder is reset (not moved) at ``step``."""
        return self.reset_interval > 0 and step > 0 and step % self.reset_interval == 0

    @torch.no_grad()
    def reset_momentum(self) -> None:
        """Copies the online backbone and projector, buffers included, into their EMA copies."""
        for online_name, ema_name in self.ema_pairs:
            online, ema = getattr(self, online_name), getattr(self, ema_name)
            update_momentum(online, ema, 0.0)
            for source, target in zip(online.buffers(), ema.buffers(), strict=True):
                target.copy_(source)

    def _online(self, images: Tensor) -> Tensor:
        """Online projections and predictions, concatenated: (B, 2 * output_dim)."""
        z = embed(self.backbone, self.projection_head, images)
        return torch.cat([z, self.prediction_head(z)], dim=1)

    @torch.no_grad()
    def target(self, images: Tensor) -> Tensor:
        """Momentum-encoder projections (B, output_dim), without gradient."""
        return embed(self.backbone_momentum, self.projection_head_momentum, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """SMoG loss of a batch: ``n_global_views`` global crops first, then local ones."""
        n, n_global = len(views), self.n_global_views
        if n < 2 or n < n_global:
            raise ValueError(
                f"SMoG(n_global_views={n_global}) needs at least {max(2, n_global)} views "
                f"per batch (global crops first), got {n}."
            )
        if self.is_reset_step(info.step):
            self.reset_momentum()
        else:
            self.update_ema(info)
        online = forward_views(self._online, views)
        z = [out.chunk(2, dim=1)[0] for out in online]
        p = [out.chunk(2, dim=1)[1] for out in online]
        targets = forward_views(self.target, views[:n_global])
        assignments = [self.smog.assign_groups(t) for t in targets]
        encoded = torch.cat(z[:n_global])
        if self.gather_distributed:
            encoded = dist.gather_cat(encoded)
        groups = self.smog.get_updated_group_features(encoded)
        losses = [
            F.cross_entropy(self.smog(p[i], groups, self.temperature), assignments[g])
            for g in range(n_global)
            for i in range(n)
            if i != g
        ]
        loss: Tensor = torch.stack(losses).mean()
        if self.training:  # evaluating the loss leaves the groups and the bank alone
            with torch.no_grad():
                self.smog.group_features.copy_(groups.detach())
            self.memory_bank(torch.cat(z[:n_global]).detach(), update=True)
        return loss

    @torch.no_grad()
    def before_optimizer_step(self, info: StepInfo) -> None:
        """Re-clusters the group features from the memory bank with k-means before a step
        that resets the momentum encoder (LightlySSL's example does both at its start)."""
        if self.training and self.is_reset_step(info.step + 1):
            self.reset_group_features(seed=info.step + 1)

    @torch.no_grad()
    def reset_group_features(self, seed: int = 0) -> None:
        """Group features := the L2-normalised k-means centroids of the memory bank.

        The k-means draws its random numbers from a generator seeded with ``seed`` (the
        step), so every process computes the same groups from the same bank and the run's
        random stream is left untouched.
        """
        bank = self.memory_bank.bank.float()
        devices = [bank.device] if bank.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            centroids, _ = kmeans(bank, self.n_groups)
        groups = F.normalize(centroids, dim=1).to(self.smog.group_features.dtype)
        self.smog.group_features.copy_(groups)

    def default_transform(self, **views: Any) -> SMoGTransform:
        """``n_global_views`` crops at ``input_size``, then ``n_local_views`` local crops."""
        fixed = {
            "crop_sizes": (self.input_size, self.local_crop_size),
            "crop_counts": (self.n_global_views, self.n_local_views),
        }
        return build_views(SMoGTransform, views, fixed)

    def trainable_modules(self) -> list[nn.Module]:
        """The online backbone, projector and predictor (the momentum encoder is an EMA)."""
        return [self.backbone, self.projection_head, self.prediction_head]
