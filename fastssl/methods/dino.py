"""DINO: self-distillation with no labels.

- Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
  https://arxiv.org/abs/2104.14294

A student network (backbone + :class:`DINOProjectionHead`) matches the centred, sharpened
output distribution of a teacher, an exponential moving average (EMA) of the student. The
teacher sees the two global crops; the student sees every crop (multi-crop).

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = DINO(backbone="resnet18", input_size=32, hidden_dim=32, bottleneck_dim=16,
    ...              output_dim=64, n_local_views=2)
    >>> views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 14, 14)] * 2
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fastssl.loss.dino_loss import DINOLoss
from fastssl.methods import _vit
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_momentum,
    embed,
    forward_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.clustering import DINOProjectionHead
from fastssl.models.utils import momentum_copy
from fastssl.transforms.dino_transform import DINOTransform


class DINO(EMAMethod):
    """DINO (Caron et al. 2021, https://arxiv.org/abs/2104.14294).

    Each step first moves the teacher towards the student,
    ``teacher = m * teacher + (1 - m) * student`` with ``m`` following a cosine from
    ``momentum_start`` to ``momentum_end`` over the run's optimizer steps, then computes
    :class:`~fastssl.loss.dino_loss.DINOLoss` between the teacher outputs of the two global
    views and the student outputs of all views. The teacher temperature warms up linearly
    with ``StepInfo.epoch``; the head's last layer gets no update during the first
    ``freeze_last_layer`` epochs (:meth:`before_optimizer_step`).

    Works with ResNets (``"resnet50"``...) and ViTs (``"vit_b_16"``,
    ``"timm:vit_small_patch16_224"``, or a torchvision / timm ``VisionTransformer``); ViTs are
    wrapped so that the local crops, of another resolution, resize the positional embedding.
    Stochastic depth is the student's only: ``"timm:vit_small_patch16_224(drop_path_rate=0.1)"``
    gives the student the reference code's drop path 0.1, and the teacher (a copy) has it
    switched off. ``fastssl eval`` and ``fastssl export`` use the teacher
    (:attr:`eval_network`), as the paper does.

    Defaults are the paper's (ViT-S/16 recipe of the reference code): 65536 prototypes, head
    2048-2048-256, teacher temperature 0.04 -> 0.07 over 30 epochs, student temperature 0.1,
    centre momentum 0.9, EMA 0.996 -> 1, last layer frozen for 1 epoch, 2 global + 6 local
    crops (the paper's 2x224 + 6x96 multi-crop).

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the global crops.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        bottleneck_dim: Width before the head's weight-normalised last layer.
        output_dim: Number of prototypes K (head output).
        batch_norm: Batch norm in the head (the reference code's option for ResNets).
        freeze_last_layer: Epochs during which the head's last layer is not updated.
        norm_last_layer: Keep the last layer's weight norm fixed at 1.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.
        warmup_teacher_temp: Teacher temperature at epoch 0.
        teacher_temp: Teacher temperature after the warm-up.
        warmup_teacher_temp_epochs: Epochs of the teacher temperature warm-up.
        student_temp: Student temperature.
        center_momentum: Momentum of the teacher output centre.
        n_local_views: Number of local crops of the default transform.
        local_crop_size: Size of the local crops; 96/224 of ``input_size`` (rounded to whole
            ViT patches) when None.

    Shapes:
        ``training_step`` views: 2 global (B, 3, input_size, input_size) then local
        (B, 3, local_crop_size, local_crop_size); ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "dino"
    ema_backbone_attr: ClassVar[str | None] = "teacher_backbone"
    # The paper evaluates the teacher (its eval_linear.py / eval_knn.py default to
    # --checkpoint_key teacher), as lightly's DINO benchmarks do.
    eval_network: ClassVar[Literal["online", "ema"]] = "ema"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "teacher_backbone"),
        ("head", "teacher_head"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=5e-4,
        reference_batch_size=256,
        lr_scaling="linear",
        weight_decay=0.04,
        betas=(0.9, 0.999),
        warmup_epochs=10,
        # The weight decay follows a cosine 0.04 -> 0.4, the lr decays (cosine) to 1e-6
        # and gradients are clipped at norm 3 (the engine applies all three).
        extra={"weight_decay_end": 0.4, "final_lr": 1e-6, "clip_grad_norm": 3.0},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
        freeze_last_layer: int = 1,
        norm_last_layer: bool = True,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_local_views: int = 6,
        local_crop_size: int | None = None,
    ) -> None:
        check_momentum(momentum_start, momentum_end)
        check_count("n_local_views", n_local_views, 0)
        module, dim, patch_size = _vit.build_any_backbone(backbone, input_size, feature_dim)
        super().__init__(module, input_size, dim)
        self.local_crop_size = _vit.local_crop_size(input_size, patch_size, local_crop_size)
        self.n_local_views = n_local_views
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.head = DINOProjectionHead(
            self.feature_dim,
            hidden_dim,
            bottleneck_dim,
            output_dim,
            batch_norm=batch_norm,
            freeze_last_layer=freeze_last_layer,
            norm_last_layer=norm_last_layer,
        )
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = momentum_copy(self.head)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )

    def _student(self, images: Tensor) -> Tensor:
        return embed(self.backbone, self.head, images)

    def _teacher(self, images: Tensor) -> Tensor:
        return embed(self.teacher_backbone, self.teacher_head, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """DINO loss of a batch: 2 global views first, then the local views."""
        if len(views) < 2:
            raise ValueError(
                f"DINO needs at least 2 views (the 2 global crops first), got {len(views)}."
            )
        self.update_ema(info)
        with torch.no_grad():
            teacher_out = forward_views(self._teacher, views[:2])
        student_out = forward_views(self._student, views)
        loss: Tensor = self.criterion(teacher_out, student_out, epoch=info.epoch)
        return loss

    def before_optimizer_step(self, info: StepInfo) -> None:
        """Drops the gradient of the head's last layer during the first epochs."""
        self.head.cancel_last_layer_gradients(current_epoch=info.epoch)

    def default_transform(self, **views: Any) -> DINOTransform:
        """Two global crops at ``input_size`` and ``n_local_views`` local crops."""
        fixed = {
            "global_crop_size": self.input_size,
            "local_crop_size": self.local_crop_size,
            "n_local_views": self.n_local_views,
        }
        return build_views(DINOTransform, views, fixed)

    def trainable_modules(self) -> list[nn.Module]:
        """The student backbone and head (the teacher is an EMA)."""
        return [self.backbone, self.head]
