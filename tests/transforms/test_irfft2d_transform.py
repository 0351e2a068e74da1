from __future__ import annotations

import pytest
import torch
from lightly.transforms.irfft2d_transform import IRFFT2DTransform as LightlyIRFFT2DTransform

from fastssl.transforms.irfft2d_transform import IRFFT2DTransform
from fastssl.transforms.rfft2d_transform import RFFT2DTransform


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 7, 5), (3, 16, 11), (2, 3, 6, 10)])
def test_inverts_rfft_and_equals_lightly(shape: tuple[int, ...]) -> None:
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    spectrum = RFFT2DTransform()(image)
    # Perturb the spectrum so the comparison is not just a round trip.
    spectrum = spectrum * torch.linspace(0.5, 1.5, spectrum.shape[-1])
    size = (shape[-2], shape[-1])
    ours = IRFFT2DTransform(shape=size)(spectrum)
    theirs = LightlyIRFFT2DTransform(shape=size)(spectrum)
    assert ours.shape == theirs.shape == shape
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    round_trip = IRFFT2DTransform(shape=size)(RFFT2DTransform()(image))
    torch.testing.assert_close(round_trip, image, rtol=1e-4, atol=1e-5)


def test_shape_picks_odd_or_even_width() -> None:
    spectrum = torch.fft.rfft2(torch.rand(2, 6, 9))
    assert IRFFT2DTransform(shape=(6, 9))(spectrum).shape == (2, 6, 9)
    assert IRFFT2DTransform(shape=(6, 8))(spectrum).shape == (2, 6, 8)
