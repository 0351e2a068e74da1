"""DetCon: contrastive detection, in its SimCLR (DetCon-S) and BYOL (DetCon-B) variants.

- Hénaff, Koppula, Alayrac, van den Oord, Vinyals and Carreira 2021, "Efficient Visual
  Pretraining with Contrastive Detection", https://arxiv.org/abs/2103.10957
  (code: https://github.com/google-deepmind/detcon)

The feature maps of two views are average-pooled under the masks of a segmentation of the
image that follows the views' crops and flips; a pooled region is pulled towards the region
with the same mask id in the other view and pushed away from all other regions, of its own
image and of the other images.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = DetConB(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> masks = [torch.randint(0, 16, (4, 1, 32, 32)) for _ in range(2)]
    >>> loss = model.training_step(views + masks, StepInfo(step=0, max_steps=10))
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from fastssl.loss.detcon_loss import DetConBLoss, DetConSLoss
from fastssl.methods._common import (
    FIRST_STEP,
    EMAMethod,
    check_count,
    check_dims,
    check_momentum,
)
from fastssl.methods._dense import feature_map_backbone
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.contrastive import SimCLRProjectionHead
from fastssl.models.modules.heads.siamese import BYOLPredictionHead, BYOLProjectionHead
from fastssl.models.utils import momentum_copy, pool_masked
from fastssl.transforms.detcon_transform import DetConSTransform


class DetConViews(DetConSTransform):
    """:class:`~fastssl.transforms.DetConSTransform` for the training loader: takes an image
    alone and returns ``[view_0, view_1, mask_0, mask_1]``.

    The loader calls a transform with the image only, so with ``grid_size`` a blank
    placeholder mask is added for the grid to replace (with ``mask_fn`` the transform makes
    the mask itself). Views first, then masks, as VICRegL's transform lists views, then
    grids: every item is a tensor, so :class:`~fastssl.data.MultiViewCollate` stacks them.

    Output: 2 float32 images (3, s, s), then their integer masks (1, s, s).

    >>> import torch
    >>> out = DetConViews(grid_size=(2, 2), input_size=32)(torch.zeros(3, 40, 40))
    >>> [tuple(o.shape) for o in out], out[2].unique().tolist()
    ([(3, 32, 32), (3, 32, 32), (1, 32, 32), (1, 32, 32)], [0, 1, 2, 3])
    """

    def __call__(self, *args: Any) -> list[Any]:
        """``[view_0, view_1, mask_0, mask_1]`` of ``image`` (or of ``image, mask``)."""
        if len(args) == 1 and self.mask_fn is None:
            height, width = TF.get_size(args[0])
            args = (args[0], tv_tensors.Mask(torch.zeros(1, height, width, dtype=torch.long)))
        pairs = super().__call__(*args)
        return [image.as_subclass(Tensor) for image, _ in pairs] + [
            mask.as_subclass(Tensor) for _, mask in pairs
        ]


def downsample_mask(mask: Tensor, size: Sequence[int], num_ids: int) -> Tensor:
    """The most frequent mask id of every cell of a ``size`` grid over the mask.

    The reference code average-pools one-hot masks to the feature map and takes the argmax;
    this counts the ids per cell instead (no (B, K, H, W) one-hot), with the same result:
    ties go to the smallest id. Pixel row ``i`` of ``H`` falls in cell row ``i * h // H``.

    Args:
        mask: Integer mask ids in [0, num_ids), shape (B, 1, H, W) or (B, H, W).
        size: ``(h, w)`` of the feature map.
        num_ids: Number of mask ids K.

    Returns:
        Long tensor (B, h, w).
    """
    if mask.dim() == 4:
        mask = mask[:, 0]
    b, height, width = mask.shape
    h, w = int(size[0]), int(size[1])
    rows = torch.arange(height, device=mask.device) * h // height
    cols = torch.arange(width, device=mask.device) * w // width
    cell = rows[:, None] * w + cols[None, :]  # (H, W)
    index = (cell * num_ids + mask.long()).flatten(1)  # (B, H * W)
    counts = torch.zeros(b, h * w * num_ids, device=mask.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=counts.dtype))
    return counts.view(b, h, w, num_ids).argmax(dim=-1)


class _DetCon(Method):
    """What DetCon-S and DetCon-B share: masks, sampled regions, pooled features."""

    #: The transform's arguments that DetCon-B changes (BYOL's blur of the second view).
    view_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        backbone: str | nn.Module,
        input_size: int,
        feature_dim: int | None,
        num_samples: int,
        grid_size: tuple[int, int],
        num_mask_ids: int | None,
    ) -> None:
        check_count("num_samples", num_samples, 1)
        if len(grid_size) != 2:
            raise ValueError(f"'grid_size' must be (rows, cols), got grid_size={grid_size!r}.")
        check_count("grid_size[0]", grid_size[0], 1)
        check_count("grid_size[1]", grid_size[1], 1)
        if num_mask_ids is not None:
            check_count("num_mask_ids", num_mask_ids, 1)
        trunk, channels = feature_map_backbone(
            backbone, input_size, feature_dim, type(self).__name__
        )
        super().__init__(trunk, input_size, channels)
        self.num_samples = num_samples
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self._mask_ids_given = num_mask_ids is not None
        self.num_mask_ids = num_mask_ids or self.grid_size[0] * self.grid_size[1]

    def forward(self, images: Tensor) -> Tensor:
        """Globally pooled backbone features (B, C) of images (B, 3, H, W)."""
        return self.backbone(images).mean(dim=(2, 3))

    def _views(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if len(views) != 4:
            raise ValueError(
                f"{type(self).__name__} needs 2 views and their 2 masks per batch "
                f"([view_0, view_1, mask_0, mask_1], see default_transform), got "
                f"{len(views)} tensors."
            )
        return views[0], views[1], views[2], views[3]

    def sample_regions(self, mask: Tensor) -> Tensor:
        """``num_samples`` mask ids (B, num_samples) per image, drawn uniformly with
        replacement among the ids present in ``mask`` (B, h, w), as the reference code."""
        present = torch.zeros(mask.shape[0], self.num_mask_ids, device=mask.device)
        present.scatter_(1, mask.flatten(1), 1.0)
        return torch.multinomial(present, self.num_samples, replacement=True)

    def pool(self, maps: Tensor, mask: Tensor, ids: Tensor) -> Tensor:
        """Mean of ``maps`` (B, C, h, w) over each region ``ids`` (B, M) of ``mask`` (B, h, w):
        (B, M, C)."""
        pooled = pool_masked(maps, mask, self.num_mask_ids).transpose(1, 2)  # (B, K, C)
        return torch.gather(pooled, 1, ids[..., None].expand(-1, -1, pooled.shape[-1]))

    @staticmethod
    def project(head: nn.Module, regions: Tensor) -> Tensor:
        """``head`` on every region: (B, M, C) -> (B, M, D); batch norm sees all B * M."""
        out: Tensor = head(regions.flatten(end_dim=1))
        return out.unflatten(0, regions.shape[:2])

    def regions(self, maps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mask at the map's size (B, h, w), sampled ids (B, M), pooled (B, M, C))``."""
        small = downsample_mask(mask, maps.shape[-2:], self.num_mask_ids)
        ids = self.sample_regions(small)
        return small, ids, self.pool(maps, small, ids)

    def default_transform(self, **views: Any) -> DetConViews:
        """DetCon's two views of an image and of its segmentation: SimCLR's augmentations
        (:class:`~fastssl.transforms.DetConSTransform`) at ``input_size`` on a
        ``grid_size`` grid, or on the segmentation of ``mask_fn`` (e.g. Felzenszwalb's, as
        the paper; ids below ``num_mask_ids``) when ``views`` gives one."""
        if views.get("mask_fn") is not None and not self._mask_ids_given:
            raise ValueError(
                "views.mask_fn: set method_kwargs.num_mask_ids to the number of mask ids "
                "its segmentations can have (the reference code uses 256)"
            )
        grid = None if views.get("mask_fn") is not None else self.grid_size
        fixed = {"input_size": self.input_size, "grid_size": grid}
        return build_views(DetConViews, views, fixed, self.view_defaults)


