from __future__ import annotations

import math

import pytest
import torch
from lightly.transforms.phase_shift_transform import (
    PhaseShiftTransform as LightlyPhaseShiftTransform,
)

from fastssl.transforms.phase_shift_transform import PhaseShiftTransform
from tests.transforms._images import binomial_tolerance


def _spectrum(shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.fft.rfft2(torch.rand(shape, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 9, 6)])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"range": (0.1, 2.0)},
        {"include_negatives": True},
        {"include_negatives": True, "sign_probability": 0.2, "range": (1.0, 3.0)},
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeded_values_equal_lightly(
    shape: tuple[int, int, int], kwargs: dict[str, object], seed: int
) -> None:
    # Both draw theta (and its sign) from torch's generator in the same way.
    spectrum = _spectrum(shape)
    torch.manual_seed(seed)
    ours = PhaseShiftTransform(**kwargs)(spectrum)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    theirs = LightlyPhaseShiftTransform(**kwargs)(spectrum)  # type: ignore[arg-type]
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.complex64
    scale = spectrum.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def _theta(out: torch.Tensor, spectrum: torch.Tensor) -> float:
    # The DC term of an image with positive pixels is real and positive: its phase is theta.
    return torch.angle(out[0, 0, 0] / spectrum[0, 0, 0]).item()


def test_same_shift_everywhere_amplitude_kept() -> None:
    torch.manual_seed(0)
    spectrum = _spectrum((3, 10, 8))
    out = PhaseShiftTransform(range=(0.4, 0.7))(spectrum)
    theta = _theta(out, spectrum)
    assert 0.4 <= theta <= 0.7
    torch.testing.assert_close(out.abs(), spectrum.abs(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, spectrum * complex(math.cos(theta), math.sin(theta)))


def test_sign_probability() -> None:
    torch.manual_seed(0)
    spectrum = _spectrum((1, 4, 4))
    transform = PhaseShiftTransform(range=(0.5, 1.0), include_negatives=True, sign_probability=0.3)
    n = 1000
    thetas = [_theta(transform(spectrum), spectrum) for _ in range(n)]
    assert all(0.5 - 1e-5 <= abs(t) <= 1.0 + 1e-5 for t in thetas)
    positive = sum(t > 0 for t in thetas) / n
    assert abs(positive - 0.3) <= binomial_tolerance(0.3, n)
    unsigned = PhaseShiftTransform(range=(0.5, 1.0))
    assert all(_theta(unsigned(spectrum), spectrum) > 0 for _ in range(100))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="range must be"):
        PhaseShiftTransform(range=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"sign_probability must be in \[0, 1\], got 1.5"):
        PhaseShiftTransform(sign_probability=1.5)
