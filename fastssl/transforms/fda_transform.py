"""FDA views (Kalibhat et al., 2023, https://arxiv.org/abs/2312.02205): BYOL-style views with
frequency-domain augmentations between the crop and the color augmentations."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms import v2

from fastssl.transforms.amplitude_rescale_transform import AmplitudeRescaleTransform
from fastssl.transforms.gaussian_mixture_masks_transform import GaussianMixtureMask
from fastssl.transforms.multi_view_transform import MultiViewTransform
from fastssl.transforms.phase_shift_transform import PhaseShiftTransform
from fastssl.transforms.random_frequency_mask_transform import RandomFrequencyMaskTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec

# Arguments of the FDA view transforms that configure the crop or the frequency stage; the
# rest go to the ViewSpec of the flips and color augmentations.
_NOT_VIEW_SPEC = (
    "input_size",
    "min_scale",
    "ampl_rescale_range",
    "ampl_rescale_prob",
    "phase_shift_range",
    "phase_shift_prob",
    "rand_freq_mask_range",
    "rand_freq_mask_prob",
    "gmm_num_gaussians",
    "gmm_std_range",
    "gmm_prob",
)


class _FrequencyAugmentations:
    """rfft2 -> each spectrum transform with its probability -> irfft2, on an image tensor.

    The probabilities are drawn first: when no transform fires the image is returned
    untouched (exactly; lightly always round-trips through the FFT and 8 bits). Otherwise
    the result is clamped to [0, 1]: a rescaled or shifted spectrum can leave that range,
    and lightly's float -> PIL conversion then wraps (1.2 becomes 50 / 255), which clamping
    avoids. uint8 input gives uint8 output (rounded), float input float output.
    """

    def __init__(self, transforms: Sequence[tuple[Callable[[Tensor], Tensor], float]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor) -> Tensor:
        chosen = [t for t, p in self.transforms if p > 0 and float(torch.rand(())) < p]
        if not chosen:
            return image
        pixels = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        spectrum = torch.fft.rfft2(pixels)
        for transform in chosen:
            spectrum = transform(spectrum)
        pixels = torch.fft.irfft2(spectrum, s=pixels.shape[-2:]).clamp(0.0, 1.0)
        if image.dtype == torch.uint8:
            return (pixels * 255).round().to(torch.uint8)
        return pixels.to(image.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class _FDAViewTransform:
    """Shared implementation of ``FDAView1Transform`` and ``FDAView2Transform``."""

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        for name in ("ampl_rescale_prob", "phase_shift_prob", "rand_freq_mask_prob", "gmm_prob"):
            if not 0.0 <= arguments[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {arguments[name]!r}.")
        self.crop = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(
                    size=arguments["input_size"],
                    scale=(arguments["min_scale"], 1.0),
                    antialias=True,
                ),
                v2.ToPureTensor(),
            ]
        )
        self.frequency = _FrequencyAugmentations(
            [
                (
                    AmplitudeRescaleTransform(range=arguments["ampl_rescale_range"]),
                    arguments["ampl_rescale_prob"],
                ),
                (
                    PhaseShiftTransform(range=arguments["phase_shift_range"]),
                    arguments["phase_shift_prob"],
                ),
                (
                    RandomFrequencyMaskTransform(k=arguments["rand_freq_mask_range"]),
                    arguments["rand_freq_mask_prob"],
                ),
                (
                    GaussianMixtureMask(
                        num_gaussians=arguments["gmm_num_gaussians"],
                        std_range=arguments["gmm_std_range"],
                    ),
                    arguments["gmm_prob"],
                ),
            ]
        )
        # Flips, rotation, color jitter, grayscale, blur, solarization and normalisation,
        # in the order of lightly's FDA views (which is ViewSpec's order).
        self.augment_spec = ViewSpec.from_lightly_args(
            input_size=None, **lightly_arguments(arguments, exclude=_NOT_VIEW_SPEC)
        )
        self.transform = v2.Compose(
            [self.crop, self.frequency, self.augment_spec.build_torchvision()]
        )

    def __call__(self, image: Tensor | Image) -> Tensor:
        """Applies the view's augmentations to ``image``.

        Args:
            image: PIL image or (C, H, W) uint8 tensor.

        Returns:
            Float32 tensor (C, input_size, input_size).
        """
        transformed: Tensor = self.transform(image)
        return transformed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.crop}, {self.frequency}, {self.augment_spec})"


class FDAView1Transform(_FDAViewTransform):
    """The first FDA view: crop, frequency-domain augmentations, then BYOL's first view.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    Pipeline: random resized crop; then, each with its own probability, amplitude
    rescaling, phase shift, random frequency mask and Gaussian mixture mask of the image's
    2D FFT (see their classes); back to pixels, clamped to [0, 1]; then flips, rotation,
    color jitter, grayscale, Gaussian blur, solarization and normalisation from a ViewSpec
    without crop (``augment_spec``). Same arguments and defaults as lightly 1.6's
    ``FDAView1Transform``: blur probability 1.0, Gaussian mixture mask probability 0.2.
    Unlike lightly, pixel values pushed out of [0, 1] by the frequency stage are clamped
    (lightly wraps them around), and the FFT is skipped when no frequency augmentation fires.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    Args:
        input_size: Output size in pixels.
        min_scale: Minimum area fraction of the random resized crop.
        cj_prob: Probability that color jitter is applied.
        cj_contrast: How much to jitter contrast.
        cj_bright: How much to jitter brightness.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        random_gray_scale: Probability of conversion to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        ampl_rescale_range: (min, max) amplitude scaling factor.
        ampl_rescale_prob: Probability of amplitude rescaling.
        phase_shift_range: (min, max) phase shift in radians.
        phase_shift_prob: Probability of a phase shift.
        rand_freq_mask_range: (min, max) fraction of masked frequencies.
        rand_freq_mask_prob: Probability of random frequency masking.
        gmm_num_gaussians: Number of Gaussians of the mixture mask.
        gmm_std_range: (min, max) standard deviation of the Gaussians, in frequency bins.
        gmm_prob: Probability of the Gaussian mixture mask.
        solarization_prob: Probability of solarization.
        vf_prob: Probability of a vertical flip.
        hf_prob: Probability of a horizontal flip.
        rr_prob: Probability of a rotation.
        rr_degrees: None rotates by 90 degrees; d by an angle in [-d, d]; (lo, hi) in [lo, hi].
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> FDAView1Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.08,
        cj_prob: float = 0.8,
        cj_contrast: float = 0.4,
        cj_bright: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        cj_strength: float = 1.0,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        sigmas: tuple[float, float] = (0.1, 2),
        ampl_rescale_range: tuple[float, float] = (0.8, 1.75),
        ampl_rescale_prob: float = 0.2,
        phase_shift_range: tuple[float, float] = (0.4, 0.7),
        phase_shift_prob: float = 0.2,
        rand_freq_mask_range: tuple[float, float] = (0.01, 0.1),
        rand_freq_mask_prob: float = 0.5,
        gmm_num_gaussians: int = 20,
        gmm_std_range: tuple[float, float] = (10, 15),
        gmm_prob: float = 0.2,
        solarization_prob: float = 0.0,
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(lightly_arguments(locals()))


