"""SwaV views (Caron et al., 2020, https://arxiv.org/abs/2006.09882): multi-crop with two
high-resolution and several low-resolution crops."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_crop_transform import MultiCropTranform
from fastssl.transforms.multi_view_transform import ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class SwaVViewTransform(ViewTransform):
    """SwaV's per-crop augmentations, without the crop (SwaV, https://arxiv.org/abs/2006.09882).

    ``MultiCropTranform`` adds the crop of each category to this view's ViewSpec. Same
    arguments and defaults as lightly 1.6's ``SwaVViewTransform`` (lightly also inserts a
    parameterless ``ColorJitter()``, which does nothing, so it is left out).

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, H, W) float32 (size unchanged).

    Args:
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        rr_prob: Probability of a rotation.
        rr_degrees: None rotates by 90 degrees; d by an angle in [-d, d]; (lo, hi) in [lo, hi].
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        random_gray_scale: Probability of conversion to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> SwaVViewTransform()(torch.zeros(3, 20, 24, dtype=torch.uint8)).shape
    torch.Size([3, 20, 24])
    """

    def __init__(
        self,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(ViewSpec.from_lightly_args(input_size=None, **lightly_arguments(locals())))


class SwaVTransform(MultiCropTranform):
    """SwaV's multi-crop views (SwaV, https://arxiv.org/abs/2006.09882).

    Same arguments and defaults as lightly 1.6's ``SwaVTransform``; the crop arguments are
    those of ``MultiCropTranform``, the others those of ``SwaVViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of sum(crop_counts) tensors, crop_counts[i] of size crop_sizes[i], float32.

    >>> import torch
    >>> transform = SwaVTransform(crop_sizes=(32, 16), crop_counts=(2, 3))
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32, 16, 16, 16]
    """

    def __init__(
        self,
        crop_sizes: tuple[int, int] = (224, 96),
        crop_counts: tuple[int, int] = (2, 6),
        crop_min_scales: tuple[float, float] = (0.14, 0.05),
        crop_max_scales: tuple[float, float] = (1.0, 0.14),
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        view = SwaVViewTransform(
            **lightly_arguments(
                locals(),
                exclude=("crop_sizes", "crop_counts", "crop_min_scales", "crop_max_scales"),
            )
        )
        super().__init__(
            crop_sizes=crop_sizes,
            crop_counts=crop_counts,
            crop_min_scales=crop_min_scales,
            crop_max_scales=crop_max_scales,
            transforms=view,
        )
