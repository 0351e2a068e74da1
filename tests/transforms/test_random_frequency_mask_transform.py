from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.random_frequency_mask_transform import (
    RandomFrequencyMaskTransform as LightlyRandomFrequencyMaskTransform,
)

from fastssl.transforms.random_frequency_mask_transform import RandomFrequencyMaskTransform


def _spectrum(shape: tuple[int, int, int]) -> torch.Tensor:
    # Random pixels: no frequency is exactly 0 unless masked.
    return torch.fft.rfft2(torch.rand(shape, generator=torch.Generator().manual_seed(0)))


def _masked_fraction(out: torch.Tensor) -> float:
    return (out[0] == 0).float().mean().item()


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 9, 6)])
def test_structure_matches_lightly_and_mask_is_shared(shape: tuple[int, int, int]) -> None:
    spectrum = _spectrum(shape)
    ours = RandomFrequencyMaskTransform(k=(0.3, 0.6))(spectrum)
    theirs = LightlyRandomFrequencyMaskTransform(k=(0.3, 0.6))(spectrum)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.complex64
    zero = ours == 0
    assert (zero == zero[0]).all()  # the same frequencies in every channel
    assert not zero[:, 0, 0].any()  # the zero frequency is kept
    assert torch.equal(ours[~zero], spectrum[~zero])  # the rest is untouched


def test_rate_per_call_is_drawn_from_k() -> None:
    # 256 x 129 frequencies: the masked fraction is within ~0.01 of the drawn rate.
    torch.manual_seed(0)
    spectrum = _spectrum((1, 256, 256))
    fractions = [
        _masked_fraction(RandomFrequencyMaskTransform(k=(0.2, 0.4))(spectrum)) for _ in range(60)
    ]
    assert min(fractions) > 0.2 - 0.01 and max(fractions) < 0.4 + 0.01
    # Uniform rate: the fractions spread over the interval (mean 0.3, std 0.058).
    assert abs(np.mean(fractions) - 0.3) < 4 * 0.058 / 60**0.5
    assert np.std(fractions) > 0.04
    fixed = [
        _masked_fraction(RandomFrequencyMaskTransform(k=(0.7, 0.7))(spectrum)) for _ in range(5)
    ]
    assert all(abs(f - 0.7) < 0.01 for f in fixed)


def test_distribution_matches_lightly() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    spectrum = _spectrum((1, 64, 64))
    n = 200
    ours = [_masked_fraction(RandomFrequencyMaskTransform()(spectrum)) for _ in range(n)]
    theirs = [_masked_fraction(LightlyRandomFrequencyMaskTransform()(spectrum)) for _ in range(n)]
    # Default k = (0.01, 0.1): mean rate 0.055, standard deviation 0.026 (plus sampling).
    tolerance = 4 * 0.03 * (2 / n) ** 0.5
    assert abs(np.mean(ours) - np.mean(theirs)) < tolerance
    assert abs(np.mean(ours) - 0.055) < tolerance


def test_torch_seed_reproduces() -> None:
    spectrum = _spectrum((3, 16, 16))
    torch.manual_seed(5)
    first = RandomFrequencyMaskTransform()(spectrum)
    torch.manual_seed(5)
    assert torch.equal(RandomFrequencyMaskTransform()(spectrum), first)


@pytest.mark.parametrize("k", [(0.5, 0.2), (-0.1, 0.2), (0.2, 1.5)])
def test_bad_k(k: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match=r"k must be \(min, max\) with 0 <= min <= max <= 1"):
        RandomFrequencyMaskTransform(k=k)


def test_rate_one_keeps_only_the_zero_frequency_like_lightly() -> None:
    spectrum = _spectrum((3, 12, 10))
    ours = RandomFrequencyMaskTransform(k=(1.0, 1.0))(spectrum)
    expected = torch.zeros_like(spectrum)
    expected[:, 0, 0] = spectrum[:, 0, 0]
    assert torch.equal(ours, expected)
    # lightly agrees.
    assert torch.equal(LightlyRandomFrequencyMaskTransform(k=(1.0, 1.0))(spectrum), expected)
