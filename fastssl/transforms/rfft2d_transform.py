"""Image -> 2D real FFT, the first step of the frequency-domain augmentations of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class RFFT2DTransform:
    """Takes the 2D real FFT of an image over its last two dimensions.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    Same interface as lightly 1.6's ``RFFT2DTransform``. A real image's spectrum is
    Hermitian-symmetric, so ``torch.fft.rfft2`` keeps only the W // 2 + 1 non-redundant
    columns (lightly's docstring says (C, H, W); the values are the same).

    Input: real float tensor (C, H, W) (any leading dimensions).
    Output: complex tensor (C, H, W // 2 + 1).

    >>> import torch
    >>> RFFT2DTransform()(torch.ones(3, 8, 8)).shape
    torch.Size([3, 8, 5])
    """

    def __call__(self, image: Tensor) -> Tensor:
        """Returns ``torch.fft.rfft2(image)``."""
        return torch.fft.rfft2(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
