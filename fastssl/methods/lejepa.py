"""LeJEPA: views predict each other's embeddings, kept isotropic Gaussian by SIGReg.

- Balestriero and LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning
  Without the Heuristics", https://arxiv.org/abs/2511.08544

The embeddings of every view of an image are pulled towards the mean embedding of its
global views (prediction / invariance), while SIGReg (Sketched Isotropic Gaussian
Regularization) pushes the distribution of the embeddings towards a standard isotropic
Gaussian; one trade-off hyper-parameter, no teacher, no stop-gradient, no schedules.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = LeJEPA(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=16,
    ...                n_local_views=2, sigreg_num_vectors=64)
    >>> views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 14, 14)] * 2
    >>> loss = model.training_step(views, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fastssl.loss.lejepa_loss import LeJEPALoss
from fastssl.methods import _vit
from fastssl.methods._common import FIRST_STEP, check_count, check_dims, embed, forward_views
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.redundancy import LeJEPAProjectionHead
from fastssl.transforms.dino_transform import DINOTransform


class LeJEPA(Method):
    """LeJEPA (Balestriero and LeCun 2025, https://arxiv.org/abs/2511.08544).

    ``loss = LeJEPALoss(local_proj, global_proj)``:
    ``lambda_param * SIGReg(all views) + (1 - lambda_param) * invariance``, where every
    view's projection is pulled towards the mean projection of the image's global views
    (:class:`~fastssl.loss.lejepa_loss.LeJEPALoss`). The projections of ``backbone`` +
    :class:`~fastssl.models.modules.LeJEPAProjectionHead` are computed per group of views of
    one size (the head's batch norm sees the global views together, then the local views);
    with ``gather_distributed`` (the default) SIGReg tests the embeddings of every process.

    Works with ResNets and ViTs (``"vit_b_16"``, ``"timm:vit_small_patch16_224"``, or a
    torchvision / timm ``VisionTransformer``); ViTs are wrapped so that the local crops, of
    another resolution, resize the positional embedding.

    Defaults are lightly's ImageNet benchmark (``benchmarks/imagenet/vitb16/lejepa.py``) and
    the reference code: lambda 0.05, SIGReg with 1024 random directions, 17 knots on
    [0, 3], head 2048-2048-64 with batch norm, 2 global crops (30-100% of the image) and 6
    local crops (5-30%, 96/224 of the size), blur probabilities 0.5, AdamW lr 5e-4 at batch
    256, weight decay 0.05, one warm-up epoch from 1% of the lr, cosine to 0.1% of it.

    Args:
        backbone: Backbone name or module (see :class:`~fastssl.methods.base.Method`).
        input_size: Size of the global crops.
        feature_dim: Backbone feature dimension D of a module (measured when None).
        hidden_dim: Hidden width of the projection head.
        output_dim: Output width of the projection head (SIGReg's dimension).
        num_layers: Linear layers of the projection head, >= 2.
        lambda_param: Weight of SIGReg in [0, 1]; the invariance term gets the rest.
        sigreg_num_vectors: Random directions (slices) SIGReg draws per step.
        sigreg_knots: Frequencies of SIGReg's quadrature.
        sigreg_t_max: Largest frequency of SIGReg's quadrature.
        gather_distributed: SIGReg over the batches of all processes.
        n_local_views: Number of local crops of the default transform, >= 1.
        local_crop_size: Size of the local crops; 96/224 of ``input_size`` (rounded to whole
            ViT patches) when None.

    Shapes:
        ``training_step`` views: 2 global (B, 3, input_size, input_size) then local
        (B, 3, local_crop_size, local_crop_size); ``forward``: (B, 3, H, W) -> (B, D).
    """

    name: ClassVar[str] = "lejepa"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults(
        name="adamw",
        lr=5e-4,
        reference_batch_size=256,
        lr_scaling="linear",
        weight_decay=0.05,
        betas=(0.9, 0.999),
        warmup_epochs=1,
        # lightly's benchmark: warm-up from 1% of the lr, cosine decay to 0.1% of it.
        extra={"start_lr": 5e-6, "final_lr": 5e-7},
    )

    def __init__(
        self,
        backbone: str | nn.Module = "vit_b_16",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 2048,
        output_dim: int = 64,
        num_layers: int = 3,
        lambda_param: float = 0.05,
        sigreg_num_vectors: int = 1024,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        gather_distributed: bool = True,
        n_local_views: int = 6,
        local_crop_size: int | None = None,
    ) -> None:
        check_dims(hidden_dim=hidden_dim, output_dim=output_dim)
        check_count("num_layers", num_layers, 2)
        check_count("n_local_views", n_local_views, 1)
        check_count("sigreg_num_vectors", sigreg_num_vectors, 1)
        check_count("sigreg_knots", sigreg_knots, 2)
        # The loss checks lambda_param and sigreg_t_max with messages naming them.
        criterion = LeJEPALoss(
            lambda_param=lambda_param,
            gather_distributed=gather_distributed,
            sigreg_knots=sigreg_knots,
            sigreg_t_max=sigreg_t_max,
            sigreg_num_vectors=sigreg_num_vectors,
        )
        module, dim, patch_size = _vit.build_any_backbone(backbone, input_size, feature_dim)
        super().__init__(module, input_size, dim)
        self.local_crop_size = _vit.local_crop_size(input_size, patch_size, local_crop_size)
        self.n_local_views = n_local_views
        self.projection_head = LeJEPAProjectionHead(
            self.feature_dim, hidden_dim, output_dim, num_layers=num_layers
        )
        self.criterion = criterion

    def project(self, images: Tensor) -> Tensor:
        """Projections (B, output_dim) of images (B, 3, H, W)."""
        return embed(self.backbone, self.projection_head, images)

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """LeJEPA loss of a batch: 2 global views first, then the local views."""
        if len(views) < 3:
            raise ValueError(
                "LeJEPA needs the 2 global views followed by at least 1 local view, got "
                f"{len(views)} views."
            )
        projections = forward_views(self.project, views)
        global_proj = torch.stack(projections[:2])
        local_proj = torch.stack(projections[2:])
        loss: Tensor = self.criterion(local_proj=local_proj, global_proj=global_proj)
        return loss

    def default_transform(self, **views: Any) -> DINOTransform:
        """DINO's multi-crop with lightly's LeJEPA settings: 2 global crops at ``input_size``
        (scale 0.3-1) and ``n_local_views`` local crops (scale 0.05-0.3), blur 0.5 on all."""
        fixed = {
            "global_crop_size": self.input_size,
            "local_crop_size": self.local_crop_size,
            "n_local_views": self.n_local_views,
        }
        defaults = {
            "global_crop_scale": (0.3, 1.0),
            "local_crop_scale": (0.05, 0.3),
            "gaussian_blur": (0.5, 0.5, 0.5),
        }
        return build_views(DINOTransform, views, fixed, defaults)

    def trainable_modules(self) -> list[nn.Module]:
        """The backbone and the projection head."""
        return [self.backbone, self.projection_head]
