"""DetCon-S views (Hénaff et al., 2021, https://arxiv.org/abs/2103.10957): SimCLR's
augmentations applied jointly to an image and its segmentation mask.

The views must move the mask with the image (crop, flips, rotation), so they are
``torchvision.transforms.v2`` pipelines over whole samples (image, ``tv_tensors.Mask``,
boxes, nested in tuples or dicts) rather than ViewSpec pipelines, which transform one image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastssl.transforms.add_grid_transform import AddGridTransform
from fastssl.transforms.multi_view_transform_v2 import MultiViewTransformV2
from fastssl.transforms.utils import IMAGENET_NORMALIZE, lightly_arguments


class DetConSViewTransform:
    """One DetCon-S view (DetCon, "Efficient Visual Pretraining with Contrastive Detection",
    Hénaff, Koppula, Alayrac, van den Oord, Vinyals, Carreira, 2021,
    https://arxiv.org/abs/2103.10957; augmentations of SimCLR,
    https://arxiv.org/abs/2002.05709).

    Random resized crop (bilinear), horizontal flip, vertical flip, rotation, color jitter,
    grayscale, Gaussian blur (torchvision's, fixed ``kernel_size``), conversion to float32 in
    [0, 1] and normalisation, as one ``torchvision.transforms.v2`` pipeline: geometric steps
    move masks and boxes with the image (masks with nearest-neighbour resampling), photometric
    ones touch only the image. Same arguments and defaults as lightly 1.6's
    ``DetConSViewTransform``. The image becomes a uint8 tensor first (so every step runs on
    tensors); steps with probability 0 are left out.

    Input: a v2 sample, e.g. ``(image, mask)`` with a PIL image or (C, H, W) tensor and a
    ``tv_tensors.Mask`` of shape (1, H, W).
    Output: the same structure; the image a float32 ``tv_tensors.Image`` (C, h, w) with
    (h, w) = input_size, the mask a ``tv_tensors.Mask`` (1, h, w) of the input's dtype.

    Args:
        input_size: Output size: int (square) or (height, width).
        cj_prob: Probability that color jitter is applied.
        cj_strength: Multiplies cj_bright, cj_contrast, cj_sat and cj_hue.
        cj_bright: How much to jitter brightness.
        cj_contrast: How much to jitter contrast.
        cj_sat: How much to jitter saturation.
        cj_hue: How much to jitter hue.
        min_scale: Minimum area fraction of the random resized crop.
        random_gray_scale: Probability of conversion to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        kernel_size: Size of the blur kernel: odd int or (height, width) of odd ints.
        sigmas: (min, max) standard deviation of the blur, in pixels.
        vf_prob: Probability of a vertical flip.
        hf_prob: Probability of a horizontal flip.
        rr_prob: Probability of a rotation.
        rr_degrees: A number d rotates by an angle in [-d, d]; (lo, hi) in [lo, hi].
            Counter-clockwise.
        normalize: Dict with "mean" and "std", or None for no normalisation.

    >>> import torch
    >>> from torchvision import tv_tensors
    >>> mask = tv_tensors.Mask(torch.zeros(1, 40, 40, dtype=torch.int64))
    >>> image, mask = DetConSViewTransform(input_size=32)(torch.zeros(3, 40, 40), mask)
    >>> tuple(image.shape), tuple(mask.shape)
    ((3, 32, 32), (1, 32, 32))
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        kernel_size: int | tuple[int, int] = (23, 23),
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] = 0.0,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        steps: list[Callable[..., Any]] = [
            v2.ToImage(),
            v2.RandomResizedCrop(size=input_size, scale=(min_scale, 1.0), antialias=True),
        ]
        if hf_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=hf_prob))
        if vf_prob > 0:
            steps.append(v2.RandomVerticalFlip(p=vf_prob))
        if rr_prob > 0:
            steps.append(v2.RandomApply([v2.RandomRotation(rr_degrees)], p=rr_prob))
        jitter = [cj_strength * s for s in (cj_bright, cj_contrast, cj_sat, cj_hue)]
        if cj_prob > 0 and any(j > 0 for j in jitter):
            brightness, contrast, saturation, hue = jitter
            color_jitter = v2.ColorJitter(
                brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
            )
            steps.append(v2.RandomApply([color_jitter], p=cj_prob))
        if random_gray_scale > 0:
            steps.append(v2.RandomGrayscale(p=random_gray_scale))
        if gaussian_blur > 0:
            blur = v2.GaussianBlur(kernel_size=kernel_size, sigma=sigmas)
            steps.append(v2.RandomApply([blur], p=gaussian_blur))
        # A single dtype converts (and scales) images only; masks keep their dtype.
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if normalize:
            steps.append(v2.Normalize(mean=list(normalize["mean"]), std=list(normalize["std"])))
        self.tr = v2.Compose(steps)

    def __call__(self, *args: Any) -> Any:
        """Applies the view's augmentations to a sample (e.g. ``image, mask``).

        Returns:
            The transformed sample, in the structure of the input.
        """
        return self.tr(*args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tr})"


