"""Random masking of Fourier frequencies, a frequency-domain augmentation of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class RandomFrequencyMaskTransform:
    """Zeroes a random fraction of the frequencies, the same ones in every channel.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    A rate r ~ U[k[0], k[1]) is drawn per call, then every frequency is zeroed
    independently with probability r. The zero frequency (the mean colour, which carries
    most of the image's content) is never masked, as in the paper. Same interface as
    lightly 1.6's ``RandomFrequencyMaskTransform``; unlike lightly, r comes from ``torch``'s
    generator rather than numpy's global one, so ``torch.manual_seed`` reproduces it and
    data-loader workers (which torch seeds differently) do not repeat each other's draws.

    Input: complex spectrum (C, H, W') as returned by ``RFFT2DTransform``.
    Output: complex spectrum of the same shape.

    Args:
        k: (min, max) of the masking rate, 0 <= min <= max <= 1.

    Raises:
        ValueError: If ``k`` is not a (min, max) pair in [0, 1].

    >>> import torch
    >>> spectrum = torch.fft.rfft2(torch.rand(3, 8, 8))
    >>> masked = RandomFrequencyMaskTransform(k=(1.0, 1.0))(spectrum)
    >>> int((masked != 0).sum()), bool(masked[:, 0, 0].eq(spectrum[:, 0, 0]).all())
    (3, True)
    """

    def __init__(self, k: tuple[float, float] = (0.01, 0.1)) -> None:
        if len(k) != 2 or not 0.0 <= k[0] <= k[1] <= 1.0:
            raise ValueError(f"k must be (min, max) with 0 <= min <= max <= 1, got {k!r}.")
        self.k = k

    def __call__(self, fft_image: Tensor) -> Tensor:
        """Zeroes a random subset of the frequencies of ``fft_image`` (shape (C, H, W'))."""
        low, high = float(self.k[0]), float(self.k[1])
        rate = low + (high - low) * float(torch.rand(()))
        keep = torch.rand(fft_image.shape[-2:], device=fft_image.device) > rate
        keep[0, 0] = True
        return fft_image * keep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"
