"""2D real FFT spectrum -> image, the last step of the frequency-domain augmentations of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class IRFFT2DTransform:
    """Inverts ``RFFT2DTransform``: the inverse 2D real FFT over the last two dimensions.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    Same interface as lightly 1.6's ``IRFFT2DTransform``. The output size must be given:
    an rfft spectrum with W // 2 + 1 columns comes from an image of width W = 2 (W' - 1) or
    2 (W' - 1) + 1, which the spectrum alone cannot tell apart.

    Input: complex tensor (C, H, W // 2 + 1) (any leading dimensions).
    Output: real tensor (C, H, W) with (H, W) = shape.

    Args:
        shape: (H, W) of the reconstructed image.

    >>> import torch
    >>> image = torch.rand(3, 8, 7)
    >>> spectrum = torch.fft.rfft2(image)
    >>> torch.allclose(IRFFT2DTransform(shape=(8, 7))(spectrum), image, atol=1e-6)
    True
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def __call__(self, freq_image: Tensor) -> Tensor:
        """Returns ``torch.fft.irfft2(freq_image, s=shape)``."""
        return torch.fft.irfft2(freq_image, s=self.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"