class DetConSTransform(MultiViewTransformV2):
    """DetCon-S's two views of an image and its segmentation (DetCon, "Efficient Visual
    Pretraining with Contrastive Detection", Hénaff et al., 2021,
    https://arxiv.org/abs/2103.10957; SimCLR's augmentations).

    Both views are ``DetConSViewTransform``s; they differ in the blur probability
    (``gaussian_blur_t1``, ``gaussian_blur_t2``). The mask comes from one of:

    - ``grid_size=(rows, cols)``: a regular grid (``AddGridTransform``) replaces the mask
      passed with the image, which is only a placeholder then;
    - ``mask_fn``: called once per image (e.g. an unsupervised segmenter such as
      ``skimage.segmentation.felzenszwalb``), so both views share one segmentation; a (H, W)
      result gets a leading channel. Must be picklable for ``DataLoader`` workers;
    - neither: the caller passes ``image, mask``.

    Same arguments and defaults as lightly 1.6's ``DetConSTransform`` (a
    ``MultiViewTransformV2`` of the two views).

    Input: ``image`` (with ``mask_fn``) or ``image, mask`` (any v2 sample otherwise).
    Output: list of 2 transformed samples, e.g. ``[(image_1, mask_1), (image_2, mask_2)]``,
    each as described in ``DetConSViewTransform``.

    Args:
        grid_size: (num_rows, num_cols) of a grid segmentation, or None.
        mask_fn: Function from the image to its integer segmentation (tensor or PIL image),
            or None. Mutually exclusive with ``grid_size``.
        gaussian_blur_t1: Blur probability of view 1.
        gaussian_blur_t2: Blur probability of view 2.
        input_size, cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue, min_scale,
        random_gray_scale, kernel_size, sigmas, vf_prob, hf_prob, rr_prob, rr_degrees,
        normalize: As in ``DetConSViewTransform``.

    Raises:
        ValueError: If both ``grid_size`` and ``mask_fn`` are given.

    >>> import torch
    >>> from torchvision import tv_tensors
    >>> transform = DetConSTransform(grid_size=(2, 2), input_size=32)
    >>> placeholder = tv_tensors.Mask(torch.zeros(1, 40, 40, dtype=torch.int64))
    >>> (image, mask), _ = transform(torch.zeros(3, 40, 40), placeholder)
    >>> tuple(image.shape), mask.unique().tolist()
    ((3, 32, 32), [0, 1, 2, 3])
    """

    def __init__(
        self,
        grid_size: tuple[int, int] | None = None,
        mask_fn: Callable[[Image | Tensor], Image | Tensor] | None = None,
        gaussian_blur_t1: float = 1.0,
        gaussian_blur_t2: float = 0.0,
        input_size: int | tuple[int, int] = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        kernel_size: int | tuple[int, int] = (23, 23),
        sigmas: tuple[float, float] = (0.1, 2),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | tuple[float, float] = 0.0,
        normalize: Mapping[str, Sequence[float]] | None = IMAGENET_NORMALIZE,
    ) -> None:
        # Forwarded unchanged to both views (before any other local variable is bound).
        shared = lightly_arguments(
            locals(), exclude=("grid_size", "mask_fn", "gaussian_blur_t1", "gaussian_blur_t2")
        )
        if grid_size is not None and mask_fn is not None:
            raise ValueError(
                "grid_size and mask_fn are mutually exclusive; pass at most one of them."
            )
        if grid_size is not None and len(grid_size) != 2:
            raise ValueError(f"grid_size must be (num_rows, num_cols), got {grid_size!r}.")
        self.grid_size = grid_size
        self.mask_fn = mask_fn
        views: list[Callable[..., Any]] = []
        for blur_prob in (gaussian_blur_t1, gaussian_blur_t2):
            steps: list[Callable[..., Any]] = []
            if grid_size is not None:
                steps.append(AddGridTransform(num_rows=grid_size[0], num_cols=grid_size[1]))
            steps.append(DetConSViewTransform(gaussian_blur=blur_prob, **shared))
            views.append(v2.Compose(steps))
        super().__init__(transforms=views)

    def __call__(self, *args: Any) -> list[Any]:
        """Returns the two views of the sample (``image`` alone when ``mask_fn`` is set)."""
        if self.mask_fn is not None:
            image = args[0]
            mask = tv_tensors.Mask(self.mask_fn(image))
            if mask.ndim == 2:  # e.g. felzenszwalb's (H, W) labels: match the (1, H, W) masks
                mask = tv_tensors.Mask(mask[None])
            args = (image, mask)
        return super().__call__(*args)
