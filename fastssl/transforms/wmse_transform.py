"""W-MSE views (Ermolov et al., 2021, https://arxiv.org/abs/2007.06346)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE
from fastssl.transforms.view_spec import ViewSpec


class WMSETransform(MultiViewTransform):
    """``num_samples`` augmented views per image for W-MSE.

    Paper: "Whitening for Self-Supervised Representation Learning", Ermolov, Siarohin,
    Sangineto & Sebe, ICML 2021, https://arxiv.org/abs/2007.06346.

    Every view: color jitter, grayscale, bicubic random resized crop, horizontal flip,
    Gaussian blur, normalisation. Same arguments and defaults as lightly 1.6's
    ``WMSETransform`` (there is no ``cj_strength``); ``view_specs`` lists the
    ``num_samples`` (identical) ViewSpecs.

    The operations run in ViewSpec's order, crop first: lightly jitters the full image
    before cropping. Brightness, saturation, hue and grayscale act per pixel, so only the
    contrast jitter's reference (the mean gray level of the crop instead of the whole
    image) differs, and jittering the crop is cheaper. ``normalize=None`` skips the
    normalisation (lightly requires a dict).

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of num_samples tensors of shape (C, input_size, input_size), float32.

    Args:
        num_samples: Number of views, >= 1; the same as ``num_samples`` of ``WMSELoss``.
        input_size: Output size in pixels.
        cj_prob: Probability that color jitter is applied.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        min_scale: Minimum area fraction of the random resized crop.
        random_gray_scale: Probability of conversion to grayscale.
        hf_prob: Probability of a horizontal flip.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    Raises:
        ValueError: If ``num_samples`` < 1.

    >>> import torch
    >>> views = WMSETransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (2, (3, 32, 32))
    """

    def __init__(
        self,
        num_samples: int = 2,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        min_scale: float = 0.2,
        random_gray_scale: float = 0.1,
        hf_prob: float = 0.5,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2.0),
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}.")
        spec = ViewSpec.from_lightly_args(
            input_size=input_size,
            min_scale=min_scale,
            interpolation="bicubic",
            cj_prob=cj_prob,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            random_gray_scale=random_gray_scale,
            gaussian_blur=gaussian_blur,
            sigmas=sigmas,
            hf_prob=hf_prob,
            normalize=normalize,
        )
        super().__init__(transforms=[ViewTransform(spec)] * num_samples)
