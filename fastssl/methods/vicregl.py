"""VICRegL: VICReg on global features and on local features matched across views.

- Bardes, Ponce and LeCun 2022, "VICRegL: Self-Supervised Learning of Local Visual
  Features", https://arxiv.org/abs/2210.01571 (code: https://github.com/facebookresearch/VICRegL)

Every view gives a global embedding (expander on the pooled feature map) and a map of local
embeddings (a small projector on every location of the feature map). VICReg is applied to
the global embeddings and to pairs of local embeddings matched by feature distance and by
image location (the transform's grids); ``alpha`` weighs the global part.

Example:
    >>> import torch
    >>> from fastssl.methods.base import StepInfo
    >>> model = VICRegL(backbone="resnet18", input_size=32, hidden_dim=32, output_dim=32,
    ...                 local_hidden_dim=16, local_output_dim=16)
    >>> model.grid_sizes
    (4, 2)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> grids = [torch.rand(4, 4, 4, 2) * 32, torch.rand(4, 4, 4, 2) * 32]
    >>> loss = model.training_step(views + grids, StepInfo())
    >>> loss.backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from fastssl.loss.vicregl_loss import VICRegLLoss
from fastssl.methods._common import FIRST_STEP, check_count, check_dims
from fastssl.methods._dense import feature_map_backbone, feature_map_size
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo, build_views
from fastssl.models.modules.heads.redundancy import (
    BarlowTwinsProjectionHead,
    VicRegLLocalProjectionHead,
)
from fastssl.transforms.vicregl_transform import VICRegLTransform

#: Local crops relative to the global ones (96 / 224 px, VICRegL's multi-crop sizes).
_LOCAL_CROP_FRACTION = 96 / 224


class VICRegL(Method):
    """VICRegL (Bardes, Ponce and LeCun 2022, https://arxiv.org/abs/2210.01571).

    For every view ``x`` with feature map ``f = backbone(x)`` (B, C, h, w): the global
    embedding ``z = head(mean_hw(f))`` (B, output_dim) and the local embeddings
    ``z_local = local_head(f.permute(0, 2, 3, 1))`` (B, h, w, local_output_dim). The loss
    is :class:`~fastssl.loss.vicregl_loss.VICRegLLoss` of the 2 global views (and the
    ``n_local_views`` small crops) with the grids of :class:`VICRegLTransform`, which
    locate every feature-map cell in the image; its grid sizes are the backbone's feature
    map sizes at the crop sizes (:attr:`grid_sizes`). With ``gather_distributed`` the
    variance and covariance terms use the embeddings of every process.

    Model as in LightlySSL's VICRegL example (a ResNet without its pooling and classifier,
    Barlow Twins' projection head on the pooled map, the VICRegL local head with layer
    norm); sizes and settings are those of the authors' ResNet-50 ImageNet command: expander
    8192-8192-8192, local projector 512-512-512, two 224 px views with crop scale
    (0.08, 1) and no small crops, alpha 0.75, lambda = mu = 25, nu = 1, 20 / 4 matches,
    LARS with lr 0.2 x B/256 and weight decay 1e-6, 10 warm-up epochs.

    Args:
        backbone: A ResNet name, ``"timm:<cnn>"``, or a module returning (B, C, h, w) maps.
        input_size: Size of the global views.
        feature_dim: Channels C of a module's feature map (measured when None).
        hidden_dim: Hidden width of the global expander.
        output_dim: Output width of the global expander.
        local_hidden_dim: Hidden width of the local projector.
        local_output_dim: Output width of the local projector.
        n_local_views: Small crops (96 / 224 of ``input_size``) besides the 2 global views.
        alpha: Weight of the global loss (the local loss gets ``1 - alpha``).
        lambda_param: Weight of the invariance terms.
        mu_param: Weight of the variance terms.
        nu_param: Weight of the global covariance term (the local one gets half).
        num_matches: Local matches kept per search direction (see the loss).
        gather_distributed: Variances and covariances over the batches of all processes.

    Shapes:
        ``training_step`` views: ``2 + n_local_views`` images (B, 3, s, s), then their grids
        (B, g, g, 2), as :class:`VICRegLTransform` returns them;
        ``forward``: (B, 3, H, W) -> (B, C) pooled features.
    """

    name: ClassVar[str] = "vicregl"
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults.lars(
        lr=0.2, weight_decay=1e-6
    )
    #: Global views per image (the loss compares every view with each of them).
    n_global_views: ClassVar[int] = 2

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        input_size: int = 224,
        feature_dim: int | None = None,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        local_hidden_dim: int = 512,
        local_output_dim: int = 512,
        n_local_views: int = 0,
        alpha: float = 0.75,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        num_matches: tuple[int, int] = (20, 4),
        gather_distributed: bool = True,
    ) -> None:
        check_dims(
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            local_hidden_dim=local_hidden_dim,
            local_output_dim=local_output_dim,
        )
        check_count("n_local_views", n_local_views, 0)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"'alpha' must be in [0, 1], got alpha={alpha!r}.")
        if len(num_matches) != 2:
            raise ValueError(
                f"'num_matches' must be 2 integers (first, second search), got "
                f"num_matches={num_matches!r}."
            )
        trunk, channels = feature_map_backbone(backbone, input_size, feature_dim, "VICRegL")
        super().__init__(trunk, input_size, channels)
        self.n_local_views = n_local_views
        self.local_crop_size = max(round(input_size * _LOCAL_CROP_FRACTION), 1)
        #: Sides of the feature maps (= grids) of the global and the local views.
        self.grid_sizes = (
            feature_map_size(self.backbone, input_size),
            feature_map_size(self.backbone, self.local_crop_size),
        )
        self.projection_head = BarlowTwinsProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.local_projection_head = VicRegLLocalProjectionHead(
            self.feature_dim, local_hidden_dim, local_output_dim
        )
        self.criterion = VICRegLLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            alpha=alpha,
            gather_distributed=gather_distributed,
            num_matches=(int(num_matches[0]), int(num_matches[1])),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Globally pooled backbone features (B, C) of images (B, 3, H, W)."""
        return self.backbone(images).mean(dim=(2, 3))

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(global (B, output_dim), local (B, h, w, local_output_dim))`` embeddings."""
        maps = self.backbone(images)
        z_global: Tensor = self.projection_head(maps.mean(dim=(2, 3)))
        z_local: Tensor = self.local_projection_head(maps.permute(0, 2, 3, 1))
        return z_global, z_local

    def training_step(self, views: Sequence[Tensor], info: StepInfo = FIRST_STEP) -> Tensor:
        """The VICRegL loss of the views and grids of :meth:`default_transform`."""
        n_views = self.n_global_views + self.n_local_views
        if len(views) != 2 * n_views:
            raise ValueError(
                f"VICRegL needs {n_views} views and their {n_views} grids per batch "
                f"(n_local_views={self.n_local_views}), got {len(views)} tensors."
            )
        features = [self.embed(x) for x in views[:n_views]]
        grids = list(views[n_views:])
        for index, ((_, local), grid) in enumerate(zip(features, grids, strict=True)):
            if grid.shape[1:3] != local.shape[1:3]:
                raise ValueError(
                    f"VICRegL: the grid of view {index} is {tuple(grid.shape[1:3])} but its "
                    f"feature map is {tuple(local.shape[1:3])}; the transform's grid sizes "
                    "must be the backbone's feature-map sizes (see default_transform)."
                )
        n = self.n_global_views
        loss: Tensor = self.criterion(
            global_view_features=features[:n],
            global_view_grids=grids[:n],
            local_view_features=features[n:] or None,
            local_view_grids=grids[n:] or None,
        )
        return loss.reshape(())

    def default_transform(self, **views: Any) -> VICRegLTransform:
        """VICRegL's views and grids: 2 global crops at ``input_size`` (scale (0.08, 1),
        as the authors' ResNet-50 command) and ``n_local_views`` small ones, each grid the
        size of the backbone's feature map for that crop."""
        global_grid, local_grid = self.grid_sizes
        fixed = {
            "global_crop_size": self.input_size,
            "local_crop_size": self.local_crop_size,
            "n_global_views": self.n_global_views,
            "n_local_views": self.n_local_views,
            "global_grid_size": global_grid,
            "local_grid_size": local_grid,
        }
        return build_views(VICRegLTransform, views, fixed, {"global_crop_scale": (0.08, 1.0)})
