"""SimCLR views: SimCLR v1 (Chen et al., 2020, https://arxiv.org/abs/2002.05709) and
SimCLR v2 (Chen et al., 2020, https://arxiv.org/abs/2006.10029) use the same augmentations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments
from fastssl.transforms.view_spec import ViewSpec


class SimCLRViewTransform(ViewTransform):
    """One SimCLR view: random resized crop, flips, optional rotation, color jitter,
    grayscale, Gaussian blur, ImageNet normalisation (SimCLR, https://arxiv.org/abs/2002.05709).

    Same arguments and defaults as lightly 1.6's ``SimCLRViewTransform``; ``view_spec`` holds
    them as a ViewSpec.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, input_size, input_size) float32.

    Args:
        input_size: Output size in pixels.
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue (0.5 for CIFAR).
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        min_scale: Minimum area fraction of the random resized crop.
        random_gray_scale: Probability of conversion to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        vf_prob: Probability of a vertical flip.
        hf_prob: Probability of a horizontal flip.
        rr_prob: Probability of a rotation.
        rr_degrees: None rotates by 90 degrees; d by an angle in [-d, d]; (lo, hi) in [lo, hi].
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> view = SimCLRViewTransform(input_size=32)
    >>> view(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
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


class SimCLRTransform(MultiViewTransform):
    """Two SimCLR views of each image (SimCLR v1, https://arxiv.org/abs/2002.05709;
    SimCLR v2, https://arxiv.org/abs/2006.10029).

    Same arguments and defaults as lightly 1.6's ``SimCLRTransform`` (see
    ``SimCLRViewTransform`` for their meaning); ``view_specs`` lists both views' ViewSpecs.

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> views = SimCLRTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8))
    >>> len(views), tuple(views[0].shape)
    (2, (3, 32, 32))
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        view = SimCLRViewTransform(**lightly_arguments(locals()))
        super().__init__(transforms=[view, view])
