"""I-JEPA: a joint-embedding predictive architecture for images.

- Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
  Architecture", https://arxiv.org/abs/2301.08243

A context encoder (a ViT) sees one large block of patches; a narrow transformer, the
predictor, predicts from it the representations that a target encoder, an exponential moving
average (EMA) of the context encoder, gives to several other blocks of the same image (smooth
L1 loss on the layer-normalised target features). No augmentation beyond a crop, no
negatives: the masking is the task.

Example:
    >>> import torch
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> from fastssl.methods.base import StepInfo
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> model = IJEPA(backbone=vit, input_size=32, predictor_embed_dim=16, predictor_depth=1,
    ...               pred_mask_scale=(0.2, 0.3), min_keep=1)
    >>> loss = model.training_step([torch.randn(4, 3, 32, 32)], StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from PIL.Image import Image
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from fastssl.data.ijepa_collate import IJEPAMaskCollator
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, EMAMethod, check_count, check_momentum
from fastssl.methods.base import OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.ijepa import IJEPAPredictor
from fastssl.models.modules.ijepa_timm import IJEPAPredictorTIMM
from fastssl.models.modules.masked_vision_transformer import MaskedVisionTransformer
from fastssl.models.utils import apply_masks, momentum_copy, repeat_interleave_batch
from fastssl.transforms.ijepa_transform import IJEPATransform
from fastssl.utils import dist

#: Paper init: every linear / convolution weight ~ trunc_normal(0, 0.02), biases 0, norms 1/0.
_INIT_STD = 0.02


class IJEPAViewsTransform(IJEPATransform):
    """:class:`~fastssl.transforms.ijepa_transform.IJEPATransform` whose output is a list of
    one view, like every other method's transform, so that
    :class:`~fastssl.data.multi_view_collate.MultiViewCollate` batches it (the plain
    transform returns the view itself, as lightly's does).

    >>> IJEPAViewsTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))[0].shape
    torch.Size([3, 32, 32])
    """

    def __call__(self, image: Tensor | Image) -> list[Tensor]:  # type: ignore[override]
        """The one view of ``image``, in a list."""
        return [super().__call__(image)]


class _StepSeededMaskCollator(IJEPAMaskCollator):
    """IJEPAMaskCollator whose block sizes come from the batch number set in
    :attr:`batch_seed` instead of its own counter, so that a step draws the same masks
    however many times it runs (resumes, compiled graphs, several loader engines)."""

    batch_seed: int = 0

    def step(self) -> int:
        return self.batch_seed


@functools.lru_cache(maxsize=16)
def _collator(
    input_size: int,
    patch_size: int,
    enc_mask_scale: tuple[float, float],
    pred_mask_scale: tuple[float, float],
    aspect_ratio: tuple[float, float],
    nenc: int,
    npred: int,
    min_keep: int,
    allow_overlap: bool,
) -> _StepSeededMaskCollator:
    """One mask collator per configuration (the collator is not copyable, so methods keep
    their configuration and share collators through this cache)."""
    return _StepSeededMaskCollator(
        input_size=input_size,
        patch_size=patch_size,
        enc_mask_scale=enc_mask_scale,
        pred_mask_scale=pred_mask_scale,
        aspect_ratio=aspect_ratio,
        nenc=nenc,
        npred=npred,
        min_keep=min_keep,
        allow_overlap=allow_overlap,
    )


def _pair(values: Sequence[float]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


@torch.library.custom_op("fastssl::ijepa_masks", mutates_args=())
def _ijepa_masks(
    batch_size: int,
    step: int,
    seed: int,
    input_size: int,
    patch_size: int,
    enc_mask_scale: list[float],
    pred_mask_scale: list[float],
    aspect_ratio: list[float],
    nenc: int,
    npred: int,
    min_keep: int,
    allow_overlap: bool,
) -> tuple[Tensor, Tensor]:
    """I-JEPA's masks of one batch, drawn by :class:`IJEPAMaskCollator` (on the CPU).

    A custom operator so that ``torch.compile`` traces the training step as one graph: the
    sampling (Python loops, rejection) runs as one opaque call whose outputs have
    data-dependent lengths. Block sizes come from a generator seeded with ``step`` (the
    collator's batch counter, identical on every process, as in the paper); block positions
    from torch's generator, seeded here with ``(seed, step, rank)`` and restored afterwards.

    Returns:
        ``(masks_enc, masks_pred)`` of shapes (nenc, B, K_enc) and (npred, B, K_pred): patch
        indices (row-major), ascending within each mask.
    """
    collator = _collator(
        input_size,
        patch_size,
        _pair(enc_mask_scale),
        _pair(pred_mask_scale),
        _pair(aspect_ratio),
        nenc,
        npred,
        min_keep,
        allow_overlap,
    )
    collator.batch_seed = step
    position_seed = zlib.crc32(f"{seed}:{step}:{dist.rank()}".encode())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(position_seed)
        # The images stay where they are; the collator gets placeholders for them.
        _, masks_enc, masks_pred = collator([0] * batch_size)
    return torch.stack(masks_enc), torch.stack(masks_pred)


@_ijepa_masks.register_fake
def _ijepa_masks_fake(
    batch_size: int,
    step: int,
    seed: int,
    input_size: int,
    patch_size: int,
    enc_mask_scale: list[float],
    pred_mask_scale: list[float],
    aspect_ratio: list[float],
    nenc: int,
    npred: int,
    min_keep: int,
    allow_overlap: bool,
) -> tuple[Tensor, Tensor]:
    # Every kept block has more than min_keep patches and at most the whole grid.
    ctx = torch.library.get_ctx()
    num_patches = (input_size // patch_size) ** 2
    k_enc = ctx.new_dynamic_size(min=min_keep + 1, max=num_patches)
    k_pred = ctx.new_dynamic_size(min=min_keep + 1, max=num_patches)
    return (
        torch.empty(nenc, batch_size, k_enc, dtype=torch.long),
        torch.empty(npred, batch_size, k_pred, dtype=torch.long),
    )


@torch.no_grad()
def _init_weights(module: nn.Module) -> None:
    """I-JEPA's initialisation: trunc_normal(0.02) weights, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            nn.init.trunc_normal_(m.in_proj_weight, std=_INIT_STD)
            if m.in_proj_bias is not None:
                nn.init.zeros_(m.in_proj_bias)


class PatchEncoder(nn.Module):
    """A ViT that encodes patch tokens only, as I-JEPA's encoders (which have no class token).

    Wraps a :class:`~fastssl.models.modules.masked_vision_transformer.MaskedVisionTransformer`
    whose class token and mask token are never used: they are frozen, so that distributed
    training finds no parameter without a gradient. ``forward`` returns the average of the
    encoded patches, the representation the paper evaluates.

    Args:
        vit: The wrapped ViT (one class token, no register tokens).

    Shapes:
        ``forward``: (B, 3, H, W) -> (B, D); ``encode``: (B, 3, H, W) and (B, K) patch
        indices -> (B, K, D).
    """

    def __init__(self, vit: MaskedVisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.num_patches = vit.sequence_length - 1
        inner: Any = getattr(vit, "vit")  # noqa: B009 - set by both wrappers
        for name in ("class_token", "cls_token"):
            token = getattr(inner, name, None)
            if isinstance(token, nn.Parameter):
                token.requires_grad_(False)
        vit.mask_token.requires_grad_(False)

    def encode(self, images: Tensor, patch_idx: Tensor | None = None) -> Tensor:
        """Encodes the patches at ``patch_idx`` (B, K) of ``images`` (all patches if None)."""
        if patch_idx is None:
            patch_idx = torch.arange(self.num_patches, device=images.device)
            patch_idx = patch_idx.expand(images.shape[0], -1)
        # Token i + 1 is patch i: the class token (token 0) is left out.
        return self.vit.encode(images, idx_keep=patch_idx + 1)

    def forward(self, images: Tensor) -> Tensor:
        """Average of the encoded patches, (B, D)."""
        return self.encode(images).mean(dim=1)


def _num_heads(vit: MaskedVisionTransformer) -> int:
    inner: Any = getattr(vit, "vit")  # noqa: B009 - set by both wrappers
    if isinstance(inner, TorchvisionViT):
        return int(inner.encoder.layers[0].self_attention.num_heads)
    return int(inner.blocks[0].attn.num_heads)


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> None:
    ok = len(value) == 2 and low < value[0] <= value[1] <= high
    if not ok:
        raise ValueError(
            f"'{name}' must be (min, max) with {low} < min <= max <= {high}, "
            f"got {name}={tuple(value)!r}."
        )


class IJEPA(EMAMethod):
    """I-JEPA (Assran et al. 2023, https://arxiv.org/abs/2301.08243).

    Every step draws the paper's multi-block masks
    (:class:`~fastssl.data.ijepa_collate.IJEPAMaskCollator`: per batch one target block size,
    aspect ratio 0.75-1.5 and 15-20% of the patches, and one square context block of 85-100%;
    per image ``num_pred_masks`` target blocks and one context block without their patches)
    and returns ``smooth_l1(predictor(context(x_ctx)), layer_norm(target(x))[targets])``.
    After the backward pass (:meth:`before_optimizer_step`) the target encoder moves towards
    the context encoder, ``target = m * target + (1 - m) * context``, with ``m`` linear from
    ``momentum_start`` to ``momentum_end`` over the run (the paper's schedule).

    The masks are drawn inside the step, from generators seeded by the step (and by a seed
    drawn from torch's generator when the method is built), so that every data engine and
    resumed runs work unchanged, and through a custom operator so that ``torch.compile``
    traces the step as one graph. The EMA runs outside the step for the same reason (a
    schedule computed from the step inside the graph would recompile it); the paper moves the
    target after the optimizer step, so here it trails the paper's by one step.

    ``backbone`` must be a ViT: a torchvision name (``"vit_b_16"``) or ``VisionTransformer``
    (predictor: :class:`~fastssl.models.modules.IJEPAPredictor`, no timm needed; its MLP
    width is the encoder width, as lightly's), or ``"timm:<vit name>"`` / a timm
    ``VisionTransformer`` (predictor: :class:`~fastssl.models.modules.IJEPAPredictorTIMM`,
    MLP ratio 4 as the paper). The encoder gets the paper's initialisation and fixed
    sine-cosine positions; its class token is not used (the paper's ViT has none) and stays
    frozen. Features (``forward``, ``fastssl eval``) are the average of the encoded patches
    of the target encoder (:attr:`eval_network`), as the paper evaluates.

    Defaults are the paper's (ViT-H/14 recipe of the reference code,
    ``pipelines/ijepa.yaml``; the default backbone is the paper's smallest, ViT-B/16):
    predictor 12 blocks of width 384, 1 context and 4 target blocks, ``min_keep`` 10, EMA
    0.996 -> 1, AdamW with lr 1e-3 at batch 2048 (warm-up from 2e-4 over 40 epochs, cosine to
    1e-6), weight decay 0.04 -> 0.4, crops of 30-100% of the image.

    Args:
        backbone: A ViT name or module (see above).
        input_size: Image size; a multiple of the patch size.
        feature_dim: D of the ViT (its width when None).
        predictor_embed_dim: Width of the predictor.
        predictor_depth: Transformer blocks of the predictor.
        predictor_num_heads: Attention heads of the predictor (the encoder's when None).
        enc_mask_scale: Range of the context block's area, as a fraction of the patches.
        pred_mask_scale: Range of a target block's area.
        aspect_ratio: Range of a target block's height / width.
        num_enc_masks: Context blocks per image.
        num_pred_masks: Target blocks per image.
        min_keep: Every block keeps more than this many patches.
        allow_overlap: Let the context block overlap the target blocks.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step.

    Shapes:
        ``training_step`` views: one (B, 3, input_size, input_size); ``forward``:
        (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "ijepa"
    ema_backbone_attr: ClassVar[str | None] = "target_backbone"
    # The paper evaluates the target encoder, average-pooling its output.
    eval_network: ClassVar[Literal["online", "ema"]] = "ema"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("backbone", "target_backbone"),)
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=1e-3,
        reference_batch_size=2048,
        lr_scaling="linear",
        weight_decay=0.04,
        betas=(0.9, 0.999),
        warmup_epochs=40,
        # Weight decay cosine 0.04 -> 0.4; lr warm-up from 2e-4, cosine decay to 1e-6.
        extra={"weight_decay_end": 0.4, "start_lr": 2e-4, "final_lr": 1e-6},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        predictor_embed_dim: int = 384,
        predictor_depth: int = 12,
        predictor_num_heads: int | None = None,
        enc_mask_scale: tuple[float, float] = (0.85, 1.0),
        pred_mask_scale: tuple[float, float] = (0.15, 0.2),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        num_enc_masks: int = 1,
        num_pred_masks: int = 4,
        min_keep: int = 10,
        allow_overlap: bool = False,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
    ) -> None:
        check_count("predictor_embed_dim", predictor_embed_dim, 1)
        check_count("predictor_depth", predictor_depth, 1)
        if predictor_num_heads is not None:
            check_count("predictor_num_heads", predictor_num_heads, 1)
        _check_range("enc_mask_scale", enc_mask_scale, 0.0, 1.0)
        _check_range("pred_mask_scale", pred_mask_scale, 0.0, 1.0)
        _check_range("aspect_ratio", aspect_ratio, 0.0, math.inf)
        check_count("num_enc_masks", num_enc_masks, 1)
        check_count("num_pred_masks", num_pred_masks, 1)
        check_count("min_keep", min_keep, 0)
        check_momentum(momentum_start, momentum_end)
        # Fixed 2D sine-cosine positions, as the paper's encoder; weights: _init_weights below.
        vit, dim, patch_size = _vit.build_masked_vit(
            backbone, input_size, weight_initialization="skip", pos_embed_initialization="sincos"
        )
        if input_size % patch_size:
            raise ValueError(
                f"'input_size' must be a multiple of the patch size {patch_size}, "
                f"got input_size={input_size}."
            )
        heads = _num_heads(vit) if predictor_num_heads is None else predictor_num_heads
        if predictor_embed_dim % heads:
            raise ValueError(
                f"'predictor_embed_dim' must be a multiple of the predictor's heads, got "
                f"predictor_embed_dim={predictor_embed_dim} and {heads} heads "
                "(set predictor_num_heads)."
            )
        _init_weights(vit)
        super().__init__(PatchEncoder(vit), input_size, feature_dim or dim)
        self.patch_size = patch_size
        num_patches = (input_size // patch_size) ** 2
        self.predictor: IJEPAPredictor | IJEPAPredictorTIMM
        if isinstance(getattr(vit, "vit", None), TorchvisionViT):
            self.predictor = IJEPAPredictor(
                seq_length=1,
                num_layers=predictor_depth,
                num_heads=heads,
                hidden_dim=predictor_embed_dim,
                predictor_embed_dim=predictor_embed_dim,
                num_patches=num_patches,
                mlp_dim=dim,
                dropout=0.0,
                attention_dropout=0.0,
            )
            # torchvision's (unused) learned positions: frozen, no gradient ever reaches them.
            self.predictor.pos_embedding.requires_grad_(False)
        else:
            self.predictor = IJEPAPredictorTIMM(
                num_patches=num_patches,
                depth=predictor_depth,
                mlp_dim=dim,
                predictor_embed_dim=predictor_embed_dim,
                num_heads=heads,
            )
        _init_weights(self.predictor)
        mask_token = (
            self.predictor.mask_token
            if isinstance(self.predictor, IJEPAPredictor)
            else self.predictor.decoder.mask_token
        )
        nn.init.trunc_normal_(mask_token, std=_INIT_STD)
        self.target_backbone = momentum_copy(self.backbone)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.criterion = nn.SmoothL1Loss()
        self._mask_config = (
            input_size,
            patch_size,
            [float(v) for v in enc_mask_scale],
            [float(v) for v in pred_mask_scale],
            [float(v) for v in aspect_ratio],
            num_enc_masks,
            num_pred_masks,
            min_keep,
            allow_overlap,
        )
        # Fails now for a patch grid too small for blocks (the collator checks it).
        _collator(
            input_size,
            patch_size,
            _pair(enc_mask_scale),
            _pair(pred_mask_scale),
            _pair(aspect_ratio),
            num_enc_masks,
            num_pred_masks,
            min_keep,
            allow_overlap,
        )
        # Seed of the block positions: from torch's generator, so the run's seed sets it.
        self.mask_seed = int(torch.randint(0, 2**31 - 1, ()))

    def momentum(self, info: StepInfo) -> float:
        """EMA momentum of the step: linear from ``momentum_start`` (first step) to
        ``momentum_end`` (last step), the paper's schedule."""
        step = min(max(int(info.step), 0), max(int(info.max_steps), 1) - 1)
        span = max(int(info.max_steps) - 1, 1)
        return self.momentum_start + (self.momentum_end - self.momentum_start) * step / span

    def sample_masks(self, batch_size: int, info: StepInfo = FIRST_STEP) -> tuple[Tensor, Tensor]:
        """The masks of a step, on the CPU (see :class:`IJEPA`).

        Returns:
            ``(masks_enc, masks_pred)``: (num_enc_masks, B, K_enc) and (num_pred_masks, B,
            K_pred) patch indices; the same for the same ``info.step`` and method.
        """
        masks_enc, masks_pred = _ijepa_masks(
            batch_size, int(info.step), self.mask_seed, *self._mask_config
        )
        return masks_enc, masks_pred

    @torch.no_grad()
    def targets(self, images: Tensor, masks_pred: list[Tensor], num_enc: int) -> Tensor:
        """Layer-normalised target-encoder features of the target blocks, one copy per
        context mask: (num_pred * num_enc * B, K_pred, D)."""
        h = cast(PatchEncoder, self.target_backbone).encode(images)
        h = F.layer_norm(h, (h.shape[-1],))
        return repeat_interleave_batch(apply_masks(h, masks_pred), images.shape[0], num_enc)

    def predictions(
        self, images: Tensor, masks_enc: list[Tensor], masks_pred: list[Tensor]
    ) -> Tensor:
        """Predictor outputs for the target blocks: (num_pred * num_enc * B, K_pred, D)."""
        encoder = cast(PatchEncoder, self.backbone)
        context = torch.cat([encoder.encode(images, mask) for mask in masks_enc])
        out: Tensor = self.predictor(context, masks_enc, masks_pred)
        return out

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """I-JEPA loss of a batch of single views, with the step's masks."""
        if len(views) != 1:
            raise ValueError(f"IJEPA needs exactly 1 view per batch, got {len(views)}.")
        images = views[0]
        masks_enc, masks_pred = self.sample_masks(images.shape[0], info)
        enc = list(masks_enc.to(images.device, non_blocking=True).unbind(0))
        pred = list(masks_pred.to(images.device, non_blocking=True).unbind(0))
        target = self.targets(images, pred, len(enc))
        loss: Tensor = self.criterion(self.predictions(images, enc, pred), target)
        return loss

    def before_optimizer_step(self, info: StepInfo) -> None:
        """Moves the target encoder towards the context encoder (see :class:`IJEPA`)."""
        self.update_ema(info)

    def default_transform(self, **views: Any) -> IJEPAViewsTransform:
        """I-JEPA's random resized crop (30-100% of the image, the paper's) at ``input_size``."""
        return build_views(
            IJEPAViewsTransform, views, {"input_size": self.input_size}, {"min_scale": 0.3}
        )

    def trainable_modules(self) -> list[nn.Module]:
        """The context encoder and the predictor (the target encoder is an EMA)."""
        return [self.backbone, self.predictor]
