"""MSN views (Assran et al., 2022, https://arxiv.org/abs/2204.07141): a few large "random"
views and many small "focal" views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import (
    IMAGENET_NORMALIZE,
    check_view_count,
    cropped_view_arguments,
    lightly_arguments,
)
from fastssl.transforms.view_spec import ViewSpec


class MSNViewTransform(ViewTransform):
    """One MSN view (MSN, https://arxiv.org/abs/2204.07141).

    Same arguments and defaults as lightly 1.6's ``MSNViewTransform``; ``normalize=None``
    is accepted too (no normalisation).

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, crop_size, crop_size) float32.

    Args:
        crop_size: Output size of the random resized crop.
        crop_scale: (min, max) area fraction of the crop.
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        random_gray_scale: Probability of conversion to grayscale.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        normalize: Dict with "mean" and "std".

    >>> import torch
    >>> MSNViewTransform(crop_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        random_gray_scale: float = 0.2,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(ViewSpec.from_lightly_args(**cropped_view_arguments(locals())))


class MSNTransform(MultiViewTransform):
    """MSN's views: ``random_views`` large views then ``focal_views`` small ones
    (MSN, https://arxiv.org/abs/2204.07141).

    Same arguments and defaults as lightly 1.6's ``MSNTransform``. The focal views use the
    given color-jitter strengths (lightly 1.6 passes only ``cj_prob`` and ``cj_strength`` to
    them, so they silently keep the default strengths).

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of random_views tensors (C, random_size, random_size) followed by
    focal_views tensors (C, focal_size, focal_size), float32.

    Args:
        random_size: Size of the random views.
        focal_size: Size of the focal views.
        random_views: Number of random views.
        focal_views: Number of focal views.
        random_crop_scale: (min, max) area fraction of the random views.
        focal_crop_scale: (min, max) area fraction of the focal views.
        cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue, gaussian_blur, sigmas,
        random_gray_scale, hf_prob, vf_prob, normalize: As in ``MSNViewTransform``.

    >>> import torch
    >>> transform = MSNTransform(random_size=32, focal_size=16, focal_views=3)
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32, 16, 16, 16]
    """

    def __init__(
        self,
        random_size: int = 224,
        focal_size: int = 96,
        random_views: int = 2,
        focal_views: int = 10,
        random_crop_scale: tuple[float, float] = (0.3, 1.0),
        focal_crop_scale: tuple[float, float] = (0.05, 0.3),
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        random_gray_scale: float = 0.2,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        # Forwarded unchanged to both kinds of view (before the loop below binds more locals).
        shared = lightly_arguments(
            locals(),
            exclude=(
                "random_size",
                "focal_size",
                "random_views",
                "focal_views",
                "random_crop_scale",
                "focal_crop_scale",
            ),
        )
        check_view_count("random_views", random_views)
        check_view_count("focal_views", focal_views)
        random_view = MSNViewTransform(
            crop_size=random_size,
            crop_scale=random_crop_scale,
            **shared,
        )
        focal_view = MSNViewTransform(
            crop_size=focal_size,
            crop_scale=focal_crop_scale,
            **shared,
        )
        super().__init__([random_view] * random_views + [focal_view] * focal_views)
