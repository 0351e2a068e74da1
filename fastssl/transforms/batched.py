"""Color and filter operations on a batch of images, each image with its own parameters.

The batched engine of the torch backend (:mod:`fastssl.data.engines.batched`) runs these after
collation when numba is not installed (with numba it runs the compiled equivalents of
:mod:`fastssl.transforms.batched_kernels`, tested against these). They work in place, on
float32 tensors of shape (N, 3, H, W) holding values on the uint8 scale [0, 255], with one
factor per image (an (N,) tensor, or a float for all). Each operation computes what
``torchvision.transforms.v2.functional`` computes for a float image with that image's
factor (up to float32 rounding; ``tests/transforms/test_batched.py`` states the bounds).
The torchvision engine applies them to uint8 images and so truncates to an integer after
every operation; these keep float32 between operations, so a whole pipeline differs from
the torchvision engine's by that rounding (at most about one uint8 level per operation).

Speed notes: every operation is a handful of in-place elementwise torch calls. Calls that
are slow on the CPU (``aminmax``, ``remainder``, comparisons into bool tensors, ``where``)
are replaced by cheap equivalents (pairwise ``maximum``, ``floor``, ``sign``, ``lerp``), and
the Gaussian blur is separable with the kernel sized to each image's sigma.

>>> import torch
>>> x = torch.full((2, 3, 4, 4), 100.0)
>>> adjust_brightness_(x, torch.tensor([0.5, 2.0]))[:, 0, 0, 0].tolist()
[50.0, 200.0]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.transforms.gaussian_blur import kernel_size_for_sigma

# ITU-R 601-2 luma, torchvision's weights for grayscale, contrast and saturation.
LUMA = (0.2989, 0.587, 0.114)
MAX_VALUE = 255.0


Factors = Tensor | float


def _per_image(values: Factors, x: Tensor) -> Tensor | float:
    """(N,) factors as an (N, 1, 1, 1) tensor broadcasting over x; a float stays a float."""
    if isinstance(values, Tensor):
        return values.to(dtype=x.dtype).view(-1, 1, 1, 1)
    return float(values)


def _above_one(values: Factors) -> bool:
    # A factor <= 1 keeps [0, 255] values in [0, 255]: the clamp would change nothing.
    return bool((values > 1.0).any()) if isinstance(values, Tensor) else values > 1.0


def luma(x: Tensor) -> Tensor:
    """Gray level of every pixel: (N, 3, H, W) -> (N, 1, H, W), same dtype.

    Same weights and summation order as torchvision's ``rgb_to_grayscale``.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r.mul(LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2])


def adjust_brightness_(x: Tensor, factor: Factors) -> Tensor:
    """Multiplies image i by ``factor[i]`` and clips to [0, 255], in place.

    Args:
        x: (N, 3, H, W) float tensor on the [0, 255] scale.
        factor: (N,) brightness factors >= 0 (1 keeps the image), or one float for all.

    Returns:
        ``x``.
    """
    x.mul_(_per_image(factor, x))
    return x.clamp_(0.0, MAX_VALUE) if _above_one(factor) else x


def adjust_contrast_(x: Tensor, factor: Factors) -> Tensor:
    """Blends image i with its mean gray level: ``f * x + (1 - f) * mean``, in place.

    Args:
        x: (N, 3, H, W) float tensor on the [0, 255] scale.
        factor: (N,) contrast factors >= 0 (1 keeps the image, 0 gives flat gray), or one
            float for all.

    Returns:
        ``x``.
    """
    channel_means = x.mean(dim=(2, 3))  # (N, 3): the luma's mean, without a luma image
    mean = (channel_means @ torch.tensor(LUMA, dtype=x.dtype)).view(-1, 1, 1, 1)
    weight = 1.0 - _per_image(factor, x)
    x.lerp_(mean, weight)  # x + (1 - f) (mean - x): one pass
    return x.clamp_(0.0, MAX_VALUE) if _above_one(factor) else x


def adjust_saturation_(x: Tensor, factor: Factors) -> Tensor:
    """Blends every pixel of image i with its gray level: ``f * x + (1 - f) * luma``.

    Args:
        x: (N, 3, H, W) float tensor on the [0, 255] scale, changed in place.
        factor: (N,) saturation factors >= 0 (1 keeps the image, 0 gives grayscale), or
            one float for all.

    Returns:
        ``x``.
    """
    weight = 1.0 - _per_image(factor, x)
    x.lerp_(luma(x), weight)
    return x.clamp_(0.0, MAX_VALUE) if _above_one(factor) else x


