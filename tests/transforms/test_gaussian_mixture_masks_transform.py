from __future__ import annotations

import pytest
import torch
from lightly.transforms.gaussian_mixture_masks_transform import (
    GaussianMixtureMask as LightlyGaussianMixtureMask,
)

from fastssl.transforms.gaussian_mixture_masks_transform import GaussianMixtureMask

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside lightly


def _spectrum(shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.fft.rfft2(torch.rand(shape, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 9, 14), (3, 32, 24)])
@pytest.mark.parametrize(("num_gaussians", "std_range"), [(20, (10, 15)), (3, (1.0, 2.5))])
@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_values_equal_lightly(
    shape: tuple[int, int, int],
    num_gaussians: int,
    std_range: tuple[float, float],
    seed: int,
) -> None:
    # Same draws (row, column, sigmas per Gaussian) from torch's generator as lightly.
    spectrum = _spectrum(shape)
    torch.manual_seed(seed)
    ours = GaussianMixtureMask(num_gaussians, std_range)(spectrum)
    torch.manual_seed(seed)
    theirs = LightlyGaussianMixtureMask(num_gaussians, std_range)(spectrum)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.complex64
    scale = spectrum.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_gaussian_kernel_equals_lightly_and_formula() -> None:
    sigma, center = torch.tensor([2.0, 3.5]), torch.tensor([4, 1])
    ours = GaussianMixtureMask().gaussian_kernel((9, 7), sigma, center)
    theirs = LightlyGaussianMixtureMask().gaussian_kernel((9, 7), sigma, center)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    assert ours[4, 1] == 1.0
    u, v = 7, 5
    expected = torch.exp(torch.tensor(-((u - 4) ** 2) / (2 * 2.0**2) - (v - 1) ** 2 / (2 * 3.5**2)))
    torch.testing.assert_close(ours[u, v], expected)


def test_mask_zeroes_centres_and_is_shared_by_channels() -> None:
    torch.manual_seed(0)
    spectrum = _spectrum((3, 20, 11))
    out = GaussianMixtureMask(num_gaussians=4, std_range=(1.0, 1.0))(spectrum)
    ratio = (out / spectrum).real
    torch.testing.assert_close(ratio[0], ratio[2])
    assert (ratio >= -1e-6).all() and (ratio <= 1 + 1e-5).all()
    assert (ratio[0] < 1e-6).sum() >= 1  # a centre is exactly attenuated to 0


def test_apply_with_explicit_arguments_and_zero_gaussians() -> None:
    spectrum = _spectrum((2, 8, 5))
    transform = GaussianMixtureMask(num_gaussians=5)
    torch.manual_seed(2)
    ours = transform.apply_gaussian_mixture_mask(spectrum, 2, (1.0, 2.0))
    torch.manual_seed(2)
    theirs = LightlyGaussianMixtureMask().apply_gaussian_mixture_mask(spectrum, 2, (1.0, 2.0))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert torch.equal(GaussianMixtureMask(num_gaussians=0)(spectrum), spectrum)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_gaussians must be an int >= 0, got -1"):
        GaussianMixtureMask(num_gaussians=-1)
    with pytest.raises(ValueError, match=r"std_range must be \(min, max\) with 0 < min <= max"):
        GaussianMixtureMask(std_range=(0, 2))
