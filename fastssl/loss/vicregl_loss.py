"""VICRegL loss: VICReg on global and on matched local features (Bardes et al. 2022), with
LightlySSL 1.6's interface.

- VICRegL: Bardes, Ponce and LeCun 2022, "VICRegL: Self-Supervised Learning of Local Visual
  Features", https://arxiv.org/abs/2210.01571 (code: https://github.com/facebookresearch/VICRegL)

Every view gives a global feature (B, D) and a map of local features (B, H, W, D'), plus the
grid (B, H, W, 2) of image coordinates of the local features. The loss is
``alpha * global + (1 - alpha) * local``:

- global: VICReg over the global features. The invariance term averages over every ordered
  pair (global view, other view), the variance and covariance terms over every view.
- local: for every ordered pair (global view a, other view b), local features are matched
  twice, each time in both directions (a to b keeps the ``num_matches[0]`` best matches,
  b to a the ``num_matches[1]`` best): by L2 distance between the features and by distance
  between their grid locations. Each matched set gets a VICReg loss whose covariance weight
  is halved (the VICRegL code's covariance is half the VICReg code's). As in the
  authors' code, ``num_matches`` depends on the search direction, not on the view type.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastssl.loss.vicreg_loss import (
    VICRegLoss,
    covariance_loss,
    invariance_loss,
    variance_loss,
)
from fastssl.models.utils import nearest_neighbors
from fastssl.utils import dist


class VICRegLLoss(nn.Module):
    """VICRegL loss (Bardes, Ponce and LeCun 2022, https://arxiv.org/abs/2210.01571).

    Shapes: each view is a tuple ``(global_features (B, D), local_features (B, H, W, D'))``
    with a grid (B, H, W, 2); H and W may differ between global and local views. Returns a
    tensor of shape (1,) (LightlySSL 1.6 returns this shape, so it is kept).

    With ``gather_distributed`` the variance and covariance terms (global and local) use the
    batches of all processes, gathered with gradient; invariance terms stay per process.

    Attributes:
        lambda_param: Weight of the invariance terms.
        mu_param: Weight of the variance terms.
        nu_param: Weight of the global covariance term (the local one uses half of it).
        alpha: Weight of the global loss; the local loss gets ``1 - alpha``.
        gather_distributed: Compute variances and covariances over the global batch.
        eps: Added to the variances.
        num_matches: Matches kept when matching a global view's local features to another
            view's (first) and the other view's to the global view's (second).
        vicreg_loss: The :class:`fastssl.loss.vicreg_loss.VICRegLoss` of the local terms.

    Example:
        >>> import torch
        >>> loss_fn = VICRegLLoss()
        >>> def view(size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        ...     features = (torch.randn(4, 16), torch.randn(4, size, size, 8))
        ...     return features, torch.rand(4, size, size, 2)
        >>> (g1, grid1), (g2, grid2), (l1, lgrid1) = view(7), view(7), view(3)
        >>> loss = loss_fn(
        ...     global_view_features=[g1, g2],
        ...     global_view_grids=[grid1, grid2],
        ...     local_view_features=[l1],
        ...     local_view_grids=[lgrid1],
        ... )
        >>> loss.shape
        torch.Size([1])
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        alpha: float = 0.75,
        gather_distributed: bool = False,
        eps: float = 0.0001,
        num_matches: tuple[int, int] = (20, 4),
    ) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of the invariance terms.
            mu_param: Weight of the variance terms.
            nu_param: Weight of the covariance terms.
            alpha: Weight of the global loss, the local loss gets ``1 - alpha``.
            gather_distributed: Compute variances and covariances over the global batch.
            eps: Added to the variances, >= 0.
            num_matches: Matches kept in the first and second nearest-neighbour search
                (-1 keeps all).

        Raises:
            ValueError: If ``eps < 0``.
        """
        super().__init__()
        self.lambda_param = lambda_param
        self.mu_param = mu_param
        self.nu_param = nu_param
        self.alpha = alpha
        self.gather_distributed = gather_distributed
        self.eps = eps
        self.num_matches = num_matches
        self.vicreg_loss = VICRegLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=0.5 * nu_param,
            gather_distributed=gather_distributed,
            eps=eps,
        )

    def forward(
        self,
        global_view_features: Sequence[tuple[Tensor, Tensor]],
        global_view_grids: Sequence[Tensor],
        local_view_features: Sequence[tuple[Tensor, Tensor]] | None = None,
        local_view_grids: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Computes ``alpha * global_loss + (1 - alpha) * local_loss``.

        Args:
            global_view_features: One ``(global (B, D), local (B, H, W, D'))`` per global
                view.
            global_view_grids: One grid (B, H, W, 2) per global view.
            local_view_features: Optional, one ``(global, local)`` per local view.
            local_view_grids: Optional, one grid per local view; given together with
                ``local_view_features``.

        Returns:
            Loss of shape (1,).

        Raises:
            ValueError: If features and grids differ in number, only one of the local
                arguments is given, or there is no global view.
        """
        if len(global_view_features) != len(global_view_grids):
            raise ValueError(
                "global_view_features and global_view_grids must have the same length, got "
                f"{len(global_view_features)} and {len(global_view_grids)}."
            )
        if len(global_view_features) == 0:
            raise ValueError("global_view_features must hold at least one view, got none.")
        if (local_view_features is None) != (local_view_grids is None):
            raise ValueError(
                "local_view_features and local_view_grids must both be given or both be "
                f"None, got {type(local_view_features).__name__} and "
                f"{type(local_view_grids).__name__}."
            )
        views = list(global_view_features)
        grids = list(global_view_grids)
        if local_view_features is not None and local_view_grids is not None:
            if len(local_view_features) != len(local_view_grids):
                raise ValueError(
                    "local_view_features and local_view_grids must have the same length, "
                    f"got {len(local_view_features)} and {len(local_view_grids)}."
                )
            views += list(local_view_features)
            grids += list(local_view_grids)

        num_global = len(global_view_features)
        global_loss = self._global_loss([g for g, _ in views], num_global)
        local_loss = self._local_loss([loc for _, loc in views], grids, num_global)
        return (self.alpha * global_loss + (1.0 - self.alpha) * local_loss).reshape(1)

    def _global_loss(self, features: list[Tensor], num_global: int) -> Tensor:
        """VICReg over the global features of all views (global views first)."""
        stacked = torch.stack(features)  # (V, B, D)
        num_views = len(features)
        # Mean over the ordered pairs (global view a, view b != a). invariance_loss(stacked,
        # a) is the mean over all views b of the pair losses, and the pair b == a adds 0.
        pair_sum = sum(
            (invariance_loss(stacked, stacked[a].expand_as(stacked)) for a in range(num_global)),
            start=stacked.new_zeros(()),
        )
        invariance = pair_sum * num_views / max(num_global * (num_views - 1), 1)
        # (B, V, D): the VICReg terms of 3-D inputs average over the middle dimension, here
        # the views, and one gather covers all views.
        per_sample = stacked.transpose(0, 1)
        if self.gather_distributed and dist.is_distributed():
            per_sample = dist.gather_cat(per_sample)
        variance = variance_loss(per_sample, eps=self.eps)
        covariance = covariance_loss(per_sample)
        return (
            self.lambda_param * invariance + self.mu_param * variance + self.nu_param * covariance
        )

    def _local_loss(self, features: list[Tensor], grids: list[Tensor], num_global: int) -> Tensor:
        """Mean over pairs (global a, view b != a) of the L2- and location-matched losses."""
        total = features[0].new_zeros(())
        num_pairs = 0
        for a in range(num_global):
            z_a, grid_a = features[a].flatten(1, 2), grids[a].flatten(1, 2)
            for b in range(len(features)):
                if b == a:
                    continue
                z_b, grid_b = features[b].flatten(1, 2), grids[b].flatten(1, 2)
                total = total + self._matched_loss(z_a, z_b, torch.cdist(z_a, z_b))
                total = total + self._matched_loss(z_a, z_b, torch.cdist(grid_a, grid_b))
                num_pairs += 1
        return total / max(num_pairs, 1)

    def _matched_loss(self, z_a: Tensor, z_b: Tensor, distances: Tensor) -> Tensor:
        """VICReg of z_a's features matched in z_b and of z_b's matched in z_a, averaged.

        Args:
            z_a: Local features (B, N_a, D').
            z_b: Local features (B, N_b, D').
            distances: (B, N_a, N_b) distances used for the matching (the b-to-a search
                uses its transpose, so each distance matrix is computed once).
        """
        a_kept, a_match = nearest_neighbors(z_a, z_b, distances, self.num_matches[0])
        b_kept, b_match = nearest_neighbors(z_b, z_a, distances.mT, self.num_matches[1])
        return 0.5 * (self.vicreg_loss(a_kept, a_match) + self.vicreg_loss(b_kept, b_match))
