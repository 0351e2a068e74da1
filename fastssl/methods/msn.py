"""MSN and PMSN: masked siamese networks with prototypes.

- MSN: Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning",
  https://arxiv.org/abs/2204.07141
- PMSN: Assran et al. 2023, "The Hidden Uniform Cluster Prior in Self-Supervised Learning",
  https://arxiv.org/abs/2210.07277

An anchor ViT sees masked views (patch tokens dropped at random, plus small "focal" crops);
a target ViT, the EMA of the anchor, sees one unmasked view. Both are mapped to soft
assignments over learnable prototypes; the anchors predict the sharpened target assignment,
and a regulariser keeps the mean anchor assignment close to a prior (uniform for MSN, a
power law for PMSN).

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> from fastssl.methods.base import StepInfo
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = MSN(backbone=vit, input_size=32, hidden_dim=32, output_dim=16, n_prototypes=8,
    ...             focal_views=2, gather_distributed=False)
    >>> views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)] * 2
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fastssl.loss.msn_loss import MSNLoss
from fastssl.loss.pmsn_loss import PMSNLoss
from fastssl.methods import _vit
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_momentum,
    forward_views,
    scheduled_step,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.clustering import MSNProjectionHead
from fastssl.models.utils import (
    momentum_copy,
    random_token_mask,
)
from fastssl.transforms.msn_transform import MSNTransform


class MSN(EMAMethod):
    """MSN (Assran et al. 2022, https://arxiv.org/abs/2204.07141).

    Views (from :class:`~fastssl.transforms.msn_transform.MSNTransform`): view 0 is the
    target, view 1 the random anchor view and views 2.. the focal anchor views. Each step
    first moves the target towards the anchor, ``target = m * target + (1 - m) * anchor``
    with ``m`` rising linearly from ``momentum_start`` to ``momentum_end`` over the run's
    steps (the reference code's schedule), then drops a random ``mask_ratio`` of the patch
    tokens of every anchor view (the class token is always kept) and computes
    :class:`~fastssl.loss.msn_loss.MSNLoss` with the prototypes.

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``), ``"timm:<vit name>"``,
    or a torchvision / timm ``VisionTransformer``; it is wrapped in a masked ViT (MAE
    initialisation, fixed sine-cosine positions, as LightlySSL's example).

    Defaults are the paper's ViT-S/16 recipe: projection 2048-2048-256 (3 layers), 1024
    prototypes, 15% of the patches dropped, temperature 0.1, target sharpening 0.25
    (i.e. target temperature 0.025), mean-entropy weight 1, EMA 0.996 -> 1, 1 target + 1
    random anchor at 224 px and 10 focal anchors at 96 px.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Size of the random views.
        feature_dim: Ignored unless given: D of the ViT (its width when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Projection (and prototype) dimension.
        n_prototypes: Number of prototypes K.
        mask_ratio: Fraction of the patch tokens dropped from the anchor views.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.
        temperature: Temperature of the prototype similarities.
        target_sharpen_temperature: Sharpening of the target assignment.
        sinkhorn_iterations: Sinkhorn iterations on the targets (0 disables).
        regularization_weight: Weight of the prior-matching regulariser.
        gather_distributed: Average the regulariser over all processes.
        focal_views: Number of focal views of the default transform.
        focal_crop_size: Size of the focal views; 96/224 of ``input_size`` (whole patches)
            when None.

    Shapes:
        ``training_step`` views: 2 of (B, 3, input_size, input_size), then focal
        (B, 3, focal_crop_size, focal_crop_size); ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "msn"
    ema_backbone_attr: ClassVar[str | None] = "target_backbone"
    eval_network: ClassVar[Literal["online", "ema"]] = "ema"  # MSN's code evaluates the target
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "target_backbone"),
        ("projection_head", "target_projection_head"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=1e-3,  # at the reference batch size 1024; warm-up from 2e-4, cosine to 1e-6
        reference_batch_size=1024,
        lr_scaling="linear",
        weight_decay=0.04,
        betas=(0.9, 0.999),
        warmup_epochs=15,
        # The weight decay follows a cosine 0.04 -> 0.4 (applied by the engine).
        extra={"weight_decay_end": 0.4, "start_lr": 2e-4, "final_lr": 1e-6},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 256,
        n_prototypes: int = 1024,
        mask_ratio: float = 0.15,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        temperature: float = 0.1,
        target_sharpen_temperature: float = 0.25,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        gather_distributed: bool = True,
        focal_views: int = 10,
        focal_crop_size: int | None = None,
    ) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"'mask_ratio' must be in [0, 1), got mask_ratio={mask_ratio!r}.")
        if not target_sharpen_temperature > 0:
            raise ValueError(
                "'target_sharpen_temperature' must be > 0, got "
                f"target_sharpen_temperature={target_sharpen_temperature!r}."
            )
        check_momentum(momentum_start, momentum_end)
        check_count("n_prototypes", n_prototypes, 1)
        check_count("focal_views", focal_views, 0)
        vit, dim, self_patch = _vit.build_masked_vit(backbone, input_size)
        super().__init__(vit, input_size, feature_dim or dim)
        self.patch_size = self_patch
        self.focal_crop_size = _vit.local_crop_size(
            input_size, self_patch, focal_crop_size, name="focal_crop_size"
        )
        self.focal_views = focal_views
        self.mask_ratio = mask_ratio
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.target_sharpen_temperature = target_sharpen_temperature
        self.projection_head = MSNProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projection_head = momentum_copy(self.projection_head)
        # Uniform in +-1/sqrt(output_dim), as the reference code initialises the prototypes.
        bound = 1.0 / math.sqrt(output_dim)
        self.prototypes = nn.Parameter(
            torch.empty(n_prototypes, output_dim).uniform_(-bound, bound)
        )
        self.criterion = self._build_loss(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            regularization_weight=regularization_weight,
            gather_distributed=gather_distributed,
        )

    def _build_loss(self, **loss_args: Any) -> MSNLoss:
        """The criterion, from MSNLoss's arguments (PMSN builds its own loss class)."""
        return MSNLoss(**loss_args)

    def momentum(self, info: StepInfo) -> float:
        """The EMA momentum of the step: linear from ``momentum_start`` to ``momentum_end``."""
        step, max_steps = scheduled_step(info)
        progress = step / (max_steps - 1) if max_steps > 1 else 1.0
        return self.momentum_start + (self.momentum_end - self.momentum_start) * progress

    def mask(self, images: Tensor) -> Tensor:
        """Draws ``idx_keep`` (B, K) for anchor images: the class token and a random
        ``1 - mask_ratio`` of the patches (the global torch generator)."""
        height, width = images.shape[-2:]
        num_tokens = 1 + (height // self.patch_size) * (width // self.patch_size)
        idx_keep, _ = random_token_mask(
            (images.shape[0], num_tokens), mask_ratio=self.mask_ratio, device=images.device
        )
        return idx_keep

    def _anchor(self, images: Tensor) -> Tensor:
        out: Tensor = self.projection_head(self.backbone(images, idx_keep=self.mask(images)))
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """MSN loss: view 0 is the target, views 1.. the anchors (random, then focal)."""
        if len(views) < 2:
            raise ValueError(
                f"{type(self).__name__} needs a target view and at least one anchor view, "
                f"got {len(views)} view(s)."
            )
        self.update_ema(info)
        with torch.no_grad():
            targets = self.target_projection_head(self.target_backbone(views[0]))
        # View-major (V * B, D) anchors, as MSNLoss expects.
        anchors = torch.cat(forward_views(self._anchor, views[1:]))
        loss: Tensor = self.criterion(
            anchors,
            targets,
            self.prototypes,
            target_sharpen_temperature=self.target_sharpen_temperature,
        )
        return loss

    def default_transform(self, **views: Any) -> MSNTransform:
        """1 target + 1 anchor view at ``input_size`` and ``focal_views`` focal views."""
        fixed = {
            "random_size": self.input_size,
            "focal_size": self.focal_crop_size,
            "random_views": 2,
            "focal_views": self.focal_views,
        }
        return build_views(MSNTransform, views, fixed)

    def trainable_modules(self) -> list[nn.Module]:
        """The anchor backbone and head, and the prototypes (the target is an EMA)."""
        prototypes = nn.ParameterList([self.prototypes])
        return [self.backbone, self.projection_head, prototypes]


class PMSN(MSN):
    """PMSN (Assran et al. 2023, https://arxiv.org/abs/2210.07277): MSN whose regulariser
    pulls the mean anchor assignment towards a power law ``p_k ∝ k ** -power_law_exponent``
    instead of the uniform distribution (:class:`~fastssl.loss.pmsn_loss.PMSNLoss`).

    Takes MSN's arguments plus ``power_law_exponent`` (0.25, the paper's value).

    Example:
        >>> from torchvision.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> model = PMSN(backbone=vit, input_size=32, hidden_dim=32, output_dim=16,
        ...              n_prototypes=8, focal_views=2, gather_distributed=False)
        >>> model.criterion.power_law_exponent
        0.25
    """

    name: ClassVar[str] = "pmsn"

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        power_law_exponent: float = 0.25,
        **kwargs: object,
    ) -> None:
        if not power_law_exponent > 0:
            raise ValueError(
                f"'power_law_exponent' must be > 0, got power_law_exponent={power_law_exponent!r}."
            )
        self._power_law_exponent = power_law_exponent
        super().__init__(backbone, input_size, feature_dim, **kwargs)  # type: ignore[arg-type]

    def _build_loss(self, **loss_args: Any) -> MSNLoss:
        return PMSNLoss(power_law_exponent=self._power_law_exponent, **loss_args)
