from __future__ import annotations

import pytest
import torch
from lightly.transforms.amplitude_rescale_transform import (
    AmplitudeRescaleTransform as LightlyAmplitudeRescaleTransform,
)

from fastssl.transforms.amplitude_rescale_transform import AmplitudeRescaleTransform


def _spectrum(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.fft.rfft2(torch.rand(shape, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 9, 6), (3, 32, 24)])
@pytest.mark.parametrize("value_range", [(0.8, 1.75), (0.1, 0.3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_values_equal_lightly(
    shape: tuple[int, int, int], value_range: tuple[float, float], seed: int
) -> None:
    # Both draw one U(range) factor per frequency from torch's generator in the same way.
    spectrum = _spectrum(shape)
    torch.manual_seed(seed)
    ours = AmplitudeRescaleTransform(range=value_range)(spectrum)
    torch.manual_seed(seed)
    theirs = LightlyAmplitudeRescaleTransform(range=value_range)(spectrum)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.complex64
    scale = spectrum.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_rescales_amplitude_keeps_phase_shares_factor_over_channels() -> None:
    torch.manual_seed(0)
    spectrum = _spectrum((3, 16, 12))
    out = AmplitudeRescaleTransform(range=(0.5, 2.0))(spectrum)
    factor = out.abs() / spectrum.abs()
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 2.0 + 1e-4
    torch.testing.assert_close(factor[0], factor[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.angle(out), torch.angle(spectrum), rtol=0, atol=1e-4)
    # Uniform factors: mean 1.25, standard deviation 1.5 / sqrt(12) over 16 * 7 frequencies.
    assert abs(factor[0].mean().item() - 1.25) < 4 * 1.5 / 12**0.5 / (16 * 7) ** 0.5


def test_bad_range() -> None:
    with pytest.raises(ValueError, match=r"range must be \(min, max\) with 0 <= min <= max"):
        AmplitudeRescaleTransform(range=(1.0, 0.5))