class DetConS(_DetCon):
    """DetCon-S (Hénaff et al. 2021, https://arxiv.org/abs/2103.10957): SimCLR on regions.

    Both views go through the backbone; each feature map is pooled under ``num_samples``
    mask ids drawn per image among those present in that view (after the mask is brought
    to the map's size by a majority vote per cell); one projection head maps every region;
    the loss is :class:`~fastssl.loss.detcon_loss.DetConSLoss` of the two views' regions
    with their ids (positives: same image, same id, other view).

    Defaults: DetCon-S reuses SimCLR's network and recipe (2048-2048-128 head with batch
    norm, temperature 0.1, LARS with lr 0.3 x B/256, weight decay 1e-6), 16 sampled masks
    per view (the reference code), the views of LightlySSL's ``DetConSTransform``. Masks
    are a ``grid_size`` grid (the paper's spatial heuristic; its best masks come from
    unsupervised segmenters, which need ``mask_fn``).

    Args:
        backbone: A ResNet name, ``"timm:<cnn>"``, or a module returning (B, C, h, w) maps.
        input_size: Size of the views.
        feature_dim: Channels C of a module's feature map (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Output width of the projection head.
        num_samples: Mask ids sampled per image and view.
        grid_size: (rows, cols) of the grid masks of :meth:`default_transform`.
        num_mask_ids: Mask ids are below it (default: rows x cols of ``grid_size``).
        temperature: Temperature of the contrastive loss.
        gather_distributed: Use the regions of all processes as negatives.

    Shapes:
        ``training_step`` views: ``[view_0, view_1, mask_0, mask_1]``: images
        (B, 3, s, s) and integer masks (B, 1, s, s) (:meth:`default_transform`);
        ``forward``: (B, 3, H, W) -> (B, C) pooled features.
    """

    name: ClassVar[str] = "detcons"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.3, weight_decay=1e-6
    )

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_samples: int = 16,
        grid_size: tuple[int, int] = (4, 4),
        num_mask_ids: int | None = None,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        super().__init__(backbone, input_size, feature_dim, num_samples, grid_size, num_mask_ids)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion = DetConSLoss(temperature=temperature, gather_distributed=gather_distributed)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """The DetCon-S loss of the two views' sampled regions."""
        x0, x1, mask0, mask1 = self._views(views)
        _, ids0, regions0 = self.regions(self.backbone(x0), mask0)
        _, ids1, regions1 = self.regions(self.backbone(x1), mask1)
        z0 = self.project(self.projection_head, regions0)
        z1 = self.project(self.projection_head, regions1)
        loss: Tensor = self.criterion(z0, z1, ids0, ids1)
        return loss


