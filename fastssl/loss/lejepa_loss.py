"""LeJEPA: multi-view invariance plus SIGReg, with LightlySSL 1.6's interface.

- LeJEPA: Balestriero and LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised
  Learning Without the Heuristics", https://arxiv.org/abs/2511.08544

SIGReg (Sketched Isotropic Gaussian Regularization) tests whether 1-D random projections
("slices") of the embeddings are standard normal with the Epps-Pulley statistic: the squared
distance between the empirical characteristic function ``ecf(t) = mean_n exp(i t x_n)`` and
the Gaussian one ``phi(t) = exp(-t^2 / 2)``, weighted by ``phi`` and integrated over
``t``::

    EP = N * int |ecf(t) - phi(t)|^2 phi(t) dt

The integrand is even in ``t``, so the integral over ``[-t_max, t_max]`` is twice the one
over ``[0, t_max]``, evaluated with the trapezoidal rule on ``knots`` points. The loss is
the mean of ``EP`` over slices (and leading dimensions such as views).

Distributed: only the sums ``sum_n cos(t x_n)`` and ``sum_n sin(t x_n)`` (shape
(slices, knots), independent of the batch size) cross processes, so SIGReg sees the global
batch at a cost that does not grow with the batch or the embedding size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastssl.utils import dist


def lejepa_invariance_loss(*, all_proj: Tensor, global_proj: Tensor) -> Tensor:
    """LeJEPA invariance term: every view's squared distance to the mean global view.

    ``mean_{v, n, d} (mean_g global_proj[g, n, d] - all_proj[v, n, d])^2``.

    Args:
        all_proj: Projections of all views, shape (V_all, N, D).
        global_proj: Projections of the global views, shape (V_global, N, D).

    Returns:
        Scalar loss.

    Example:
        >>> import torch
        >>> views = torch.tensor([[[0.0]], [[2.0]]])  # two views, N = D = 1
        >>> lejepa_invariance_loss(all_proj=views, global_proj=views).item()
        1.0
    """
    center = global_proj.mean(dim=0)
    return F.mse_loss(all_proj, center.expand_as(all_proj))


def _validate_projection_shapes(*, local_proj: Tensor, global_proj: Tensor) -> None:
    for name, proj in (("local_proj", local_proj), ("global_proj", global_proj)):
        kind = name.split("_")[0]
        if proj.dim() != 3:
            raise ValueError(f"{name} must have shape (V_{kind}, N, D), got {tuple(proj.shape)}.")
        if proj.shape[0] < 1:
            raise ValueError(f"{name} must hold at least one {kind} view, got {tuple(proj.shape)}.")
    if local_proj.shape[1:] != global_proj.shape[1:]:
        raise ValueError(
            "local_proj and global_proj must have the same batch size and dimension, got "
            f"{tuple(local_proj.shape)} and {tuple(global_proj.shape)}."
        )


def _sum_over_processes(x: Tensor) -> Tensor:
    """All-reduce sum with gradient: the backward pass sums the gradients of all processes.

    Built on :func:`fastssl.utils.dist.gather_cat` (gather, then sum), whose backward is a
    reduce-scatter: exactly the gradient of an all-reduce. ``x`` is small here (slices x
    knots), so gathering instead of reducing costs nothing noticeable.
    """
    return dist.gather_cat(x.unsqueeze(0)).sum(dim=0)


class SIGReg(nn.Module):
    """Sketched Isotropic Gaussian Regularization (LeJEPA, Balestriero and LeCun 2025).

    Pushes the distribution of the embeddings towards a standard isotropic Gaussian: each
    call draws ``num_vectors`` random unit directions, projects the embeddings on them and
    averages the Epps-Pulley statistic of the projections (see the module docstring).

    Shapes: ``proj`` of shape (..., N, D), N samples of dimension D; the statistic is
    computed per leading index (e.g. per view) and averaged. Returns a scalar.

    The directions come from torch's global generator, ``torch.randn(D, num_vectors)``
    (LightlySSL 1.6 draws the same numbers). With ``gather_distributed`` they are taken
    from rank 0, so every process uses the same ones.

    Attributes:
        num_vectors: Random directions (slices) per call.
        gather_distributed: Compute the statistic over the batches of all processes.
        t: Buffer (knots,), the frequencies ``linspace(0, t_max, knots)``.
        phi: Buffer (knots,), the standard normal characteristic function ``exp(-t^2/2)``.
        weights: Buffer (knots,), trapezoidal weights over ``[-t_max, t_max]`` (folded onto
            ``t >= 0``) times ``phi``.

    Example:
        >>> import torch
        >>> sigreg = SIGReg(num_vectors=64)
        >>> loss = sigreg(torch.randn(128, 16))  # (N, D)
        >>> loss.shape
        torch.Size([])
    """

    t: Tensor
    phi: Tensor
    weights: Tensor

    def __init__(
        self,
        *,
        knots: int = 17,
        t_max: float = 3.0,
        num_vectors: int = 1024,
        gather_distributed: bool = False,
    ) -> None:
        """Builds the frequency grid and the integration weights.

        Args:
            knots: Number of frequencies in ``[0, t_max]``, at least 2.
            t_max: Largest frequency, > 0. Larger values make the test more sensitive to
                fine-scale differences (and noisier).
            num_vectors: Random directions per call, >= 1. More give a less noisy loss.
            gather_distributed: Compute the statistic over the batches of all processes.

        Raises:
            ValueError: If an argument is out of range.
        """
        super().__init__()
        if knots <= 1:
            raise ValueError(f"SIGReg 'knots' must be an integer > 1, got knots={knots}.")
        if not t_max > 0:
            raise ValueError(f"SIGReg 't_max' must be > 0, got t_max={t_max}.")
        if num_vectors <= 0:
            raise ValueError(
                f"SIGReg 'num_vectors' must be a positive integer, got num_vectors={num_vectors}."
            )
        self.num_vectors = num_vectors
        self.gather_distributed = gather_distributed

        t = torch.linspace(0, t_max, knots, dtype=torch.float32)
        phi = torch.exp(-0.5 * t.square())
        step = t_max / (knots - 1)
        # Trapezoidal rule on [0, t_max] is step * [1/2, 1, ..., 1, 1/2]; doubled for the
        # mirrored half [-t_max, 0] of the even integrand.
        trapezoid = torch.full((knots,), 2.0 * step)
        trapezoid[0] = trapezoid[-1] = step
        self.register_buffer("t", t)
        self.register_buffer("phi", phi)
        self.register_buffer("weights", trapezoid * phi)

    def _distributed(self) -> bool:
        return self.gather_distributed and dist.is_distributed()

    def _random_directions(self, proj: Tensor) -> Tensor:
        """Draws ``num_vectors`` unit vectors, shape (D, num_vectors), the same on all ranks."""
        directions = torch.randn(
            proj.shape[-1], self.num_vectors, device=proj.device, dtype=proj.dtype
        )
        if self._distributed():
            # A broadcast from rank 0 as a sum in which only rank 0 contributes.
            if dist.rank() != 0:
                directions = torch.zeros_like(directions)
            directions = dist.all_reduce_sum(directions)
        return directions / directions.norm(dim=0)

    def forward(self, proj: Tensor) -> Tensor:
        """Computes the SIGReg loss.

        Args:
            proj: Embeddings of shape (..., N, D).

        Returns:
            Scalar: the Epps-Pulley statistic averaged over slices and leading dimensions.
        """
        directions = self._random_directions(proj)
        # (..., N, slices, knots): every projection at every frequency. The float32 grid
        # promotes half-precision projections, so cos/sin and their sums run in float32.
        phases = (proj @ directions).unsqueeze(-1) * self.t
        sums = torch.stack([phases.cos().sum(dim=-3), phases.sin().sum(dim=-3)])
        num_samples: Tensor | int = proj.shape[-2]
        if self._distributed():
            sums = _sum_over_processes(sums)
            num_samples = dist.all_reduce_sum(
                torch.tensor(float(proj.shape[-2]), device=proj.device, dtype=sums.dtype)
            )
        ecf_real, ecf_imag = sums[0] / num_samples, sums[1] / num_samples
        error = (ecf_real - self.phi.to(sums.dtype)).square() + ecf_imag.square()
        statistic = (error @ self.weights.to(sums.dtype)) * num_samples  # (..., slices)
        return statistic.mean()


class LeJEPALoss(nn.Module):
    """LeJEPA loss (Balestriero and LeCun 2025, https://arxiv.org/abs/2511.08544).

    ``lambda_param * SIGReg(all) + (1 - lambda_param) * invariance(all, global)``, where
    ``all`` stacks the global and then the local views, SIGReg regularises every view
    towards an isotropic Gaussian and the invariance term
    (:func:`lejepa_invariance_loss`) pulls every view towards the mean global view.

    Shapes: ``local_proj`` (V_local, N, D) and ``global_proj`` (V_global, N, D); returns a
    scalar. With ``gather_distributed`` SIGReg uses the global batch; the invariance term is
    per process (its mean over processes is the full-batch value).

    Attributes:
        lambda_param: Weight of SIGReg in [0, 1]; the invariance term gets
            ``1 - lambda_param``. 0.05 is the reference code's value; the paper explores
            0.01 to 0.1.
        sigreg: The :class:`SIGReg` module.

    Example:
        >>> import torch
        >>> loss_fn = LeJEPALoss(sigreg_num_vectors=64)
        >>> global_proj = torch.randn(2, 16, 8)  # 2 global views, batch 16, dim 8
        >>> local_proj = torch.randn(6, 16, 8)  # 6 local views
        >>> loss = loss_fn(local_proj=local_proj, global_proj=global_proj)
    """

    def __init__(
        self,
        lambda_param: float = 0.05,
        gather_distributed: bool = False,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        sigreg_num_vectors: int = 1024,
    ) -> None:
        """Builds the loss.

        Args:
            lambda_param: Weight of SIGReg, in [0, 1].
            gather_distributed: Compute SIGReg over the batches of all processes.
            sigreg_knots: ``knots`` of :class:`SIGReg`.
            sigreg_t_max: ``t_max`` of :class:`SIGReg`.
            sigreg_num_vectors: ``num_vectors`` of :class:`SIGReg`.

        Raises:
            ValueError: If ``lambda_param`` is outside [0, 1] or a SIGReg argument is out of
                range.
        """
        super().__init__()
        if not 0.0 <= lambda_param <= 1.0:
            raise ValueError(
                f"LeJEPALoss 'lambda_param' must be in [0, 1], got lambda_param={lambda_param}."
            )
        self.lambda_param = lambda_param
        self.sigreg = SIGReg(
            knots=sigreg_knots,
            t_max=sigreg_t_max,
            num_vectors=sigreg_num_vectors,
            gather_distributed=gather_distributed,
        )

    def forward(self, *, local_proj: Tensor, global_proj: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            local_proj: Local views, shape (V_local, N, D), V_local >= 1.
            global_proj: Global views, shape (V_global, N, D), V_global >= 1.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If a shape is invalid or the two do not match.
        """
        _validate_projection_shapes(local_proj=local_proj, global_proj=global_proj)
        all_proj = torch.cat([global_proj, local_proj])
        regularization = self.sigreg(all_proj)
        invariance = lejepa_invariance_loss(all_proj=all_proj, global_proj=global_proj)
        return self.lambda_param * regularization + (1.0 - self.lambda_param) * invariance
