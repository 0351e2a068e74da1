from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyGaussianBlur
from PIL import Image

from fastssl.transforms.gaussian_blur import GaussianBlur, gaussian_blur, kernel_size_for_sigma
from tests.transforms._images import binomial_tolerance, random_pil, tagged_image


@pytest.mark.parametrize(("sigma", "expected"), [(0.1, 3), (0.5, 5), (1.0, 7), (2.0, 13)])
def test_kernel_covers_three_sigma(sigma: float, expected: int) -> None:
    assert kernel_size_for_sigma(sigma, 224, 224) == expected == 2 * math.ceil(3 * sigma) + 1


def test_kernel_is_clamped_to_small_images() -> None:
    assert kernel_size_for_sigma(2.0, 4, 6) == 7  # reflect padding 3 < 4
    out = gaussian_blur(torch.zeros(3, 4, 6, dtype=torch.uint8), sigma=2.0)
    assert out.shape == (3, 4, 6)


def _naive_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian written from the formula, reflect padding."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = image.to(torch.float64)[None]
    out = torch.nn.functional.pad(out, (radius, radius, radius, radius), mode="reflect")
    channels = out.shape[1]
    out = torch.nn.functional.conv2d(
        out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
    )
    out = torch.nn.functional.conv2d(
        out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
    )
    return out[0]


@pytest.mark.parametrize("sigma", [0.6, 1.3])
def test_blur_equals_the_gaussian_formula(sigma: float) -> None:
    image = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        gaussian_blur(image, sigma).double(), _naive_blur(image, sigma), atol=1e-5, rtol=1e-4
    )


def test_close_to_lightly_pil_blur() -> None:
    # lightly blurs with PIL's box approximation; the true Gaussian is within a few levels.
    image = random_pil(48)
    ours = np.asarray(GaussianBlur(prob=1.0, sigmas=(1.5, 1.5))(image), dtype=np.float64)
    theirs = np.asarray(LightlyGaussianBlur(prob=1.0, sigmas=(1.5, 1.5))(image), dtype=np.float64)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 2.0


def test_types_are_kept() -> None:
    blur = GaussianBlur(prob=1.0)
    assert isinstance(blur(random_pil(16)), Image.Image)
    assert blur(tagged_image()).dtype == torch.uint8
    assert blur(tagged_image().float() / 255).dtype == torch.float32


def test_blur_rate_and_sigma_range() -> None:
    torch.manual_seed(0)
    image = tagged_image()
    n, p = 1000, 0.3
    blur = GaussianBlur(prob=p, sigmas=(0.5, 1.5))
    blurred = [out for out in (blur(image) for _ in range(n)) if not torch.equal(out, image)]
    assert abs(len(blurred) / n - p) <= binomial_tolerance(p, n)

    # Every blurred output is at least as smooth as sigma=0.5 and at most as smooth as 1.5,
    # measured by the total variation of the green (row-coordinate) channel.
    def tv(x: torch.Tensor) -> float:
        return float(x[1].double().diff(dim=0).abs().sum())

    low, high = tv(gaussian_blur(image, 1.5)), tv(gaussian_blur(image, 0.5))
    assert all(low - 64 <= tv(out) <= high + 64 for out in blurred)


def test_determinism_and_bad_arguments() -> None:
    blur = GaussianBlur(prob=0.5)
    image = tagged_image()
    torch.manual_seed(5)
    first = [blur(image) for _ in range(6)]
    torch.manual_seed(5)
    assert all(torch.equal(a, blur(image)) for a in first)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        GaussianBlur(prob=1.5)
    with pytest.raises(
        ValueError, match=r"sigmas must be \(min, max\) with 0 < min <= max, got \(2, 1\)"
    ):
        GaussianBlur(sigmas=(2, 1))
    with pytest.raises(ValueError, match="kernel_size must be None or an odd int >= 1, got 4"):
        GaussianBlur(kernel_size=4)
