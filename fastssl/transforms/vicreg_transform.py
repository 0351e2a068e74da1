"""VICReg views (Bardes, Ponce & LeCun, 2021, https://arxiv.org/abs/2105.04906)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class VICRegViewTransform(ViewTransform):
    """One VICReg view (VICReg, https://arxiv.org/abs/2105.04906): SimCLR's pipeline with
    ``cj_strength=0.5`` and solarization.

    Same arguments and defaults as lightly 1.6's ``VICRegViewTransform`` (note its blur sigmas
    default to (0.2, 2) while ``VICRegTransform``'s default to (0.1, 2), as in lightly).
    Solarization runs after the blur, the order of the VICReg paper's code; lightly runs it
    before. ``solarize_prob`` is the probability of solarization; the other arguments are
    described in ``fastssl.transforms.simclr_transform.SimCLRViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    >>> import torch
    >>> VICRegViewTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        solarize_prob: float = 0.1,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.2, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        super().__init__(
            ViewSpec.from_lightly_args(
                **lightly_arguments(locals(), rename={"solarize_prob": "solarization_prob"})
            )
        )


class VICRegTransform(MultiViewTransform):
    """Two VICReg views of each image (VICReg, https://arxiv.org/abs/2105.04906).

    Same arguments and defaults as lightly 1.6's ``VICRegTransform``.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> len(VICRegTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)))
    2
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        solarize_prob: float = 0.1,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        view = VICRegViewTransform(**lightly_arguments(locals()))
        super().__init__(transforms=[view, view])
