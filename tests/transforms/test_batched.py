"""The batched color and filter ops against torchvision's functional ops, image by image.

Each op runs on a batch where every image has its own factor, and is compared with
``torchvision.transforms.v2.functional`` applied to each image alone with its factor:

* float images in [0, 1] (torchvision's float path, no rounding): the batched op on the
  [0, 255] scale, divided by 255, agrees within ``FLOAT_ATOL`` (float32 rounding);
* uint8 images (torchvision's uint8 path truncates, or for the blur rounds, to an integer
  after the op; the batched op keeps float32): they agree within one uint8 level, plus
  ``|1 - f|`` for contrast and saturation, whose gray level torchvision also floors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import batched, batched_kernels
from fastssl.transforms.gaussian_blur import gaussian_blur

FLOAT_ATOL = 2e-6 * 255  # on the [0, 255] scale: a few float32 ulps of values near 255
N = 6


def _images(height: int = 23, width: int = 29, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N, 3, height, width), generator=generator, dtype=torch.uint8)
    images[0] = 128  # gray: hue undefined, saturation 0
    images[1, :, :4] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)  # pure red
    images[1, :, 4:8] = torch.tensor([0, 0, 255], dtype=torch.uint8).view(3, 1, 1)
    return images


FACTORS = torch.tensor([0.0, 0.2, 0.7, 1.0, 1.4, 1.8])
SHIFTS = torch.tensor([-0.5, -0.2, 0.0, 0.05, 0.3, 0.5])

OPS = [
    ("brightness", batched.adjust_brightness_, F.adjust_brightness, FACTORS),
    ("contrast", batched.adjust_contrast_, F.adjust_contrast, FACTORS),
    ("saturation", batched.adjust_saturation_, F.adjust_saturation, FACTORS),
    ("hue", batched.adjust_hue_, F.adjust_hue, SHIFTS),
]


@pytest.mark.parametrize(("name", "ours", "theirs", "factors"), OPS, ids=[o[0] for o in OPS])
def test_jitter_op_matches_torchvision_on_float_images(name, ours, theirs, factors) -> None:
    images = _images().float() / 255.0
    result = ours(images * 255.0, factors) / 255.0
    for i in range(N):
        expected = theirs(images[i], float(factors[i]))
        torch.testing.assert_close(result[i], expected, atol=FLOAT_ATOL / 255, rtol=0)


@pytest.mark.parametrize(("name", "ours", "theirs", "factors"), OPS, ids=[o[0] for o in OPS])
def test_jitter_op_is_within_one_level_of_torchvision_on_uint8(name, ours, theirs, factors):
    images = _images(seed=1)
    result = ours(images.float(), factors)
    for i in range(N):
        factor = float(factors[i])
        expected = theirs(images[i], factor).float()
        floored_gray = abs(1.0 - factor) if name in ("contrast", "saturation") else 0.0
        assert (result[i] - expected).abs().max() <= 1.0 + floored_gray + 1e-3, (name, factor)


@pytest.mark.parametrize(("name", "ours", "theirs", "factors"), OPS, ids=[o[0] for o in OPS])
def test_a_float_factor_equals_a_tensor_of_it(name, ours, theirs, factors) -> None:
    images = _images(seed=2).float()
    value = float(factors[4])
    torch.testing.assert_close(
        ours(images.clone(), value), ours(images.clone(), torch.full((N,), value))
    )


def test_hue_shift_keeps_value_and_saturation() -> None:
    images = _images(seed=3).float()
    shifted = batched.adjust_hue_(images.clone(), SHIFTS)
    torch.testing.assert_close(shifted.amax(1), images.amax(1), atol=1e-3, rtol=0)
    torch.testing.assert_close(shifted.amin(1), images.amin(1), atol=1e-3, rtol=0)


def test_grayscale_solarize_and_normalize_match_torchvision() -> None:
    images = _images(seed=4).float() / 255.0
    gray = batched.to_grayscale_(images * 255.0) / 255.0
    torch.testing.assert_close(gray, F.rgb_to_grayscale(images, num_output_channels=3))
    solar = batched.solarize_(images * 255.0, 100) / 255.0
    torch.testing.assert_close(solar, F.solarize(images, 100 / 255.0), atol=1e-6, rtol=0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    scale, shift = batched.normalize_coefficients(mean, std)
    out = torch.empty(N, 3, 23, 29, dtype=torch.float32)
    batched.normalize(images * 255.0, scale, shift, out)
    torch.testing.assert_close(out, F.normalize(images, list(mean), list(std)))
    half = torch.empty(N, 3, 23, 29, dtype=torch.float16)
    batched.normalize(images * 255.0, scale, shift, half)
    torch.testing.assert_close(half.float(), out, atol=4e-3, rtol=1e-3)
    plain = batched.normalize(images * 255.0, *batched.normalize_coefficients(None, None), out)
    torch.testing.assert_close(plain, images)


@pytest.mark.parametrize("kernel_size", [None, 5, 31])
@pytest.mark.parametrize("height", [40, 6])  # 6: the kernel is clamped to what the image pads
def test_blur_matches_torchvision_per_image_sigma(kernel_size: int | None, height: int) -> None:
    images = _images(height=height, width=37, seed=5).float() / 255.0
    sigmas = torch.tensor([0.1, 0.4, 0.9, 1.3, 2.0, 3.1])
    result = batched.gaussian_blur_(images * 255.0, sigmas, kernel_size) / 255.0
    for i in range(N):
        expected = gaussian_blur(images[i], float(sigmas[i]), kernel_size)
        torch.testing.assert_close(result[i], expected, atol=2e-6, rtol=0)
    one = batched.gaussian_blur_(images[3:4] * 255.0, sigmas[3:4], kernel_size) / 255.0
    torch.testing.assert_close(one[0], result[3], atol=2e-6, rtol=0)


def test_blur_on_uint8_is_within_one_level_of_torchvision() -> None:
    images = _images(seed=6)
    sigmas = torch.tensor([0.3, 0.6, 1.0, 1.5, 1.9, 2.0])
    result = batched.gaussian_blur_(images.float(), sigmas)
    for i in range(N):
        size = 2 * math.ceil(3 * float(sigmas[i])) + 1
        expected = F.gaussian_blur(images[i], [size, size], [float(sigmas[i])] * 2).float()
        assert (result[i] - expected).abs().max() <= 0.5 + 1e-3  # torchvision rounds


def test_gaussian_kernels_are_centred_normalised_and_zero_padded() -> None:
    kernels = batched.gaussian_kernels(torch.tensor([0.5, 1.0, 2.0]), [3, 7, 13])
    assert kernels.shape == (3, 13)
    torch.testing.assert_close(kernels.sum(1), torch.ones(3))
    torch.testing.assert_close(kernels, kernels.flip(1))  # symmetric around the centre
    assert (kernels[0, :5] == 0).all() and (kernels[1, :3] == 0).all()
    assert batched.blur_kernel_sizes(torch.tensor([0.1, 1.0, 5.0]), 8, 100) == [3, 7, 15]
    assert batched.blur_kernel_sizes(torch.tensor([0.1, 1.0]), 100, 100, kernel_size=9) == [9, 9]


# ------------------------------------------------------------------------- numba kernels
needs_numba = pytest.mark.skipif(not batched_kernels.available(), reason="needs numba")
KERNEL_OPS = [
    ("brightness", (0.0, 0.6, 1.0, 1.7)),
    ("contrast", (0.0, 0.3, 1.0, 1.5)),
    ("saturation", (0.0, 0.4, 1.0, 1.8)),
    ("hue", (-0.5, -0.13, 0.0, 0.27, 0.5)),
]


@needs_numba
@pytest.mark.parametrize(("name", "factors"), KERNEL_OPS, ids=[o[0] for o in KERNEL_OPS])
def test_numba_kernel_equals_the_torch_op(name: str, factors: tuple[float, ...]) -> None:
    images = _images(seed=7).float()
    for i, factor in enumerate(factors):
        x = images[i : i + 1].clone()
        expected = getattr(batched, f"adjust_{name}_")(x.clone(), factor)
        result = getattr(batched_kernels, f"adjust_{name}_")(x, factor)
        torch.testing.assert_close(result, expected, atol=FLOAT_ATOL * 2, rtol=0)


@needs_numba
@pytest.mark.parametrize("kernel_size", [None, 5])
@pytest.mark.parametrize("height", [40, 6])
def test_numba_blur_gray_solarize_normalize_equal_the_torch_ops(
    kernel_size: int | None, height: int
) -> None:
    images = _images(height=height, width=37, seed=8).float()
    for i, sigma in enumerate((0.1, 0.7, 1.6, 2.0, 3.1)):
        x = images[i : i + 1].clone()
        expected = batched.gaussian_blur_(x.clone(), torch.tensor([sigma]), kernel_size)
        result = batched_kernels.gaussian_blur_(x, sigma, kernel_size)
        torch.testing.assert_close(result, expected, atol=2e-6 * 255, rtol=0)
    x = images[:1].clone()
    torch.testing.assert_close(
        batched_kernels.to_grayscale_(x.clone()), batched.to_grayscale_(x.clone())
    )
    torch.testing.assert_close(
        batched_kernels.solarize_(x.clone(), 99), batched.solarize_(x.clone(), 99)
    )
    scale, shift = batched.normalize_coefficients((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    ours = batched_kernels.normalize(x, scale, shift, torch.empty_like(x))
    torch.testing.assert_close(ours, batched.normalize(x, scale, shift, torch.empty_like(x)))
    with pytest.raises(ValueError, match="one contiguous float32 image"):
        batched_kernels.adjust_hue_(images[:2].clone(), 0.1)
