from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.rfft2d_transform import RFFT2DTransform as LightlyRFFT2DTransform

from fastssl.transforms.rfft2d_transform import RFFT2DTransform


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 7, 5), (3, 16, 11), (2, 3, 6, 10)])
def test_values_equal_lightly_and_numpy(shape: tuple[int, ...]) -> None:
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    ours = RFFT2DTransform()(image)
    theirs = LightlyRFFT2DTransform()(image)
    assert ours.shape == theirs.shape == (*shape[:-1], shape[-1] // 2 + 1)
    assert ours.dtype == theirs.dtype == torch.complex64
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # Independent oracle: numpy's FFT over the last two axes.
    expected = torch.from_numpy(np.fft.rfft2(image.double().numpy()))
    torch.testing.assert_close(ours.to(torch.complex128), expected, rtol=1e-4, atol=1e-4)


def test_dc_term_is_the_pixel_sum() -> None:
    image = torch.rand(3, 6, 9, generator=torch.Generator().manual_seed(1))
    spectrum = RFFT2DTransform()(image)
    torch.testing.assert_close(spectrum[:, 0, 0].real, image.sum(dim=(1, 2)), rtol=1e-5, atol=1e-5)
