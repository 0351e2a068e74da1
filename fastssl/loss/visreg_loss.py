"""VISReg: center, scale and shape regularisation plus LeJEPA invariance, with LightlySSL
1.6's interface.

- VISReg: Wu et al. 2026, https://arxiv.org/abs/2606.02572

VISReg splits "the embeddings are an isotropic Gaussian" into three decoupled terms over the
batch of every view:

- center (Eq. 6): the per-dimension batch mean is zero,
- scale (Eq. 1): the per-dimension standard deviation is one; unlike a characteristic
  function test its gradient stays large when the embeddings collapse,
- shape (Eq. 5): sliced 2-Wasserstein distance between the standardised embeddings and
  N(0, 1). The standard deviation used to standardise is detached (Eq. 2), so the shape
  term cannot change the scale. In 1-D the 2-Wasserstein distance to N(0, 1) is the mean
  squared difference between the sorted samples and the normal quantiles at
  ``i / (N + 1)``, i = 1..N (never 0 or 1, so always finite).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastssl.loss.lejepa_loss import lejepa_invariance_loss
from fastssl.utils import dist


def visreg_center_loss(z: Tensor) -> Tensor:
    """VISReg center term (Eq. 6): mean squared per-dimension batch mean.

    Args:
        z: Embeddings of shape (..., N, D), N samples.

    Returns:
        Scalar ``mean_d (mean_n z[n, d])^2`` (also averaged over leading dimensions).

    Example:
        >>> import torch
        >>> visreg_center_loss(torch.tensor([[1.0, -1.0], [3.0, 1.0]])).item()
        2.0
    """
    return z.mean(dim=-2).square().mean()


def visreg_scale_loss(z: Tensor) -> Tensor:
    """VISReg scale term (Eq. 1): squared deviation of every dimension's std from one.

    Args:
        z: Embeddings of shape (..., N, D), N samples.

    Returns:
        Scalar ``mean_d (1 - std_n z[n, d])^2`` with the biased (1/N) standard deviation.

    Example:
        >>> import torch
        >>> visreg_scale_loss(torch.zeros(4, 3)).item()
        1.0
    """
    return (1.0 - z.std(dim=-2, correction=0)).square().mean()


def _normal_quantiles(num_samples: int, like: Tensor) -> Tensor:
    """Standard normal quantiles at i / (N + 1), i = 1..N, shape (N, 1).

    Computed in float32 (the inverse CDF loses precision in half precision), then cast.
    """
    levels = torch.arange(1, num_samples + 1, device=like.device, dtype=torch.float32)
    quantiles = torch.special.ndtri(levels / (num_samples + 1))
    return quantiles.to(like.dtype).unsqueeze(-1)


def visreg_shape_loss(z: Tensor, num_slices: int, eps: float = 1e-4) -> Tensor:
    """VISReg shape term (Eq. 5): sliced 2-Wasserstein distance to a standard Gaussian.

    The embeddings are standardised per dimension with a detached standard deviation
    (Eq. 2), projected on ``num_slices`` random unit directions drawn from torch's global
    generator (``torch.randn(D, num_slices)``, the numbers LightlySSL 1.6 draws), and the
    sorted projections are compared with the normal quantiles.

    Every call draws new directions. In distributed training each process draws its own,
    multiplying the effective number of slices by the world size (Section 3.2), provided
    the processes are seeded differently.

    Args:
        z: Embeddings of shape (..., N, D), N samples.
        num_slices: Number of random directions, >= 1.
        eps: Added to the standard deviation before dividing, > 0.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If ``num_slices < 1`` or ``eps <= 0``.

    Example:
        >>> import torch
        >>> visreg_shape_loss(torch.randn(64, 8), num_slices=16).shape
        torch.Size([])
    """
    if num_slices < 1:
        raise ValueError(f"'num_slices' must be a positive integer, got num_slices={num_slices}.")
    if not eps > 0:
        raise ValueError(f"'eps' must be > 0, got eps={eps}.")
    std = z.std(dim=-2, correction=0, keepdim=True).detach()
    standardized = (z - z.mean(dim=-2, keepdim=True)) / (std + eps)
    directions = torch.randn(z.shape[-1], num_slices, device=z.device, dtype=z.dtype)
    directions = directions / directions.norm(dim=0)
    projections = (standardized @ directions).sort(dim=-2).values  # (..., N, slices)
    return (projections - _normal_quantiles(z.shape[-2], z)).square().mean()


class VISRegLossComponents(NamedTuple):
    """The VISReg loss and its terms, as returned by :meth:`VISRegLoss.forward_components`.

    Attributes:
        total: The combined loss.
        pred: The multi-view invariance (prediction) term.
        scale: The unweighted scale term.
        shape: The unweighted shape term.
        center: The unweighted center term.
    """

    total: Tensor
    pred: Tensor
    scale: Tensor
    shape: Tensor
    center: Tensor


class VISRegLoss(nn.Module):
    """VISReg loss (Wu et al. 2026, https://arxiv.org/abs/2606.02572), Algorithm 1.

    ``total = (1 - lambda_param) * pred + lambda_param * reg`` with
    ``reg = lambda_scale * scale + lambda_shape * shape + lambda_center * center``.
    ``pred`` is :func:`fastssl.loss.lejepa_loss.lejepa_invariance_loss` (every view, global
    and local, towards the mean global view, Eq. 8); the regularisers are computed over the
    batch of every view (global views first, then local ones) and averaged over views.

    Shapes: ``local_proj`` (V_local, N, D) and ``global_proj`` (V_global, N, D), N >= 2;
    returns a scalar.

    Distributed: by default each process regularises its own batch with its own random
    slices (the paper's setting; seed the processes differently). With
    ``gather_distributed`` the regularisers use the batches of all processes (gathered with
    gradient); the invariance term stays per process.

    The defaults (``lambda_param=0.9``, equal weights) are the paper's best for large data
    such as ImageNet-1k; it recommends ``lambda_param=0.6`` for small data sets and a larger
    ``lambda_shape`` for long-tailed or low-rank data.

    Attributes:
        lambda_param: Weight of the regularisation in [0, 1].
        num_slices: Random directions of the shape term per call.
        lambda_scale: Weight of the scale term.
        lambda_shape: Weight of the shape term.
        lambda_center: Weight of the center term.
        gather_distributed: Regularise over the batches of all processes.
        eps: Added to the standard deviation in the shape term.

    Example:
        >>> import torch
        >>> loss_fn = VISRegLoss(num_slices=64)
        >>> global_proj = torch.randn(2, 16, 8)  # 2 global views, batch 16, dim 8
        >>> local_proj = torch.randn(4, 16, 8)
        >>> loss = loss_fn(local_proj=local_proj, global_proj=global_proj)
        >>> parts = loss_fn.forward_components(local_proj=local_proj, global_proj=global_proj)
        >>> parts.shape.shape
        torch.Size([])
    """

    def __init__(
        self,
        lambda_param: float = 0.9,
        num_slices: int = 4096,
        lambda_scale: float = 1.0,
        lambda_shape: float = 1.0,
        lambda_center: float = 1.0,
        gather_distributed: bool = False,
        eps: float = 1e-4,
    ) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of the regularisation, in [0, 1]; the invariance term gets
                ``1 - lambda_param``.
            num_slices: Random directions of the shape term per call, >= 1.
            lambda_scale: Weight of the scale term, >= 0.
            lambda_shape: Weight of the shape term, >= 0.
            lambda_center: Weight of the center term, >= 0.
            gather_distributed: Regularise over the batches of all processes.
            eps: Added to the standard deviation in the shape term, > 0.

        Raises:
            ValueError: If an argument is out of range.
        """
        super().__init__()
        if not 0.0 <= lambda_param <= 1.0:
            raise ValueError(
                f"VISRegLoss 'lambda_param' must be in [0, 1], got lambda_param={lambda_param}."
            )
        if num_slices < 1:
            raise ValueError(
                f"VISRegLoss 'num_slices' must be a positive integer, got num_slices={num_slices}."
            )
        for name, weight in (
            ("lambda_scale", lambda_scale),
            ("lambda_shape", lambda_shape),
            ("lambda_center", lambda_center),
        ):
            if weight < 0:
                raise ValueError(f"VISRegLoss '{name}' must be >= 0, got {name}={weight}.")
        if not eps > 0:
            raise ValueError(f"VISRegLoss 'eps' must be > 0, got eps={eps}.")
        self.lambda_param = lambda_param
        self.num_slices = num_slices
        self.lambda_scale = lambda_scale
        self.lambda_shape = lambda_shape
        self.lambda_center = lambda_center
        self.gather_distributed = gather_distributed
        self.eps = eps

    def forward(self, *, local_proj: Tensor, global_proj: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            local_proj: Local views, shape (V_local, N, D).
            global_proj: Global views, shape (V_global, N, D).

        Returns:
            Scalar loss (``forward_components(...).total``).
        """
        return self.forward_components(local_proj=local_proj, global_proj=global_proj).total

    def forward_components(
        self, *, local_proj: Tensor, global_proj: Tensor
    ) -> VISRegLossComponents:
        """Computes the loss and its terms.

        Args:
            local_proj: Local views, shape (V_local, N, D).
            global_proj: Global views, shape (V_global, N, D).

        Returns:
            :class:`VISRegLossComponents` with the total and the unweighted terms.

        Raises:
            ValueError: If a projection is not 3-D, the two differ in batch size or
                dimension, or the batch size is below 2.
        """
        for name, proj in (("local_proj", local_proj), ("global_proj", global_proj)):
            if proj.dim() != 3:
                kind = name.split("_")[0]
                raise ValueError(
                    f"{name} must have shape (V_{kind}, N, D), got {tuple(proj.shape)}."
                )
        if local_proj.shape[1:] != global_proj.shape[1:]:
            raise ValueError(
                "local_proj and global_proj must have the same batch size and dimension, got "
                f"{tuple(local_proj.shape)} and {tuple(global_proj.shape)}."
            )
        if local_proj.shape[1] < 2:
            raise ValueError(
                f"VISRegLoss needs a batch size N of at least 2 (standard deviations), got "
                f"{local_proj.shape[1]}."
            )
        proj = torch.cat([global_proj, local_proj])
        pred = lejepa_invariance_loss(all_proj=proj, global_proj=global_proj)
        if self.gather_distributed and dist.is_distributed():
            # Gather along the batch (dim 1); gather_cat concatenates along dim 0.
            proj = dist.gather_cat(proj.transpose(0, 1)).transpose(0, 1)
        scale = visreg_scale_loss(proj)
        shape = visreg_shape_loss(proj, num_slices=self.num_slices, eps=self.eps)
        center = visreg_center_loss(proj)
        reg = self.lambda_scale * scale + self.lambda_shape * shape + self.lambda_center * center
        total = (1.0 - self.lambda_param) * pred + self.lambda_param * reg
        return VISRegLossComponents(total=total, pred=pred, scale=scale, shape=shape, center=center)
