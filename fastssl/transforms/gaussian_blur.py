"""Random Gaussian blur with a kernel sized to the sampled sigma.

Used by SimCLR (https://arxiv.org/abs/2002.05709), BYOL (https://arxiv.org/abs/2006.07733),
DINO (https://arxiv.org/abs/2104.14294) and most other joint-embedding methods.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

_ImageT = TypeVar("_ImageT", Tensor, Image)

# A Gaussian truncated at 3 sigma keeps 99.7 % of its mass; wider kernels only cost time.
KERNEL_SIGMAS = 3.0


def kernel_size_for_sigma(sigma: float, height: int, width: int) -> int:
    """Returns the odd kernel size that covers ``KERNEL_SIGMAS`` standard deviations.

    The size is clamped so that the reflect padding (``kernel_size // 2``) stays smaller
    than the image, which ``torch.nn.functional.pad(mode="reflect")`` requires.

    Args:
        sigma: Standard deviation of the Gaussian, in pixels.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        An odd kernel size >= 1.

    >>> kernel_size_for_sigma(1.0, 224, 224)
    7
    """
    size = 2 * math.ceil(KERNEL_SIGMAS * sigma) + 1
    largest = 2 * (min(height, width) - 1) + 1
    return max(1, min(size, largest))


def gaussian_blur(image: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Blurs a (..., C, H, W) image tensor (uint8 or float) with an isotropic Gaussian.

    Args:
        image: Image tensor of shape (..., C, H, W); the dtype is kept.
        sigma: Standard deviation in pixels (> 0).
        kernel_size: Odd kernel size; None sizes it to ``sigma`` (see ``kernel_size_for_sigma``).

    Returns:
        The blurred image, same shape and dtype.
    """
    height, width = image.shape[-2:]
    if kernel_size is None:
        kernel_size = kernel_size_for_sigma(sigma, height, width)
    else:
        # A fixed kernel may be too large for a small crop: clamp like the sized one.
        kernel_size = min(kernel_size, kernel_size_for_sigma(1e9, height, width))
    if kernel_size <= 1:
        return image
    return F.gaussian_blur(image, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


class GaussianBlur:
    """Blurs an image with probability ``prob`` and a sigma drawn uniformly from ``sigmas``.

    Same constructor as ``lightly.transforms.GaussianBlur``. Unlike lightly (PIL's box-blur
    approximation, ``numpy`` global RNG), the blur is a true Gaussian whose kernel covers
    3 sigma, all random draws come from ``torch``'s generator (so ``torch.manual_seed`` makes
    it reproducible), and a tensor input stays a tensor of the same dtype (lightly returns a
    float tensor for any tensor input).

    Input: PIL image or (C, H, W) tensor (uint8 or float). Output: same type as the input.

    Args:
        prob: Probability of blurring, in [0, 1].
        sigmas: (min, max) standard deviation in pixels, 0 < min <= max.
        kernel_size: Odd kernel size, or None to size the kernel to the sampled sigma.

    >>> import torch
    >>> blur = GaussianBlur(prob=1.0, sigmas=(1.0, 1.0))
    >>> blur(torch.zeros(3, 8, 8, dtype=torch.uint8)).shape
    torch.Size([3, 8, 8])
    """

    def __init__(
        self,
        *,
        prob: float = 0.5,
        sigmas: tuple[float, float] = (0.2, 2),
        kernel_size: int | None = None,
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
        if len(sigmas) != 2 or not 0.0 < sigmas[0] <= sigmas[1]:
            raise ValueError(f"sigmas must be (min, max) with 0 < min <= max, got {sigmas!r}.")
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be None or an odd int >= 1, got {kernel_size!r}.")
        self.prob = prob
        self.sigmas = sigmas
        self.kernel_size = kernel_size

    def __call__(self, sample: _ImageT) -> _ImageT:
        """Blurs ``sample`` with probability ``prob``.

        Args:
            sample: PIL image or (C, H, W) tensor.

        Returns:
            The (possibly) blurred image, same type as ``sample``.
        """
        if self.prob <= 0.0 or float(torch.rand(())) >= self.prob:
            return sample
        low, high = float(self.sigmas[0]), float(self.sigmas[1])
        sigma = low + (high - low) * float(torch.rand(()))
        if isinstance(sample, Tensor):
            return gaussian_blur(sample, sigma, self.kernel_size)
        blurred = gaussian_blur(F.pil_to_tensor(sample), sigma, self.kernel_size)
        return F.to_pil_image(blurred, mode=sample.mode)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prob={self.prob}, sigmas={self.sigmas}, "
            f"kernel_size={self.kernel_size})"
        )
