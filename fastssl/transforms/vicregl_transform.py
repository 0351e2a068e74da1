"""VICRegL views (Bardes et al., 2022, https://arxiv.org/abs/2210.01571): global and local
crops, each with the grid that locates its feature-map cells in the original image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastssl.transforms.image_grid_transform import ImageGridTransform
from fastssl.transforms.multi_view_transform import ViewTransform
from fastssl.transforms.random_crop_and_flip_with_grid import RandomResizedCropAndFlip
from fastssl.transforms.utils import IMAGENET_NORMALIZE, check_view_count, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class VICRegLViewTransform(ViewTransform):
    """The photometric part of a VICRegL view (VICRegL, https://arxiv.org/abs/2210.01571):
    color jitter, grayscale, Gaussian blur, solarization and normalisation.

    Crop and flips happen before, in ``RandomResizedCropAndFlip``, because the grid has to
    follow them; ``view_spec`` therefore has no crop (``crop_size=None``) and no flip. Same
    arguments and defaults as lightly 1.6's ``VICRegLViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, H, W) float32, same size.

    Args:
        gaussian_blur_prob: Probability of Gaussian blur.
        gaussian_blur_sigmas: (min, max) standard deviation of the blur, in pixels.
        solarize_prob: Probability of solarization.
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        random_gray_scale: Probability of conversion to grayscale.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> VICRegLViewTransform()(torch.zeros(3, 20, 24, dtype=torch.uint8)).shape
    torch.Size([3, 20, 24])
    """

    def __init__(
        self,
        gaussian_blur_prob: float = 0.5,
        gaussian_blur_sigmas: tuple[float, float] = (0.1, 2),
        solarize_prob: float = 0.0,
        cj_prob: float = 1.0,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        arguments = lightly_arguments(
            locals(),
            rename={
                "gaussian_blur_prob": "gaussian_blur",
                "gaussian_blur_sigmas": "sigmas",
                "solarize_prob": "solarization_prob",
            },
        )
        super().__init__(ViewSpec.from_lightly_args(input_size=None, hf_prob=0.0, **arguments))


class VICRegLTransform(ImageGridTransform):
    """VICRegL's views and grids (VICRegL: Self-Supervised Learning of Local Visual Features,
    Bardes, Ponce, LeCun, 2022, https://arxiv.org/abs/2210.01571).

    Each view is a random resized crop with flips (``RandomResizedCropAndFlip``, which also
    gives the grid) followed by a ``VICRegLViewTransform``. Same arguments and defaults as
    lightly 1.6's ``VICRegLTransform``, with two differences that make every argument reach
    every view: lightly 1.6 builds the local crops without ``vf_prob`` (so they are flipped
    upside down with probability 0.5 whatever ``vf_prob`` says) and their color jitter
    without ``cj_bright``/``cj_contrast``/``cj_sat``/``cj_hue`` (defaults used). Here the
    local views use ``vf_prob`` and the given strengths; with the default arguments that means
    no vertical flips, as in VICReg/VICRegL.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 * (n_global_views + n_local_views) tensors: n_global_views float32 views
    (C, global_crop_size, global_crop_size), n_local_views views (C, local_crop_size,
    local_crop_size), then their float32 grids, (global_grid_size, global_grid_size, 2) for
    the global views and (local_grid_size, local_grid_size, 2) for the local ones (see
    ``RandomResizedCropAndFlip.location_to_NxN_grid``).

    Args:
        global_crop_size: Size of the global views.
        local_crop_size: Size of the local views.
        n_global_views: Number of global views.
        n_local_views: Number of local views (VICRegL recommends 0 for ResNets).
        global_crop_scale: (min, max) area fraction of the global crops.
        local_crop_scale: (min, max) area fraction of the local crops.
        global_grid_size: Grid size of the global views (their feature-map size).
        local_grid_size: Grid size of the local views.
        global_gaussian_blur_prob: Blur probability of the global views.
        local_gaussian_blur_prob: Blur probability of the local views.
        global_gaussian_blur_sigmas: (min, max) blur standard deviation, global views.
        local_gaussian_blur_sigmas: (min, max) blur standard deviation, local views.
        global_solarize_prob: Solarization probability of the global views.
        local_solarize_prob: Solarization probability of the local views.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue, random_gray_scale,
        normalize: As in ``VICRegLViewTransform``.

    >>> import torch
    >>> transform = VICRegLTransform(global_crop_size=32, local_crop_size=16, n_local_views=1)
    >>> [tuple(o.shape) for o in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [(3, 32, 32), (3, 32, 32), (3, 16, 16), (7, 7, 2), (7, 7, 2), (3, 3, 2)]
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        local_crop_size: int = 96,
        n_global_views: int = 2,
        n_local_views: int = 6,
        global_crop_scale: tuple[float, float] = (0.2, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.2),
        global_grid_size: int = 7,
        local_grid_size: int = 3,
        global_gaussian_blur_prob: float = 0.5,
        local_gaussian_blur_prob: float = 0.1,
        global_gaussian_blur_sigmas: tuple[float, float] = (0.1, 2),
        local_gaussian_blur_sigmas: tuple[float, float] = (0.1, 2),
        global_solarize_prob: float = 0.0,
        local_solarize_prob: float = 0.2,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        cj_prob: float = 1.0,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        check_view_count("n_global_views", n_global_views)
        check_view_count("n_local_views", n_local_views)
        # Shared by the global and the local views.
        color: dict[str, Any] = {
            "cj_prob": cj_prob,
            "cj_strength": cj_strength,
            "cj_bright": cj_bright,
            "cj_contrast": cj_contrast,
            "cj_sat": cj_sat,
            "cj_hue": cj_hue,
            "random_gray_scale": random_gray_scale,
            "normalize": normalize,
        }
        global_pair = (
            RandomResizedCropAndFlip(
                grid_size=global_grid_size,
                crop_size=global_crop_size,
                crop_min_scale=global_crop_scale[0],
                crop_max_scale=global_crop_scale[1],
                hf_prob=hf_prob,
                vf_prob=vf_prob,
            ),
            VICRegLViewTransform(
                gaussian_blur_prob=global_gaussian_blur_prob,
                gaussian_blur_sigmas=global_gaussian_blur_sigmas,
                solarize_prob=global_solarize_prob,
                **color,
            ),
        )
        local_pair = (
            RandomResizedCropAndFlip(
                grid_size=local_grid_size,
                crop_size=local_crop_size,
                crop_min_scale=local_crop_scale[0],
                crop_max_scale=local_crop_scale[1],
                hf_prob=hf_prob,
                vf_prob=vf_prob,
            ),
            VICRegLViewTransform(
                gaussian_blur_prob=local_gaussian_blur_prob,
                gaussian_blur_sigmas=local_gaussian_blur_sigmas,
                solarize_prob=local_solarize_prob,
                **color,
            ),
        )
        super().__init__([global_pair] * n_global_views + [local_pair] * n_local_views)
