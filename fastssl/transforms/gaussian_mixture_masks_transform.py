"""Gaussian mixture masking of the Fourier spectrum, a frequency-domain augmentation of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class GaussianMixtureMask:
    """Attenuates the spectrum around ``num_gaussians`` random frequencies.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    For each of n Gaussians a centre (u0, v0) is drawn uniformly over the spectrum's
    (row, column) grid and a standard deviation per axis (s_u, s_v) uniformly from
    ``std_range`` (in frequency bins). The spectrum is multiplied, in every channel, by

        mask(u, v) = prod_i (1 - exp(-(u - u0_i)^2 / (2 s_u,i^2) - (v - v0_i)^2 / (2 s_v,i^2)))

    which is 0 at every centre and close to 1 far from all of them. Each Gaussian is
    separable, so the mask is built from (n, H) and (n, W') factors in one vectorised
    product. Same interface, and the same draws from ``torch``'s generator, as lightly
    1.6's ``GaussianMixtureMask``.

    Input: complex spectrum (C, H, W') as returned by ``RFFT2DTransform``.
    Output: complex spectrum of the same shape.

    Args:
        num_gaussians: Number of Gaussians, >= 0.
        std_range: (min, max) standard deviation in frequency bins, 0 < min <= max.

    Raises:
        ValueError: If ``num_gaussians`` < 0 or ``std_range`` is not (min, max) with
            0 < min <= max.

    >>> import torch
    >>> spectrum = torch.fft.rfft2(torch.rand(3, 16, 16))
    >>> GaussianMixtureMask(num_gaussians=4, std_range=(1.0, 2.0))(spectrum).shape
    torch.Size([3, 16, 9])
    """

    def __init__(self, num_gaussians: int = 20, std_range: tuple[float, float] = (10, 15)) -> None:
        if not isinstance(num_gaussians, int) or num_gaussians < 0:
            raise ValueError(f"num_gaussians must be an int >= 0, got {num_gaussians!r}.")
        if len(std_range) != 2 or not 0.0 < std_range[0] <= std_range[1]:
            raise ValueError(
                f"std_range must be (min, max) with 0 < min <= max, got {std_range!r}."
            )
        self.num_gaussians = num_gaussians
        self.std_range = std_range

    def gaussian_kernel(self, size: tuple[int, int], sigma: Tensor, center: Tensor) -> Tensor:
        """Returns the (unnormalised, peak 1) 2D Gaussian of shape ``size``.

        Args:
            size: (H, W) of the kernel.
            sigma: Standard deviations (s_u, s_v) along the rows and columns, shape (2,).
            center: Centre (u0, v0) in (row, column) bins, shape (2,).

        Returns:
            Tensor (H, W) with exp(-(u - u0)^2 / (2 s_u^2) - (v - v0)^2 / (2 s_v^2)).
        """
        row_factor, column_factor = _gaussian_factors(size, sigma.view(1, 2), center.view(1, 2))
        return row_factor[0, :, None] * column_factor[0, None, :]

    def apply_gaussian_mixture_mask(
        self, freq_image: Tensor, num_gaussians: int, std: tuple[float, float]
    ) -> Tensor:
        """Multiplies ``freq_image`` (C, H, W') by a mask of ``num_gaussians`` random Gaussians.

        Args:
            freq_image: Complex spectrum of shape (C, H, W').
            num_gaussians: Number of Gaussians.
            std: (min, max) standard deviation of the Gaussians, in bins.

        Returns:
            The masked spectrum, same shape.
        """
        if num_gaussians == 0:
            return freq_image
        rows, columns = freq_image.shape[-2:]
        device = freq_image.device
        # The draws are tiny; they are made one Gaussian at a time, in lightly's order
        # (row, column, both sigmas), so that a seed gives lightly's mask exactly.
        centers, sigmas = [], []
        for _ in range(num_gaussians):
            row = torch.randint(0, rows, (1,), device=device)
            column = torch.randint(0, columns, (1,), device=device)
            centers.append(torch.cat([row, column]))
            sigmas.append(torch.rand(2, device=device) * (std[1] - std[0]) + std[0])
        row_factor, column_factor = _gaussian_factors(
            (rows, columns), torch.stack(sigmas), torch.stack(centers)
        )
        kernels = row_factor[:, :, None] * column_factor[:, None, :]  # (n, H, W')
        mask = (1 - kernels).prod(dim=0)
        return freq_image * mask

    def __call__(self, freq_image: Tensor) -> Tensor:
        """Applies a random Gaussian mixture mask to ``freq_image`` (C, H, W')."""
        return self.apply_gaussian_mixture_mask(freq_image, self.num_gaussians, self.std_range)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_gaussians={self.num_gaussians}, std_range={self.std_range})"
        )


def _gaussian_factors(
    size: tuple[int, int], sigmas: Tensor, centers: Tensor
) -> tuple[Tensor, Tensor]:
    """Row and column factors of n separable Gaussians.

    Args:
        size: (H, W) of the grid.
        sigmas: (n, 2) standard deviations along rows and columns.
        centers: (n, 2) centres (row, column).

    Returns:
        (n, H) exp(-(u - u0)^2 / (2 s_u^2)) and (n, W) exp(-(v - v0)^2 / (2 s_v^2)).
    """
    sigmas = sigmas.float()
    centers = centers.to(sigmas)
    factors = []
    for axis in (0, 1):
        grid = torch.arange(size[axis], device=sigmas.device, dtype=sigmas.dtype)
        distance = grid[None, :] - centers[:, axis, None]
        factors.append(torch.exp(-(distance**2) / (2 * sigmas[:, axis, None] ** 2)))
    return factors[0], factors[1]
