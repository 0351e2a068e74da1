"""SimSiam views (Chen & He, 2020, https://arxiv.org/abs/2011.10566)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class SimSiamViewTransform(ViewTransform):
    """One SimSiam view (SimSiam, https://arxiv.org/abs/2011.10566): MoCo v2's augmentations.

    Same arguments and defaults as lightly 1.6's ``SimSiamViewTransform``; see
    ``fastssl.transforms.simclr_transform.SimCLRViewTransform`` for their meaning.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    >>> import torch
    >>> SimSiamViewTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
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
        super().__init__(ViewSpec.from_lightly_args(**lightly_arguments(locals())))


class SimSiamTransform(MultiViewTransform):
    """Two SimSiam views of each image (SimSiam, https://arxiv.org/abs/2011.10566).

    Same arguments and defaults as lightly 1.6's ``SimSiamTransform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> len(SimSiamTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)))
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
        view = SimSiamViewTransform(**lightly_arguments(locals()))
        super().__init__(transforms=[view, view])