class DetConB(_DetCon, EMAMethod):
    """DetCon-B (Hénaff et al. 2021, https://arxiv.org/abs/2103.10957): BYOL on regions.

    Each step first moves the target network (backbone and projector) towards the online
    one, ``target = tau * target + (1 - tau) * online`` with ``tau`` on a cosine from
    ``momentum_start`` to ``momentum_end``. For each view, the mask is brought to the
    feature map's size (majority vote per cell) and ``num_samples`` ids are drawn per image
    among those present; the online network pools its map under them, projects and
    predicts every region, the target network (no gradient) pools and projects them under
    the same ids. The loss is :class:`~fastssl.loss.detcon_loss.DetConBLoss` of the
    predictions and targets of both views (positives: same image, same id, other view).

    Defaults are the reference code's ImageNet recipe (detcon_b_config.py): projector and
    predictor 4096-256 with batch norm, 16 sampled masks, temperature 0.1, tau 0.996 -> 1,
    LARS with lr 0.2 x B/256 and weight decay 1.5e-6, BYOL's views (blur 1.0 / 0.1).
    Masks are a ``grid_size`` grid (the paper's spatial heuristic; the reference code
    trains on Felzenszwalb segmentations, which need ``mask_fn``).

    Args:
        backbone: A ResNet name, ``"timm:<cnn>"``, or a module returning (B, C, h, w) maps.
        input_size: Size of the views.
        feature_dim: Channels C of a module's feature map (measured when None).
        hidden_dim: Hidden width of the projector and the predictor.
        output_dim: Output width of the projector and the predictor.
        num_samples: Mask ids sampled per image and view.
        grid_size: (rows, cols) of the grid masks of :meth:`default_transform`.
        num_mask_ids: Mask ids are below it (default: rows x cols of ``grid_size``).
        temperature: Temperature of the contrastive loss.
        momentum_start: tau at the first step.
        momentum_end: tau at the last step.
        gather_distributed: Use the targets of all processes as negatives.

    Shapes:
        ``training_step`` views: ``[view_0, view_1, mask_0, mask_1]``: images
        (B, 3, s, s) and integer masks (B, 1, s, s) (:meth:`default_transform`);
        ``forward``: (B, 3, H, W) -> (B, C) pooled features.
    """

    name: ClassVar[str] = "detconb"
    ema_backbone_attr: ClassVar[str | None] = "backbone_momentum"
    ema_pairs: ClassVar[tuple[tuple[str, str], ...]] = (
        ("backbone", "backbone_momentum"),
        ("projection_head", "projection_head_momentum"),
    )
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1.5e-6
    )
    view_defaults: ClassVar[dict[str, Any]] = {"gaussian_blur_t1": 1.0, "gaussian_blur_t2": 0.1}

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        num_samples: int = 16,
        grid_size: tuple[int, int] = (4, 4),
        num_mask_ids: int | None = None,
        temperature: float = 0.1,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_momentum(momentum_start, momentum_end)
        super().__init__(backbone, input_size, feature_dim, num_samples, grid_size, num_mask_ids)
        self.momentum_start, self.momentum_end = momentum_start, momentum_end
        self.projection_head = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = DetConBLoss(temperature=temperature, gather_distributed=gather_distributed)

    def online(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mask at the map's size, sampled ids (B, M), predictions (B, M, output_dim))``."""
        small, ids, regions = self.regions(self.backbone(images), mask)
        projections = self.project(self.projection_head, regions)
        return small, ids, self.project(self.prediction_head, projections)

    @torch.no_grad()
    def target(self, images: Tensor, small_mask: Tensor, ids: Tensor) -> Tensor:
        """Target projections (B, M, output_dim) of the regions ``ids``, without gradient."""
        regions = self.pool(self.backbone_momentum(images), small_mask, ids)
        return self.project(self.projection_head_momentum, regions)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """The DetCon-B loss: online predictions of both views against both targets."""
        x0, x1, mask0, mask1 = self._views(views)
        self.update_ema(info)
        small0, ids0, p0 = self.online(x0, mask0)
        small1, ids1, p1 = self.online(x1, mask1)
        t0, t1 = self.target(x0, small0, ids0), self.target(x1, small1, ids1)
        loss: Tensor = self.criterion(p0, p1, t0, t1, ids0, ids1)
        return loss

    def trainable_modules(self) -> list[nn.Module]:
        """The online backbone, projector and predictor (the target is an EMA)."""
        return [self.backbone, self.projection_head, self.prediction_head]


__all__ = ["DetConB", "DetConS", "DetConViews", "downsample_mask"]
