"""SMoG views (Pang et al., 2022, https://arxiv.org/abs/2207.06167): multi-crop with large
and small crops, BYOL-style color augmentations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, check_view_count, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec

# Per-category arguments of SMoGTransform: one value per crop category.
_PER_CROP = (
    "crop_counts",
    "crop_min_scales",
    "crop_max_scales",
    "gaussian_blur_probs",
    "solarize_probs",
)


class SmoGViewTransform(ViewTransform):
    """One SMoG view: random resized crop, horizontal flip, color jitter, grayscale,
    Gaussian blur, solarization, ImageNet normalisation.

    Paper: "Unsupervised Visual Representation Learning by Synchronous Momentum Grouping",
    Pang, Zhang, Li, Cai & Lu, ECCV 2022, https://arxiv.org/abs/2207.06167.

    Same arguments and defaults as lightly 1.6's ``SmoGViewTransform`` (the name keeps
    lightly's spelling); ``view_spec`` holds them as a ViewSpec.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, crop_size, crop_size) float32.

    Args:
        crop_size: Output size of the random resized crop.
        crop_min_scale: Minimum area fraction of the crop.
        crop_max_scale: Maximum area fraction of the crop.
        gaussian_blur_prob: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        solarize_prob: Probability of solarization.
        hf_prob: Probability of a horizontal flip.
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        random_gray_scale: Probability of conversion to grayscale.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> SmoGViewTransform(crop_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_min_scale: float = 0.2,
        crop_max_scale: float = 1.0,
        gaussian_blur_prob: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        solarize_prob: float = 0.0,
        hf_prob: float = 0.5,
        cj_prob: float = 1.0,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(
            ViewSpec.from_lightly_args(
                **lightly_arguments(
                    locals(),
                    rename={
                        "crop_size": "input_size",
                        "crop_min_scale": "min_scale",
                        "crop_max_scale": "max_scale",
                        "gaussian_blur_prob": "gaussian_blur",
                        "solarize_prob": "solarization_prob",
                    },
                )
            )
        )


class SMoGTransform(MultiViewTransform):
    """SMoG's multi-crop views: ``crop_counts[i]`` views of size ``crop_sizes[i]`` per crop
    category, in category order.

    Paper: "Unsupervised Visual Representation Learning by Synchronous Momentum Grouping",
    Pang, Zhang, Li, Cai & Lu, ECCV 2022, https://arxiv.org/abs/2207.06167.

    Same arguments and defaults as lightly 1.6's ``SMoGTransform``; ``view_specs`` lists one
    ViewSpec per view. The per-category arguments (``crop_counts``, ``crop_min_scales``,
    ``crop_max_scales``, ``gaussian_blur_probs``, ``solarize_probs``) hold one value per entry
    of ``crop_sizes``; the others are shared and described in ``SmoGViewTransform``
    (``gaussian_blur_sigmas`` is its ``sigmas``).

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of sum(crop_counts) tensors, crop_counts[i] of shape
    (C, crop_sizes[i], crop_sizes[i]), float32.

    Raises:
        ValueError: If a per-category argument's length differs from ``crop_sizes``', or a
            count is not an int >= 0.

    >>> import torch
    >>> transform = SMoGTransform(crop_sizes=(32, 16), crop_counts=(1, 2))
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 16, 16]
    """

    def __init__(
        self,
        crop_sizes: tuple[int, int] = (224, 96),
        crop_counts: tuple[int, int] = (4, 4),
        crop_min_scales: tuple[float, float] = (0.2, 0.05),
        crop_max_scales: tuple[float, float] = (1.0, 0.2),
        gaussian_blur_probs: tuple[float, float] = (0.5, 0.1),
        gaussian_blur_sigmas: tuple[float, float] = (0.1, 2),
        solarize_probs: tuple[float, float] = (0.0, 0.2),
        hf_prob: float = 0.5,
        cj_prob: float = 1.0,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        arguments = locals()
        shared = lightly_arguments(
            arguments,
            exclude=("crop_sizes", *_PER_CROP),
            rename={"gaussian_blur_sigmas": "sigmas"},
        )
        for name in _PER_CROP:
            if len(arguments[name]) != len(crop_sizes):
                raise ValueError(
                    f"{name} must hold one value per crop size ({len(crop_sizes)}), "
                    f"got {arguments[name]!r}."
                )
        views: list[ViewTransform] = []
        for size, count, low, high, blur, solarize in zip(
            crop_sizes,
            crop_counts,
            crop_min_scales,
            crop_max_scales,
            gaussian_blur_probs,
            solarize_probs,
            strict=True,
        ):
            check_view_count("crop_counts", count)
            view = SmoGViewTransform(
                crop_size=size,
                crop_min_scale=low,
                crop_max_scale=high,
                gaussian_blur_prob=blur,
                solarize_prob=solarize,
                **shared,
            )
            views.extend([view] * count)
        super().__init__(views)