class FDAView2Transform(_FDAViewTransform):
    """The second FDA view: as ``FDAView1Transform`` with blur probability 0.1 and no
    Gaussian mixture mask by default (BYOL's second view, without its solarization).

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    Same arguments and defaults as lightly 1.6's ``FDAView2Transform``; they are described
    in ``FDAView1Transform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    >>> import torch
    >>> FDAView2Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.08,
        cj_prob: float = 0.8,
        cj_contrast: float = 0.4,
        cj_bright: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        cj_strength: float = 1.0,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.1,
        sigmas: tuple[float, float] = (0.1, 2),
        ampl_rescale_range: tuple[float, float] = (0.8, 1.75),
        ampl_rescale_prob: float = 0.2,
        phase_shift_range: tuple[float, float] = (0.4, 0.7),
        phase_shift_prob: float = 0.2,
        rand_freq_mask_range: tuple[float, float] = (0.01, 0.1),
        rand_freq_mask_prob: float = 0.5,
        gmm_num_gaussians: int = 20,
        gmm_std_range: tuple[float, float] = (10, 15),
        gmm_prob: float = 0.0,
        solarization_prob: float = 0.0,
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(lightly_arguments(locals()))


class FDATransform(MultiViewTransform):
    """The two FDA views of each image.

    Paper: "Disentangling the Effects of Data Augmentation and Format Transform in
    Self-Supervised Learning of Image Representations", Kalibhat et al., 2023,
    https://arxiv.org/abs/2312.02205.

    Same arguments as lightly 1.6's ``FDATransform``. The views include frequency-domain
    augmentations, which a ViewSpec cannot describe, so ``view_specs`` raises ValueError.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: [view_1_transform(image), view_2_transform(image)], float32 tensors.

    Args:
        view_1_transform: Transform of the first view; ``FDAView1Transform()`` when None.
        view_2_transform: Transform of the second view; ``FDAView2Transform()`` when None.

    >>> import torch
    >>> view_1, view_2 = FDAView1Transform(input_size=32), FDAView2Transform(input_size=32)
    >>> transform = FDATransform(view_1, view_2)
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32]
    """

    def __init__(
        self,
        view_1_transform: FDAView1Transform | None = None,
        view_2_transform: FDAView2Transform | None = None,
    ) -> None:
        view_1_transform = view_1_transform or FDAView1Transform()
        view_2_transform = view_2_transform or FDAView2Transform()
        super().__init__(transforms=[view_1_transform, view_2_transform])