# Channel offsets of the HSV -> RGB formula c = V - V S clip(min(k, 4 - k), 0, 1),
# k = (n + 6 H) mod 6, with n = 5, 3, 1 for R, G, B.
_HSV_OFFSETS = (5.0, 3.0, 1.0)


def adjust_hue_(x: Tensor, shift: Factors) -> Tensor:
    """Rotates the HSV hue of image i by ``shift[i]`` (a fraction of the circle), in place.

    Value (the channel maximum) and saturation are kept, as in torchvision's
    ``adjust_hue``; the RGB -> HSV -> RGB round trip is written without branches.

    Args:
        x: (N, 3, H, W) float tensor on the [0, 255] scale.
        shift: (N,) hue shifts in [-0.5, 0.5] (0 keeps the image), or one float for all.

    Returns:
        ``x``.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    high = torch.maximum(r, g)
    torch.maximum(high, b, out=high)
    low = torch.minimum(r, g)
    torch.minimum(low, b, out=low)
    spread = low.neg_().add_(high)  # V * S
    # 6 * hue times the spread, for each possible maximum channel (R's lies in [-1, 1] and
    # is taken mod 6 below); a gray pixel has spread 0 and all numerators 0.
    hue_r = g - b
    hue_g = (b - r).add_(spread, alpha=2.0)
    hue_b = (r - g).add_(spread, alpha=4.0)
    # 1 where the channel is the maximum (x - max <= 0, so its sign is -1 or 0).
    is_g = (g - high).sign_().add_(1.0)
    hue6 = hue_b.lerp_(hue_g, is_g)
    is_r = torch.sub(r, high, out=is_g).sign_().add_(1.0)
    hue6.lerp_(hue_r, is_r)
    del hue_r, hue_g, is_g, is_r
    hue6.mul_(spread.clamp_min(1e-12).reciprocal_()).add_(_per_image(shift, x) * 6.0)
    offsets = torch.tensor(_HSV_OFFSETS, dtype=x.dtype).view(1, 3, 1, 1)
    k = hue6 + offsets  # (N, 3, H, W)
    del hue6
    wraps = torch.mul(k, 1.0 / 6.0).floor_()
    k.sub_(wraps, alpha=6.0)  # mod 6 (an ulp off at 0 or 6 is harmless: g is 0 there)
    torch.minimum(k, torch.neg(k, out=wraps).add_(4.0), out=k).clamp_(0.0, 1.0).mul_(spread)
    return torch.sub(high, k, out=x)


def to_grayscale_(x: Tensor) -> Tensor:
    """Replaces every channel of every image by its gray level, in place.

    Args:
        x: (N, 3, H, W) float tensor.

    Returns:
        ``x``.
    """
    return x.copy_(luma(x).expand_as(x))


def solarize_(x: Tensor, threshold: float) -> Tensor:
    """Inverts (``255 - v``) every value ``v >= threshold``, in place.

    Args:
        x: (N, 3, H, W) float tensor on the [0, 255] scale.
        threshold: On the uint8 scale; 256 inverts nothing.

    Returns:
        ``x``.
    """
    return torch.where(x >= threshold, MAX_VALUE - x, x, out=x)


def gaussian_kernels(sigmas: Tensor, sizes: list[int]) -> Tensor:
    """One 1D Gaussian per image, centred and zero-padded to the largest size.

    The taps of image i are torchvision's ``_get_gaussian_kernel1d(sizes[i], sigmas[i])``:
    ``exp(-t^2 / (2 sigma^2))`` for ``t = -(size // 2), ..., size // 2``, normalised to sum 1.

    Args:
        sigmas: (N,) standard deviations in pixels (> 0).
        sizes: N odd kernel sizes.

    Returns:
        (N, max(sizes)) float32 weights.

    >>> gaussian_kernels(torch.tensor([1.0, 1.0]), [1, 3]).shape
    torch.Size([2, 3])
    """
    width = max(sizes)
    kernels = torch.zeros(len(sizes), width)
    for index, (sigma, size) in enumerate(zip(sigmas.tolist(), sizes, strict=True)):
        # torchvision spaces the samples by 1 / sqrt(2) and divides their square by sigma^2.
        lim = (size - 1) / (2.0 * math.sqrt(2.0))
        taps = torch.linspace(-lim, lim, steps=size).div(sigma).pow(2).neg().softmax(dim=0)
        start = (width - size) // 2
        kernels[index, start : start + size] = taps
    return kernels


def blur_kernel_sizes(
    sigmas: Tensor, height: int, width: int, kernel_size: int | None = None
) -> list[int]:
    """The kernel size of every image: sized to its sigma, or fixed, clamped to the image.

    Same rule as :func:`fastssl.transforms.gaussian_blur.gaussian_blur`.
    """
    largest = kernel_size_for_sigma(1e9, height, width)
    if kernel_size is not None:
        return [min(kernel_size, largest)] * len(sigmas)
    return [kernel_size_for_sigma(sigma, height, width) for sigma in sigmas.tolist()]


def gaussian_blur_(x: Tensor, sigmas: Tensor, kernel_size: int | None = None) -> Tensor:
    """Blurs image i with an isotropic Gaussian of standard deviation ``sigmas[i]``.

    Separable: a horizontal then a vertical pass of shifted, weighted sums, with reflect
    padding like torchvision. All images share the largest kernel; each image's taps
    beyond its own size are zero, so each gets exactly its own kernel.

    Args:
        x: (N, C, H, W) float tensor, changed in place.
        sigmas: (N,) standard deviations in pixels (> 0).
        kernel_size: Odd fixed kernel size, or None to size each kernel to its sigma
            (``2 * ceil(3 sigma) + 1``); clamped so the padding fits the image.

    Returns:
        ``x``.

    >>> x = torch.zeros(1, 3, 9, 9)
    >>> x[:, :, 4, 4] = 255.0
    >>> round(gaussian_blur_(x, torch.tensor([1.0])).sum().item() / 3)
    255
    """
    height, width = x.shape[-2:]
    sizes = blur_kernel_sizes(sigmas, height, width, kernel_size)
    weights = gaussian_kernels(sigmas, sizes).to(x.dtype)
    if x.shape[0] == 1:  # scalar weights, and only the image's own taps
        if sizes[0] > 1:
            start = (weights.shape[1] - sizes[0]) // 2
            _blur_separable(x, weights[:, start : start + sizes[0]], scalar=True)
        return x
    if max(sizes) > 1:
        _blur_separable(x, weights, scalar=False)
    return x


def _blur_separable(x: Tensor, weights: Tensor, scalar: bool) -> None:
    """x <- vertical(horizontal(x)), both with image i's taps ``weights[i]`` (N, K)."""
    height, width = x.shape[-2:]
    n, taps = weights.shape
    pad = taps // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    if scalar:
        w = weights[0].tolist()
        rows = torch.mul(padded[..., 0:width], w[0])
        for t in range(1, taps):
            rows.add_(padded[..., t : t + width], alpha=w[t])
        torch.mul(rows[:, :, 0:height], w[0], out=x)
        for t in range(1, taps):
            x.add_(rows[:, :, t : t + height], alpha=w[t])
        return
    used = [t for t in range(taps) if bool((weights[:, t] != 0).any())]
    columns = [weights[:, t].view(n, 1, 1, 1) for t in range(taps)]
    rows = padded[..., used[0] : used[0] + width] * columns[used[0]]
    for t in used[1:]:
        rows.addcmul_(padded[..., t : t + width], columns[t])
    torch.mul(rows[:, :, used[0] : used[0] + height], columns[used[0]], out=x)
    for t in used[1:]:
        x.addcmul_(rows[:, :, t : t + height], columns[t])


def normalize_coefficients(
    mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channels: int = 3
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` such that ``x * scale + shift == (x / 255 - mean) / std``.

    Args:
        mean: Per-channel mean, or None (with std None) for just the scaling to [0, 1].
        std: Per-channel standard deviation, or None.
        channels: Number of channels when mean is None.

    Returns:
        Two (1, C, 1, 1) float32 tensors.

    >>> scale, shift = normalize_coefficients((0.5,), (0.5,))
    >>> (255.0 * scale + shift).item()
    1.0
    """
    if mean is None or std is None:
        scale = torch.full((1, channels, 1, 1), 1.0 / MAX_VALUE)
        return scale, torch.zeros_like(scale)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    return (1.0 / (MAX_VALUE * std_t)).float(), (-mean_t / std_t).float()


def normalize(x: Tensor, scale: Tensor, shift: Tensor, out: Tensor) -> Tensor:
    """Writes ``x * scale + shift`` (see :func:`normalize_coefficients`) into ``out``.

    Args:
        x: (N, C, H, W) float32 tensor on the [0, 255] scale (left unchanged).
        scale: (1, C, 1, 1) float32.
        shift: (1, C, 1, 1) float32.
        out: (N, C, H, W) tensor of any float dtype.

    Returns:
        ``out``.
    """
    # mul + add_ is about 3x faster than one addcmul with two broadcast operands.
    if out.dtype == x.dtype:
        return torch.mul(x, scale, out=out).add_(shift)
    return out.copy_(torch.mul(x, scale).add_(shift))
