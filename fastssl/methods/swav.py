"""SwaV: swapped prediction of online cluster assignments.

- Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
  Assignments", https://arxiv.org/abs/2006.09882

Features of every crop are scored against learnable prototypes; Sinkhorn turns the scores
of each high-resolution crop into balanced soft codes, which the other crops predict.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = SwaV(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16,
    ...              n_prototypes=8, n_local_views=2, sinkhorn_gather_distributed=False)
    >>> views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 14, 14)] * 2
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.loss.swav_loss import SwaVLoss
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, check_count, embed, forward_views
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.clustering import SwaVProjectionHead, SwaVPrototypes
from fastssl.transforms.swav_transform import SwaVTransform
from fastssl.utils import dist


class SwaV(Method):
    """SwaV (Caron et al. 2020, https://arxiv.org/abs/2006.09882).

    Each step L2-normalises the prototypes, projects and normalises the features of every
    crop, scores them against the prototypes and computes
    :class:`~fastssl.loss.swav_loss.SwaVLoss` (codes from the ``n_high_res_views`` global
    crops, Sinkhorn over the global batch by default). The prototypes get no update during the
    first ``n_steps_frozen_prototypes`` optimizer steps: their gradient is dropped in
    :meth:`before_optimizer_step`, as in the reference code (their ``requires_grad`` never
    changes, so DDP keeps reducing them).

    With ``queue_length > 0`` every global crop keeps a queue of its last projections;
    from epoch ``start_queue_at_epoch`` on, their scores join the Sinkhorn batch (the paper's
    small-batch recipe: 3840 features from epoch 15 at batch size 256, ``main_swav.py
    --queue_length 3840 --epoch_queue_starts 15``). ``queue_length`` counts all processes,
    as in the reference code: each of P processes queues its own last ``queue_length // P``
    projections and the Sinkhorn normalisation sums over all of them, so a run scores
    against the same number of features on any number of GPUs. The queue fills from the
    first step (the reference code fills it from ``start_queue_at_epoch``; only the first
    ``queue_length / batch`` steps of that epoch differ). It is neither a parameter nor a
    buffer: it is not saved in checkpoints (nor is the reference code's) and distributed
    training does not overwrite it with rank 0's (DDP broadcasts buffers before every
    forward pass).

    Defaults are the paper's batch-4096 recipe: projection 2048-2048-128, 3000 prototypes
    frozen for the first epoch (313 steps), temperature 0.1, Sinkhorn epsilon 0.05 with 3
    iterations, 2x224 + 6x96 crops, no queue.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the global crops.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Projection dimension.
        n_prototypes: Number of prototypes K.
        n_steps_frozen_prototypes: Optimizer steps during which the prototypes stay fixed.
        temperature: Temperature of the predictions.
        sinkhorn_iterations: Sinkhorn iterations.
        sinkhorn_epsilon: Sinkhorn entropy regularisation.
        sinkhorn_gather_distributed: Normalise the codes over all processes.
        queue_length: Projections kept per global crop over all processes (0: no queue).
        start_queue_at_epoch: First epoch whose codes use the queue.
        n_high_res_views: Number of global crops (the first views).
        n_local_views: Number of local crops of the default transform.
        local_crop_size: Size of the local crops; 96/224 of ``input_size`` when None.

    Shapes:
        ``training_step`` views: ``n_high_res_views`` of (B, 3, input_size, input_size), then
        local crops; ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "swav"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=4.8,  # the paper's lr at batch 4096 (0.3 x B/256); its batch-256 recipe uses 0.6
        weight_decay=1e-6,
        reference_batch_size=4096,
        final_lr=0.0048,
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        n_prototypes: int = 3000,
        n_steps_frozen_prototypes: int = 313,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_gather_distributed: bool = True,
        queue_length: int = 0,
        start_queue_at_epoch: int = 15,
        n_high_res_views: int = 2,
        n_local_views: int = 6,
        local_crop_size: int | None = None,
    ) -> None:
        check_count("n_steps_frozen_prototypes", n_steps_frozen_prototypes, 0)
        check_count("queue_length", queue_length, 0)
        check_count("start_queue_at_epoch", start_queue_at_epoch, 0)
        check_count("n_high_res_views", n_high_res_views, 1)
        check_count("n_local_views", n_local_views, 0)
        if n_high_res_views + n_local_views < 2:
            raise ValueError(
                "SwaV needs at least 2 crops in all, got "
                f"n_high_res_views={n_high_res_views} and n_local_views={n_local_views}."
            )
        module, dim, patch_size = _vit.build_any_backbone(backbone, input_size, feature_dim)
        super().__init__(module, input_size, dim)
        self.local_crop_size = _vit.local_crop_size(input_size, patch_size, local_crop_size)
        self.n_high_res_views, self.n_local_views = n_high_res_views, n_local_views
        self.n_steps_frozen_prototypes = n_steps_frozen_prototypes
        self.start_queue_at_epoch = start_queue_at_epoch
        self.projection_head = SwaVProjectionHead(self.feature_dim, hidden_dim, output_dim)
        # Freezing is done here (before_optimizer_step), not by the module's step argument.
        self.prototypes = SwaVPrototypes(output_dim, n_prototypes, n_steps_frozen_prototypes=0)
        for layer in self.prototypes.heads:
            # The paper's prototypes are a bias-free linear layer (scores = cosine similarities).
            layer.bias = None  # type: ignore[assignment]
        self.criterion = SwaVLoss(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            sinkhorn_epsilon=sinkhorn_epsilon,
            sinkhorn_gather_distributed=sinkhorn_gather_distributed,
        )
        self.queue_length = queue_length
        # (global crops, queue_length, output_dim), newest first; random unit vectors until
        # filled (as lightly's memory bank). A plain attribute (see the class docstring),
        # moved with the module by _apply.
        views = n_high_res_views if queue_length > 0 else 0
        self.queue = F.normalize(torch.randn(views, queue_length, output_dim), dim=-1)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SwaV:
        """Moves / casts the queue with the module (``.to``, ``.cuda``, ``.half``...)."""
        super()._apply(fn, recurse)
        self.queue = fn(self.queue)
        return self

    def queue_size(self) -> int:
        """Projections this process queues per global crop: ``queue_length // processes``.

        Raises:
            ValueError: If ``queue_length`` is below the number of processes.
        """
        size = self.queue_length // dist.world_size()
        if self.queue_length and size < 1:
            raise ValueError(
                f"queue_length={self.queue_length} counts all {dist.world_size()} processes, "
                "which would keep no projection each: raise it (the paper's 3840) or set 0"
            )
        return size

    def _project(self, images: Tensor) -> Tensor:
        return F.normalize(embed(self.backbone, self.projection_head, images), dim=1)

    def _scores(self, features: Tensor) -> Tensor:
        scores = self.prototypes(features)
        assert isinstance(scores, Tensor)  # one set of prototypes
        return scores

    @torch.no_grad()
    def _queue_scores(self, high_res: list[Tensor], epoch: int) -> list[Tensor] | None:
        """Scores of the queued projections (taken before this batch is enqueued), from
        ``start_queue_at_epoch`` on; enqueues this batch's global-crop projections."""
        if self.queue_length == 0:
            return None
        size = self.queue_size()
        queue = self.queue[:, :size]
        queued = queue.clone()
        # First in, first out, newest first (the reference code's order).
        batch = torch.stack([features.detach() for features in high_res]).to(queue.dtype)
        keep = min(batch.shape[1], size)
        queue.copy_(torch.cat([batch[:, :keep], queued[:, : size - keep]], dim=1))
        if epoch < self.start_queue_at_epoch:
            return None
        return [self._scores(features) for features in queued]

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """SwaV loss of a batch: the global crops first, then the local crops."""
        if len(views) < max(self.n_high_res_views + 1, 2):
            raise ValueError(
                f"SwaV needs the {self.n_high_res_views} global crop(s) and at least 2 views "
                f"in all, got {len(views)} views."
            )
        self.prototypes.normalize()
        features = forward_views(self._project, views)
        scores = [self._scores(f) for f in features]
        high = self.n_high_res_views
        queue_scores = self._queue_scores(features[:high], info.epoch)
        loss: Tensor = self.criterion(scores[:high], scores[high:], queue_scores)
        return loss.reshape(())

    def before_optimizer_step(self, info: StepInfo) -> None:
        """Drops the prototypes' gradient during the first ``n_steps_frozen_prototypes``."""
        if info.step < self.n_steps_frozen_prototypes:
            for param in self.prototypes.parameters():
                param.grad = None

    def default_transform(self, **views: Any) -> SwaVTransform:
        """``n_high_res_views`` crops at ``input_size`` and ``n_local_views`` local crops."""
        fixed = {
            "crop_sizes": (self.input_size, self.local_crop_size),
            "crop_counts": (self.n_high_res_views, self.n_local_views),
        }
        return build_views(SwaVTransform, views, fixed)

    def trainable_modules(self) -> list[nn.Module]:
        """Backbone, projection head and prototypes (the queues hold no parameters)."""
        return [self.backbone, self.projection_head, self.prototypes]
