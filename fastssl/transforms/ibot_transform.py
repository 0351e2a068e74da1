"""iBOT views (Zhou et al., 2021, https://arxiv.org/abs/2111.07832).

iBOT trains on DINO's multi-crop augmentation (two global crops, several local crops, bicubic
resizing; https://github.com/bytedance/ibot/blob/main/main_ibot.py) with other crop scales and
more local crops, so the classes here are DINO's with iBOT's arguments and defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.dino_transform import DINOTransform, DINOViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments


class IBOTViewTransform(DINOViewTransform):
    """One iBOT view: bicubic random resized crop, horizontal flip, color jitter, grayscale,
    Gaussian blur, solarization, normalisation (iBOT, https://arxiv.org/abs/2111.07832).

    Same arguments and defaults as lightly 1.6's ``IBOTViewTransform`` (a
    ``DINOViewTransform`` without vertical flips and rotations); ``view_spec`` holds them.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, crop_size, crop_size) float32.

    Args:
        crop_size: Output size of the random resized crop (bicubic).
        crop_scale: (min, max) area fraction of the crop.
        hf_prob: Probability of a horizontal flip.
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
    >>> IBOTViewTransform(crop_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        hf_prob: float = 0.5,
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
        super().__init__(vf_prob=0.0, rr_prob=0.0, **lightly_arguments(locals()))


class IBOTTransform(DINOTransform):
    """iBOT's multi-crop views (iBOT: Image BERT Pre-Training with Online Tokenizer, Zhou, Wei,
    Wang, Shen, Xie, Yuille, Kong, 2021, https://arxiv.org/abs/2111.07832).

    Views, in order: global view 0 (blur prob ``gaussian_blur[0]``, no solarization), global
    view 1 (blur prob ``gaussian_blur[1]``, solarization prob ``solarization_prob``), then
    ``n_local_views`` local views (blur prob ``gaussian_blur[2]``, no solarization); no
    vertical flips or rotations. Same arguments and defaults as lightly 1.6's
    ``IBOTTransform``; as in ``DINOTransform``, every view uses ``cj_strength`` (lightly 1.6
    drops it for global view 1, which then always uses 0.5). The views are the
    ``DINOViewTransform``s that ``IBOTViewTransform`` builds too; ``view_specs`` lists them.

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
        hf_prob, cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue,
        random_gray_scale, sigmas, normalize: As in ``IBOTViewTransform``.

    >>> import torch
    >>> transform = IBOTTransform(global_crop_size=32, local_crop_size=16, n_local_views=2)
    >>> [v.shape[-1] for v in transform(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [32, 32, 16, 16]
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        global_crop_scale: tuple[float, float] = (0.25, 1.0),
        local_crop_size: int = 96,
        local_crop_scale: tuple[float, float] = (0.05, 0.25),
        n_local_views: int = 10,
        hf_prob: float = 0.5,
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
        super().__init__(vf_prob=0.0, rr_prob=0.0, **lightly_arguments(locals()))
