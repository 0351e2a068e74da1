"""Random phase shift of the Fourier spectrum, a frequency-domain augmentation of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class PhaseShiftTransform:
    """Adds one random angle theta to the phase of every frequency, keeping the amplitudes.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    theta ~ U[range[0], range[1]) (radians); with ``include_negatives`` it is kept with
    probability ``sign_probability`` and negated otherwise. Shifting every phase by theta
    is a multiplication by exp(i theta), which is how it is computed (lightly splits the
    spectrum into amplitude and phase and back; same values). Same interface, and the same
    draws from ``torch``'s generator, as lightly 1.6's ``PhaseShiftTransform``.

    Input: complex spectrum (C, H, W') as returned by ``RFFT2DTransform``.
    Output: complex spectrum of the same shape.

    Args:
        range: (min, max) of |theta| in radians, min <= max.
        include_negatives: Whether theta is negated with probability 1 - sign_probability.
        sign_probability: Probability that theta keeps its positive sign, in [0, 1].

    Raises:
        ValueError: If ``range`` is not a (min, max) pair or ``sign_probability`` is not
            in [0, 1].

    >>> import math, torch
    >>> spectrum = torch.fft.rfft2(torch.rand(1, 4, 4))
    >>> shifted = PhaseShiftTransform(range=(math.pi, math.pi))(spectrum)
    >>> torch.allclose(shifted, -spectrum, atol=1e-5)
    True
    """

    def __init__(
        self,
        range: tuple[float, float] = (0.4, 0.7),
        include_negatives: bool = False,
        sign_probability: float = 0.5,
    ) -> None:
        if len(range) != 2 or not range[0] <= range[1]:
            raise ValueError(f"range must be (min, max) with min <= max, got {range!r}.")
        if not 0.0 <= sign_probability <= 1.0:
            raise ValueError(f"sign_probability must be in [0, 1], got {sign_probability!r}.")
        self.range = (float(range[0]), float(range[1]))
        self.include_negatives = include_negatives
        self.sign_probability = sign_probability

    def __call__(self, freq_image: Tensor) -> Tensor:
        """Shifts the phase of every frequency of ``freq_image`` by the same random angle."""
        low, high = self.range
        # Drawn like torch.distributions' Uniform and Bernoulli, so seeds reproduce lightly.
        theta = low + torch.rand(()) * (high - low)
        if self.include_negatives:
            positive = torch.bernoulli(torch.tensor(self.sign_probability))
            theta = torch.where(positive == 1, theta, -theta)
        rotation = torch.polar(torch.ones_like(theta), theta)
        return freq_image * rotation.to(device=freq_image.device, dtype=freq_image.dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(range={self.range}, "
            f"include_negatives={self.include_negatives}, "
            f"sign_probability={self.sign_probability})"
        )
