"""MoCo views: MoCo v1 (He et al., 2019, https://arxiv.org/abs/1911.05722) and MoCo v2
(Chen et al., 2020, https://arxiv.org/abs/2003.04297)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.simclr_transform import SimCLRTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments


class MoCoV1Transform(SimCLRTransform):
    """Two MoCo v1 views (MoCo, https://arxiv.org/abs/1911.05722): SimCLR's pipeline with
    weaker color jitter, ``min_scale=0.2`` and no blur.

    Same arguments and defaults as lightly 1.6's ``MoCoV1Transform``; see
    ``SimCLRViewTransform`` for their meaning.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> views = MoCoV1Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views)
    2
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.4,
        min_scale: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.0,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(**lightly_arguments(locals()))


class MoCoV2Transform(SimCLRTransform):
    """Two MoCo v2 views (MoCo v2, https://arxiv.org/abs/2003.04297): MoCo v1's pipeline plus
    SimCLR's Gaussian blur and a weaker hue jitter.

    Same arguments and defaults as lightly 1.6's ``MoCoV2Transform``; see
    ``SimCLRViewTransform`` for their meaning.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> views = MoCoV2Transform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views)
    2
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        min_scale: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(**lightly_arguments(locals()))
