"""Random rescaling of the Fourier amplitudes, a frequency-domain augmentation of FDA
(Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205)."""

from __future__ import annotations

import torch
from torch import Tensor


class AmplitudeRescaleTransform:
    """Multiplies the amplitude of every frequency by a random factor, keeping the phase.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    For every frequency (u, v) a factor p(u, v) ~ U[range[0], range[1]) is drawn, shared by
    all channels. Scaling a complex number's amplitude by p > 0 at fixed phase is the
    same as multiplying it by p, so the spectrum is simply multiplied by p (lightly splits
    it into amplitude and phase and back; same values). Same interface, and the same draws
    from ``torch``'s generator, as lightly 1.6's ``AmplitudeRescaleTransform``.

    Input: complex spectrum (C, H, W') as returned by ``RFFT2DTransform``.
    Output: complex spectrum of the same shape.

    Args:
        range: (min, max) of the scaling factor, 0 <= min <= max.

    Raises:
        ValueError: If ``range`` is not a (min, max) pair with 0 <= min <= max.

    >>> import torch
    >>> spectrum = torch.fft.rfft2(torch.rand(3, 8, 8))
    >>> scaled = AmplitudeRescaleTransform(range=(2.0, 2.0))(spectrum)
    >>> torch.allclose(scaled, 2 * spectrum)
    True
    """

    def __init__(self, range: tuple[float, float] = (0.8, 1.75)) -> None:
        if len(range) != 2 or not 0.0 <= range[0] <= range[1]:
            raise ValueError(f"range must be (min, max) with 0 <= min <= max, got {range!r}.")
        self.range = (float(range[0]), float(range[1]))

    def __call__(self, freq_image: Tensor) -> Tensor:
        """Rescales the amplitudes of ``freq_image`` (shape (C, H, W')) by random factors."""
        low, high = self.range
        # One factor per frequency, broadcast over the channels. Drawn like
        # torch.distributions.Uniform(low, high).sample(), so seeds reproduce lightly.
        uniform = torch.rand(freq_image.shape[-2:], dtype=freq_image.real.dtype)
        factor = (low + uniform * (high - low)).to(freq_image.device)
        return freq_image * factor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(range={self.range})"
