"""DINO views (Caron et al., 2021, https://arxiv.org/abs/2104.14294): two global crops and
``n_local_views`` small local crops (multi-crop), bicubic resizing."""

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


class DINOViewTransform(ViewTransform):
    """One DINO view (DINO, https://arxiv.org/abs/2104.14294).

    Same arguments and defaults as lightly 1.6's ``DINOViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, crop_size, crop_size) float32.

    Args:
        crop_size: Output size of the random resized crop (bicubic).
        crop_scale: (min, max) area fraction of the crop.
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
        solarization_prob: Probability of solarization.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> DINOViewTransform(crop_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        hf_prob: float = 0.5,
        vf_prob: float = 0,
        rr_prob: float = 0,
        rr_degrees: float | tuple[float, float] | None = None,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        sigmas: tuple[float, float] = (0.1, 2),
        solarization_prob: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(
            ViewSpec.from_lightly_args(**cropped_view_arguments(locals()), interpolation="bicubic")
        )


class DINOTransform(MultiViewTransform):
    """DINO's multi-crop views (DINO, https://arxiv.org/abs/2104.14294).

    Views, in order: global view 0 (blur prob ``gaussian_blur[0]``, no solarization), global
    view 1 (blur prob ``gaussian_blur[1]``, solarization prob ``solarization_prob``), then
    ``n_local_views`` local views (blur prob ``gaussian_blur[2]``, no solarization). Same
    arguments and defaults as lightly 1.6's ``DINOTransform``; every view uses ``cj_strength``
    (lightly 1.6 drops it for global view 1, which then always uses 0.5).

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors (C, global_crop_size, global_crop_size) followed by
    n_local_views tensors (C, local_crop_size, local_crop_size), float32.

    Args:
        global_crop_size: Size of the two global crops.
        global_crop_scale: (min, max) area fraction of the global crops.
        local_crop_size: Size of the local crops.
        local_crop_scale: (min, max) area fraction of the local crops.
        n_local_views: Number of local crops.
        gaussian_blur: Blur probabilities of (global view 0, global view 1, local views).
        solarization_prob: Solarization probability of global view 1.
        hf_prob, vf_prob, rr_prob, rr_degrees, cj_prob, cj_strength, cj_bright, cj_contrast,
        cj_sat, cj_hue, random_gray_scale, sigmas, normalize: As in ``DINOViewTransform``.

    >>> import torch
    >>> transform = DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=2)
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32, 16, 16]
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_size: int = 96,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        n_local_views: int = 6,
        hf_prob: float = 0.5,
        vf_prob: float = 0,
        rr_prob: float = 0,
        rr_degrees: float | tuple[float, float] | None = None,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
        sigmas: tuple[float, float] = (0.1, 2),
        solarization_prob: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        # Forwarded unchanged to every view; the rest differ between global and local views.
        shared = lightly_arguments(
            locals(),
            exclude=(
                "global_crop_size",
                "global_crop_scale",
                "local_crop_size",
                "local_crop_scale",
                "n_local_views",
                "gaussian_blur",
                "solarization_prob",
            ),
        )
        check_view_count("n_local_views", n_local_views)
        if len(gaussian_blur) != 3:
            raise ValueError(
                "gaussian_blur must hold 3 probabilities (global view 0, global view 1, "
                f"local views), got {gaussian_blur!r}."
            )
        global_0 = DINOViewTransform(
            crop_size=global_crop_size,
            crop_scale=global_crop_scale,
            gaussian_blur=gaussian_blur[0],
            solarization_prob=0.0,
            **shared,
        )
        global_1 = DINOViewTransform(
            crop_size=global_crop_size,
            crop_scale=global_crop_scale,
            gaussian_blur=gaussian_blur[1],
            solarization_prob=solarization_prob,
            **shared,
        )
        local = DINOViewTransform(
            crop_size=local_crop_size,
            crop_scale=local_crop_scale,
            gaussian_blur=gaussian_blur[2],
            solarization_prob=0.0,
            **shared,
        )
        super().__init__([global_0, global_1] + [local] * n_local_views)
