"""MMCR views (Yerxa et al., 2023, https://arxiv.org/abs/2303.03307): ``k`` views of each
image, each a first BYOL view (https://arxiv.org/abs/2006.07733)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.byol_transform import BYOLView1Transform
from fastssl.transforms.multi_view_transform import MultiViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments


class MMCRTransform(MultiViewTransform):
    """``k`` augmented views per image for MMCR.

    Paper: "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity
    Representations", Yerxa, Kuang, Simoncelli & Chung, 2023, https://arxiv.org/abs/2303.03307.
    Every view uses BYOL's first-view augmentations (``BYOLView1Transform``: random resized
    crop, flips, optional rotation, color jitter, grayscale, Gaussian blur with probability 1,
    optional solarization, ImageNet normalisation). The MMCR loss takes the nuclear norm of
    the mean embedding over these views, so more views give a better estimate of each
    image's manifold centroid.

    Same arguments and defaults as lightly 1.6's ``MMCRTransform``; ``view_specs`` lists the
    ``k`` (identical) ViewSpecs. The other arguments are described in
    ``fastssl.transforms.byol_transform.BYOLView1Transform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of k tensors of shape (C, input_size, input_size), float32.

    Args:
        k: Number of views, >= 1.

    Raises:
        ValueError: If ``k`` < 1.

    >>> import torch
    >>> views = MMCRTransform(k=3, input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (3, (3, 32, 32))
    """

    def __init__(
        self,
        k: int = 8,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        solarization_prob: float = 0.0,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        view = BYOLView1Transform(**lightly_arguments(locals(), exclude=("k",)))
        super().__init__(transforms=[view] * k)
