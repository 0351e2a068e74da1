"""CAPI: cluster and predict latent patches.

- Darcet et al. 2025, "Cluster and Predict Latent Patches for Improved Masked Image
  Modeling", https://arxiv.org/abs/2502.08769

An EMA teacher ViT encodes the whole image and an online clustering head assigns its patch
tokens to clusters (Sinkhorn-Knopp, per position); the student encodes one visible block of
patches and a cross-attention predictor predicts the cluster of masked patches from it.

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> from fastssl.methods.base import StepInfo
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = CAPI(backbone=vit, input_size=32, num_clusters=64, predictor_depth=1,
    ...              predictor_num_heads=2)
    >>> loss = model.training_step([torch.randn(4, 3, 32, 32)], StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from fastssl.loss.capi_loss import CAPILoss
from fastssl.methods import _vit
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_mask_ratio,
    check_momentum,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.capi_predictor_timm import CAPIPredictorTIMM
from fastssl.models.modules.heads.clustering import CAPIProjectionHead
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.utils import (
    momentum_copy,
    random_inverse_block_mask,
)
from fastssl.transforms.capi_transform import CAPITransform


def _num_visible(sequence_length: int, mask_ratio: float) -> int:
    """Visible patches of a (1 class token + patches) sequence, as the mask helper counts."""
    num_patches = sequence_length - 1
    return num_patches - int(num_patches * mask_ratio)


# One opaque call for torch.compile: the block is drawn by a Python loop over the images.
@torch.library.custom_op("fastssl::capi_inverse_block_mask", mutates_args=())
def _inverse_block_mask(
    batch_size: int, sequence_length: int, mask_ratio: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """CAPI's masks: token indices ``(idx_keep (B, 1 + V), idx_mask (B, M))``, class token
    first in ``idx_keep``."""
    idx_keep, idx_mask = random_inverse_block_mask(
        (batch_size, sequence_length), mask_ratio=mask_ratio, num_prefix_tokens=1, device=device
    )
    return idx_keep.contiguous(), idx_mask.contiguous()


@_inverse_block_mask.register_fake
def _(
    batch_size: int, sequence_length: int, mask_ratio: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    visible = _num_visible(sequence_length, mask_ratio)
    masked = sequence_length - 1 - visible
    return (
        torch.empty(batch_size, 1 + visible, dtype=torch.long, device=device),
        torch.empty(batch_size, masked, dtype=torch.long, device=device),
    )


class CAPI(EMAMethod):
    """CAPI (Darcet et al. 2025, https://arxiv.org/abs/2502.08769).

    Each step first moves the teacher backbone towards the student,
    ``teacher = m * teacher + (1 - m) * student`` with ``m`` following a cosine from
    ``momentum_start`` to ``momentum_end`` over the run's optimizer steps. A random
    inverse-block mask keeps one (rolled) block of ``1 - mask_ratio`` of the patches
    visible. The student encodes the visible patches; the predictor
    (:class:`~fastssl.models.modules.CAPIPredictorTIMM`) cross-attends from a mask token at
    each of a random ``prediction_subsampling`` fraction of the masked positions to them,
    and the student head turns its outputs into cluster logits. The teacher encodes the
    whole image and the clustering head gives the logits of every patch::

        loss = CAPILoss(clustering(teacher), head(predictor(student)), predicted positions)
             + CAPILoss(clustering(teacher), clustering(teacher))

    The first term trains the student on the teacher's positionwise Sinkhorn-Knopp
    assignments; the second trains the clustering head (the teacher backbone gets no
    gradient). With ``gather_distributed`` the assignments are balanced over the batches
    of all processes.

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``) or module, or
    ``"timm:<vit name>"`` / a timm ``VisionTransformer`` with one class token; it gets MAE's
    initialisation and fixed sine-cosine positions (as lightly's example). The loss never
    reads the class token: with timm, ``global_pool=avg, fc_norm=false`` makes
    ``forward`` (and ``fastssl eval``) average the patch tokens instead.
    ``drop_path_rate`` gives the student's blocks the reference's uniform stochastic depth;
    the teacher (a copy) has none. ``fastssl eval`` and ``fastssl export`` use the teacher
    (:attr:`eval_network`), the reference's final evaluation network (``student_ema``).
    The predictor needs timm.

    Defaults are the reference code's (``default_pretrain_config.yaml``): 16384 clusters,
    65% of the patches masked (inverse block, rolled), 5% of the masked patches predicted,
    predictor of 12 blocks with 16 heads, teacher temperature 0.06, student temperature
    0.12, 3 Sinkhorn-Knopp iterations, EMA 0.999 -> 1.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Image size.
        feature_dim: D of the ViT (its width when None).
        num_clusters: Number of clusters (prototypes) K.
        mask_ratio: Fraction of the patches masked.
        prediction_subsampling: Fraction of the masked patches predicted (at least one).
        predictor_depth: Cross-attention blocks of the predictor.
        predictor_num_heads: Attention heads of the predictor; the head dimension
            ``D / predictor_num_heads`` must be a multiple of 4.
        predictor_mlp_ratio: MLP width of the predictor relative to D.
        teacher_temperature: Temperature of the teacher logits.
        student_temperature: Temperature of the predicted (and clustering) logits.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.
        drop_path_rate: Uniform stochastic depth of every student block; None keeps the
            backbone's own.
        gather_distributed: Balance the cluster assignments over all processes.

    Shapes:
        ``training_step`` views: one (B, 3, input_size, input_size); ``forward``:
        (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "capi"
    ema_backbone_attr: ClassVar[str | None] = "teacher_backbone"
    # The reference's final evaluation ("full") runs on student_ema, the teacher backbone.
    eval_network: ClassVar[Literal["online", "ema"]] = "ema"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("backbone", "teacher_backbone"),)
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        # The reference: lr 1e-3 at its batch of 16384 (no scaling rule; sqrt here, as in
        # the DINOv2 code CAPI builds on), warm-up 10% of the run, cosine truncated at 80%
        # (ending near 9.5% of the peak).
        lr=1e-3,
        reference_batch_size=16384,
        lr_scaling="sqrt",
        weight_decay=0.1,
        betas=(0.9, 0.95),
        warmup_epochs=80,
        extra={"final_lr": 9.5e-5},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        num_clusters: int = 16384,
        mask_ratio: float = 0.65,
        prediction_subsampling: float = 0.05,
        predictor_depth: int = 12,
        predictor_num_heads: int = 16,
        predictor_mlp_ratio: float = 4.0,
        teacher_temperature: float = 0.06,
        student_temperature: float = 0.12,
        sinkhorn_iterations: int = 3,
        momentum_start: float = 0.999,
        momentum_end: float = 1.0,
        drop_path_rate: float | None = None,
        gather_distributed: bool = True,
    ) -> None:
        check_count("num_clusters", num_clusters, 1)
        check_mask_ratio(mask_ratio)
        if not 0.0 < prediction_subsampling <= 1.0:
            raise ValueError(
                "'prediction_subsampling' must be in (0, 1], got "
                f"prediction_subsampling={prediction_subsampling!r}."
            )
        check_count("predictor_depth", predictor_depth, 1)
        check_count("predictor_num_heads", predictor_num_heads, 1)
        if not predictor_mlp_ratio > 0:
            raise ValueError(
                "'predictor_mlp_ratio' must be > 0, got "
                f"predictor_mlp_ratio={predictor_mlp_ratio!r}."
            )
        check_momentum(momentum_start, momentum_end)
        if drop_path_rate is not None and not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(
                "'drop_path_rate' must be in [0, 1) or None, got "
                f"drop_path_rate={drop_path_rate!r}."
            )
        vit, dim, patch_size = _vit.build_masked_vit(backbone, input_size)
        if dim % predictor_num_heads or (dim // predictor_num_heads) % 4:
            raise ValueError(
                f"'predictor_num_heads' must divide the ViT width {dim} into heads whose "
                f"dimension is a multiple of 4, got predictor_num_heads={predictor_num_heads}."
            )
        num_patches = vit.sequence_length - 1
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"CAPI needs a square patch grid, got {num_patches} patches at "
                f"input_size={input_size}."
            )
        num_masked = num_patches - _num_visible(vit.sequence_length, mask_ratio)
        if num_masked < 1:
            raise ValueError(
                f"'mask_ratio' masks no patch of the {num_patches} patches at "
                f"input_size={input_size}, got mask_ratio={mask_ratio!r}."
            )
        if drop_path_rate is not None:
            _vit.uniform_drop_path(vit, drop_path_rate)
        # The student drops the masked patches rather than replacing them: the wrapper's mask
        # token is unused (and would stall DDP, which expects a gradient for every parameter).
        vit.mask_token.requires_grad_(False)
        super().__init__(vit, input_size, feature_dim or dim)
        self.patch_size = patch_size
        self.sequence_length = vit.sequence_length
        self.mask_ratio = mask_ratio
        self.num_predictions = max(1, int(num_masked * prediction_subsampling))
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.predictor = CAPIPredictorTIMM(
            embed_dim=dim,
            grid_size=side,
            depth=predictor_depth,
            num_heads=predictor_num_heads,
            mlp_ratio=predictor_mlp_ratio,
        )
        # The student head's prototypes are kept at unit norm; the clustering head (the
        # teacher's) has a bias, as in the reference's OnlineClustering.
        self.head = CAPIProjectionHead(dim, num_clusters, weight_norm=True)
        self.clustering_head = CAPIProjectionHead(dim, num_clusters, bias=True)
        self.teacher_backbone = momentum_copy(self.backbone)
        self.criterion = CAPILoss(
            teacher_temperature=teacher_temperature,
            student_temperature=student_temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            gather_distributed=gather_distributed,
        )

    def masks(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """A fresh random mask (global torch generators).

        Returns:
            ``(idx_keep, idx_mask, predict)``: token indices (B, 1 + V) of the visible
            tokens (class token first) and (B, M) of the masked ones, and patch indices
            (B, num_predictions) of the masked patches to predict (patch ``p`` is token
            ``p + 1``).
        """
        idx_keep, idx_mask = _inverse_block_mask(
            batch_size, self.sequence_length, self.mask_ratio, device
        )
        if self.num_predictions < idx_mask.shape[1]:
            # A random subset of every image's masked patches, as the reference's collate.
            order = torch.rand(idx_mask.shape, device=device).argsort(dim=1)
            idx_mask_predicted = idx_mask.gather(1, order[:, : self.num_predictions])
        else:
            idx_mask_predicted = idx_mask
        return idx_keep, idx_mask, idx_mask_predicted - 1

    def predict(self, images: Tensor, idx_keep: Tensor, predict: Tensor) -> Tensor:
        """Student cluster logits (B, P, K) of the patches ``predict`` (B, P) from the
        visible tokens ``idx_keep`` (B, 1 + V), class token first."""
        visible = cast(MaskedVisionTransformer, self.backbone).encode(images, idx_keep=idx_keep)
        # The class token is context of the encoder only, as in lightly's example.
        predicted = self.predictor(visible[:, 1:], idx_keep[:, 1:] - 1, predict)
        logits: Tensor = self.head(predicted)
        return logits

    def cluster_logits(self, images: Tensor) -> Tensor:
        """Clustering-head logits (B, N, K) of the teacher's patch tokens; only the
        clustering head gets a gradient."""
        with torch.no_grad():
            tokens = cast(MaskedVisionTransformer, self.teacher_backbone).encode(images)
        logits: Tensor = self.clustering_head(tokens[:, 1:])
        return logits

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """CAPI loss of the first view, with a fresh random mask."""
        if len(views) < 1:
            raise ValueError("CAPI needs one view per batch, got none.")
        images = views[0]
        self.update_ema(info)
        idx_keep, _, predict = self.masks(images.shape[0], images.device)
        teacher_logits = self.cluster_logits(images)
        student_logits = self.predict(images, idx_keep, predict)
        prediction_loss: Tensor = self.criterion(
            teacher_logits, student_logits, teacher_index=predict
        )
        clustering_loss: Tensor = self.criterion(teacher_logits, teacher_logits)
        return prediction_loss + clustering_loss

    def default_transform(self, **views: Any) -> CAPITransform:
        """CAPI's bicubic random resized crop (scale 0.6-1) and flip at ``input_size``."""
        return build_views(CAPITransform, views, {"input_size": self.input_size})

    def trainable_modules(self) -> list[nn.Module]:
        """The student backbone, predictor and head, and the clustering head (the teacher
        backbone is an EMA)."""
        return [self.backbone, self.predictor, self.head, self.clustering_head]
