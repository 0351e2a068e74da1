"""DINOv2: self-distillation of class and masked patch tokens.

- Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision",
  https://arxiv.org/abs/2304.07193

A student ViT matches an EMA teacher on the class token of every crop (the DINO loss) and,
for the block-masked patches of the global crops, on the patch tokens (the iBOT loss), while
the KoLeo regulariser spreads the student's class tokens uniformly over the batch.

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> from fastssl.methods.base import StepInfo
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = DINOv2(backbone=vit, input_size=32, hidden_dim=32, bottleneck_dim=16,
    ...                output_dim=64, n_local_views=2)
    >>> views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)] * 2
    >>> loss = model.training_step(views, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from fastssl.loss.dino_loss import DINOLoss
from fastssl.loss.ibot_loss import IBOTPatchLoss
from fastssl.loss.koleo_loss import KoLeoLoss
from fastssl.methods import _vit
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_dims,
    check_momentum,
    forward_views,
)
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.clustering import DINOv2ProjectionHead
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.utils import (
    momentum_copy,
    random_block_mask,
)
from fastssl.transforms.dino_transform import DINOTransform


# One opaque call for torch.compile: the block sampling is a Python loop over random draws.
@torch.library.custom_op("fastssl::dinov2_block_masks", mutates_args=())
def _block_masks(
    batch_size: int,
    height: int,
    width: int,
    mask_probability: float,
    min_mask_ratio: float,
    max_mask_ratio: float,
    device: torch.device,
) -> Tensor:
    """DINOv2's patch masks (B, height, width) of a batch of global crops, True = masked.

    Blocks cover 4 to half of the patches, as in the reference collate (``MaskingGenerator``
    with ``max_num_patches=0.5 * num_patches``); grids of fewer than 8 patches lower the
    smallest block to fit.
    """
    max_per_block = max(1, int(0.5 * height * width))
    masks = random_block_mask(
        (batch_size, height, width),
        batch_mask_ratio=mask_probability,
        min_image_mask_ratio=min_mask_ratio,
        max_image_mask_ratio=max_mask_ratio,
        min_num_masks_per_block=min(4, max_per_block),
        max_num_masks_per_block=max_per_block,
        device=device,
    )
    return masks.contiguous()


@_block_masks.register_fake
def _(
    batch_size: int,
    height: int,
    width: int,
    mask_probability: float,
    min_mask_ratio: float,
    max_mask_ratio: float,
    device: torch.device,
) -> Tensor:
    return torch.empty(batch_size, height, width, dtype=torch.bool, device=device)


def _rows(patches: Tensor, rows: Tensor) -> Tensor:
    """Patch tokens (B, N, D) at ``rows`` of their (B * N, D) flattening: (M, D)."""
    return patches.flatten(0, 1).index_select(0, rows)


class DINOv2Heads(nn.Module):
    """The DINO head of the class tokens and the iBOT head of the patch tokens.

    Args:
        dino: Head of the class tokens.
        ibot: Head of the patch tokens; None shares ``dino`` (DINOv2's default).
    """

    def __init__(self, dino: DINOv2ProjectionHead, ibot: DINOv2ProjectionHead | None) -> None:
        super().__init__()
        self.dino = dino
        self.ibot = ibot

    def patch_head(self) -> DINOv2ProjectionHead:
        """The head of the patch tokens."""
        return self.dino if self.ibot is None else self.ibot

    def heads(self) -> list[DINOv2ProjectionHead]:
        """The distinct heads."""
        return [self.dino] if self.ibot is None else [self.dino, self.ibot]


class DINOv2(EMAMethod):
    """DINOv2 (Oquab et al. 2023, https://arxiv.org/abs/2304.07193).

    Each step first moves the teacher (backbone and heads) towards the student,
    ``teacher = m * teacher + (1 - m) * student`` with ``m`` following a cosine from
    ``momentum_start`` to ``momentum_end`` over the run's optimizer steps. Then, with the
    two global crops ``g`` (masked for the student only) and the local crops ``l``::

        loss = DINOLoss(teacher_cls(g), student_cls(g + l))
             + ibot_loss_weight * IBOTPatchLoss(teacher_patches(g), student_patches(g), mask)
             + koleo_loss_weight * sum_{global crop} KoLeoLoss(student class tokens)

    The DINO loss compares every teacher view with every other student view; the iBOT loss
    compares teacher and student patch tokens at the masked positions (the student sees the
    backbone's mask token there). Masks are DINOv2's: a ``mask_probability`` fraction of
    the global crops is block-masked, with ratios spread over
    [``min_mask_ratio``, ``max_mask_ratio``]. Both losses centre the teacher outputs and
    use the same teacher temperature, which warms up linearly with ``StepInfo.epoch``; the
    heads' last layers get no update during the first ``freeze_last_layer`` epochs.

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``) or module, or
    ``"timm:<vit name>"`` / a timm ``VisionTransformer`` with one class token, e.g.
    ``"timm:vit_large_patch16_224(init_values=1.0e-05)"`` for DINOv2's LayerScale. Its own
    initialisation and positional embedding are kept. ``drop_path_rate`` gives the
    student's blocks DINOv2's uniform stochastic depth; the teacher (a copy) has none.
    ``fastssl eval`` and ``fastssl export`` use the teacher (:attr:`eval_network`), as the
    paper does.

    Defaults are the reference code's (``ssl_default_config.yaml``, the ImageNet-1k ViT-L/16
    recipe): one head 2048-2048-256 with 65536 prototypes shared by the DINO and iBOT losses,
    teacher temperature 0.04 -> 0.07 over 30 epochs, student temperature 0.1, centre
    momentum 0.9, EMA 0.992 -> 1, half of the global crops masked at 10-50%, KoLeo weight
    0.1, last layer frozen for 1 epoch, 2 global crops (scale 0.32-1) and 8 local crops
    (scale 0.05-0.32). The reference's "epochs" are 1250 iterations; pipelines/dinov2.yaml
    converts them to passes over ImageNet.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Size of the global crops.
        feature_dim: D of the ViT (its width when None).
        hidden_dim: Hidden width of the heads.
        bottleneck_dim: Width before the heads' weight-normalised last layer.
        output_dim: Number of prototypes K of each head.
        ibot_separate_head: Give the patch tokens their own head (DINOv2's large runs).
        freeze_last_layer: Epochs during which the heads' last layers are not updated.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.
        warmup_teacher_temp: Teacher temperature at epoch 0.
        teacher_temp: Teacher temperature after the warm-up.
        warmup_teacher_temp_epochs: Epochs of the teacher temperature warm-up.
        student_temp: Student temperature.
        center_momentum: Momentum of the teacher output centres.
        ibot_loss_weight: Weight of the iBOT loss.
        koleo_loss_weight: Weight of the KoLeo regulariser.
        mask_probability: Fraction of the global crops that are masked.
        min_mask_ratio: Smallest fraction of a masked crop's patches that is masked.
        max_mask_ratio: Largest fraction of a masked crop's patches that is masked.
        drop_path_rate: Uniform stochastic depth of every student block; None keeps the
            backbone's own.
        n_local_views: Number of local crops of the default transform.
        local_crop_size: Size of the local crops; 96/224 of ``input_size`` (rounded to whole
            patches) when None.

    Shapes:
        ``training_step`` views: 2 global (B, 3, input_size, input_size) then local
        (B, 3, local_crop_size, local_crop_size); ``forward``: (B, 3, H, W) -> (B, D)
        (the class token).
    """

    _temperatures: Tensor  # teacher temperature per epoch, then the final one

    name: ClassVar[str] = "dinov2"
    ema_backbone_attr: ClassVar[str | None] = "teacher_backbone"
    # The paper evaluates the teacher (the reference code saves and evaluates
    # teacher_checkpoint.pth).
    eval_network: ClassVar[Literal["online", "ema"]] = "ema"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "teacher_backbone"),
        ("head", "teacher_head"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=0.004,  # base_lr for a batch of 1024, scaled with sqrt (scaling_rule sqrt_wrt_1024)
        reference_batch_size=1024,
        lr_scaling="sqrt",
        weight_decay=0.04,
        betas=(0.9, 0.999),
        warmup_epochs=10,
        # Weight decay 0.04 -> 0.4 (cosine), lr decaying (cosine) to 1e-6, gradients clipped
        # at norm 3. The reference's layer-wise lr decay (0.9) and patch-embedding lr
        # multiplier (0.2) are not applied by the engine.
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
        ibot_separate_head: bool = False,
        freeze_last_layer: int = 1,
        momentum_start: float = 0.992,
        momentum_end: float = 1.0,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        ibot_loss_weight: float = 1.0,
        koleo_loss_weight: float = 0.1,
        mask_probability: float = 0.5,
        min_mask_ratio: float = 0.1,
        max_mask_ratio: float = 0.5,
        drop_path_rate: float | None = None,
        n_local_views: int = 8,
        local_crop_size: int | None = None,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, output_dim=output_dim)
        check_momentum(momentum_start, momentum_end)
        check_count("n_local_views", n_local_views, 0)
        check_count("freeze_last_layer", freeze_last_layer, 0)
        check_count("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, 0)
        for arg, value in (
            ("ibot_loss_weight", ibot_loss_weight),
            ("koleo_loss_weight", koleo_loss_weight),
        ):
            if not value >= 0:
                raise ValueError(f"'{arg}' must be >= 0, got {arg}={value!r}.")
        if not 0.0 <= mask_probability <= 1.0:
            raise ValueError(
                f"'mask_probability' must be in [0, 1], got mask_probability={mask_probability!r}."
            )
        if not 0.0 <= min_mask_ratio <= max_mask_ratio <= 1.0:
            raise ValueError(
                "'min_mask_ratio' and 'max_mask_ratio' must satisfy 0 <= min_mask_ratio <= "
                f"max_mask_ratio <= 1, got min_mask_ratio={min_mask_ratio!r} and "
                f"max_mask_ratio={max_mask_ratio!r}."
            )
        if drop_path_rate is not None and not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(
                "'drop_path_rate' must be in [0, 1) or None, got "
                f"drop_path_rate={drop_path_rate!r}."
            )
        vit, dim, patch_size = _vit.build_masked_vit(
            backbone, input_size, weight_initialization="skip", pos_embed_initialization="skip"
        )
        # The reference resizes positional embeddings (local crops) without antialiasing.
        cast(Any, vit).antialias = False
        if drop_path_rate is not None:
            _vit.uniform_drop_path(vit, drop_path_rate)
        if ibot_loss_weight == 0 or mask_probability == 0:
            # Nothing is masked: freeze the unused mask token (DDP expects every parameter
            # that requires a gradient to get one).
            vit.mask_token.requires_grad_(False)
        super().__init__(vit, input_size, feature_dim or dim)
        self.patch_size = patch_size
        self.local_crop_size = _vit.local_crop_size(input_size, patch_size, local_crop_size)
        self.n_local_views = n_local_views
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.freeze_last_layer = freeze_last_layer
        self.ibot_loss_weight, self.koleo_loss_weight = ibot_loss_weight, koleo_loss_weight
        self.mask_probability = mask_probability
        self.min_mask_ratio, self.max_mask_ratio = min_mask_ratio, max_mask_ratio

        def make_head() -> DINOv2ProjectionHead:
            return DINOv2ProjectionHead(self.feature_dim, hidden_dim, bottleneck_dim, output_dim)

        self.head = DINOv2Heads(make_head(), make_head() if ibot_separate_head else None)
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = cast(DINOv2Heads, momentum_copy(self.head))
        # The teacher temperature of every warm-up epoch, then teacher_temp (as DINOLoss's
        # own schedule), looked up as a tensor so that a compiled step does not recompile
        # every epoch.
        self.teacher_temp = teacher_temp
        self.teacher_temps = torch.linspace(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs
        ).tolist()
        temperatures = torch.tensor([*self.teacher_temps, teacher_temp])
        self.register_buffer("_temperatures", temperatures, persistent=False)
        self.dino_criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.ibot_criterion = IBOTPatchLoss(
            output_dim=output_dim,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.koleo_criterion = KoLeoLoss()

    def teacher_temperature(self, epoch: int) -> Tensor:
        """Teacher temperature of ``epoch`` (a 0-d tensor): linear warm-up, then
        ``teacher_temp``."""
        return self._temperatures[min(max(epoch, 0), len(self.teacher_temps))]

    def masks(self, batch_size: int, height: int, width: int, device: torch.device) -> Tensor:
        """Random block masks (batch_size, height, width) of the global crops, True = masked."""
        return _block_masks(
            batch_size,
            height,
            width,
            self.mask_probability,
            self.min_mask_ratio,
            self.max_mask_ratio,
            device,
        )

    def _student_local(self, images: Tensor) -> Tensor:
        tokens = cast(MaskedVisionTransformer, self.backbone).encode(images)
        out: Tensor = self.head.dino(tokens[:, 0])
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """DINOv2 loss of a batch: 2 global views first, then the local views."""
        if len(views) < 2 or views[0].shape != views[1].shape:
            raise ValueError(
                "DINOv2 needs at least 2 views, the 2 global crops (of one size) first, got "
                f"{[tuple(v.shape) for v in views]}."
            )
        self.update_ema(info)
        backbone = cast(MaskedVisionTransformer, self.backbone)
        teacher_backbone = cast(MaskedVisionTransformer, self.teacher_backbone)
        images = torch.cat([views[0], views[1]])  # (2B, 3, H, W)
        temperature = self.teacher_temperature(info.epoch)
        # No iBOT term when no crop can be masked: its centre would average nothing.
        ibot = self.ibot_loss_weight > 0 and int(images.shape[0] * self.mask_probability) > 0
        token_mask = None
        if ibot:
            height = images.shape[-2] // self.patch_size
            width = images.shape[-1] // self.patch_size
            masks = self.masks(images.shape[0], height, width, images.device)  # (2B, h, w)
            masked = masks.flatten(1)  # (2B, h * w)
            # Rows of the masked patches among all (image, patch) pairs, row-major as
            # x[masks] orders them.
            masked_rows = masked.flatten().nonzero().squeeze(1)  # (M,)
            # The class token is never masked.
            token_mask = torch.cat([masked.new_zeros(masked.shape[0], 1), masked], dim=1)

        with torch.no_grad():
            teacher_tokens = teacher_backbone.encode(images)
            teacher_cls = self.teacher_head.dino(teacher_tokens[:, 0])
        student_tokens = backbone.encode(images, mask=token_mask)
        student_cls_tokens = student_tokens[:, 0]
        student_cls = self.head.dino(student_cls_tokens)
        local_cls = forward_views(self._student_local, views[2:])
        loss: Tensor = self.dino_criterion(
            list(teacher_cls.chunk(2)),
            [*student_cls.chunk(2), *local_cls],
            teacher_temp=temperature,
        )
        if ibot:
            with torch.no_grad():
                teacher_patches = self.teacher_head.patch_head()(
                    _rows(teacher_tokens[:, 1:], masked_rows)
                )
            student_patches = self.head.patch_head()(_rows(student_tokens[:, 1:], masked_rows))
            ibot_loss: Tensor = self.ibot_criterion(
                teacher_patches, student_patches, masks, teacher_temp=temperature
            )
            loss = loss + self.ibot_loss_weight * ibot_loss
        if self.koleo_loss_weight > 0:
            koleo = sum(self.koleo_criterion(c) for c in student_cls_tokens.chunk(2))
            loss = loss + self.koleo_loss_weight * koleo
        return loss

    def before_optimizer_step(self, info: StepInfo) -> None:
        """Drops the gradients of the heads' last layers during the first epochs."""
        if info.epoch < self.freeze_last_layer:
            for head in self.head.heads():
                for param in head.last_layer.parameters():
                    param.grad = None

    def default_transform(self, **views: Any) -> DINOTransform:
        """DINOv2's crops: two global crops (scale 0.32-1) at ``input_size`` and
        ``n_local_views`` local crops (scale 0.05-0.32)."""
        fixed = {
            "global_crop_size": self.input_size,
            "local_crop_size": self.local_crop_size,
            "n_local_views": self.n_local_views,
        }
        defaults = {"global_crop_scale": (0.32, 1.0), "local_crop_scale": (0.05, 0.32)}
        return build_views(DINOTransform, views, fixed, defaults)

    def trainable_modules(self) -> list[nn.Module]:
        """The student backbone (mask token included) and heads (the teacher is an EMA)."""
        return [self.backbone, self.head]
