"""Multi-crop (several crop sizes and counts), as in SwaV (https://arxiv.org/abs/2006.09882)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.transforms import v2

from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec


class _CropThen:
    """Random resized crop followed by an arbitrary (non-ViewSpec) transform."""

    def __init__(self, crop: Callable[[Any], Any], transform: Callable[[Any], Any]) -> None:
        self.crop = crop
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return self.transform(self.crop(image))


class MultiCropTranform(MultiViewTransform):
    """Makes ``crop_counts[i]`` random resized crops of size ``crop_sizes[i]`` per category.

    The name keeps lightly 1.6's spelling (``MultiCropTranform``). When ``transforms`` was built
    from a ViewSpec without a crop (e.g. ``SwaVViewTransform``), each category compiles one
    ViewSpec (crop included) so the whole view runs on uint8 and is visible in
    ``view_specs``; any other callable runs after a ``torchvision.transforms.v2`` crop.

    Input: PIL image or (C, H, W) uint8 tensor. Output: list of sum(crop_counts) views.

    Args:
        crop_sizes: Output size of each crop category.
        crop_counts: Number of crops of each category.
        crop_min_scales: Minimum area fraction of each category.
        crop_max_scales: Maximum area fraction of each category.
        transforms: Transform applied to every crop after cropping.

    >>> import torch
    >>> from fastssl.transforms.swav_transform import SwaVViewTransform
    >>> t = MultiCropTranform((16, 8), (2, 3), (0.5, 0.1), (1.0, 0.5), SwaVViewTransform())
    >>> [v.shape[-1] for v in t(torch.zeros(3, 20, 20, dtype=torch.uint8))]
    [16, 16, 8, 8, 8]
    """

    def __init__(
        self,
        crop_sizes: tuple[int, ...],
        crop_counts: tuple[int, ...],
        crop_min_scales: tuple[float, ...],
        crop_max_scales: tuple[float, ...],
        transforms: Callable[[Any], Any],
    ) -> None:
        for name, values in (
            ("crop_counts", crop_counts),
            ("crop_min_scales", crop_min_scales),
            ("crop_max_scales", crop_max_scales),
        ):
            if len(values) != len(crop_sizes):
                raise ValueError(
                    f"Length of crop_sizes and {name} must be equal but are "
                    f"{len(crop_sizes)} and {len(values)}."
                )
        for count in crop_counts:
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"crop_counts must be ints >= 0, got {tuple(crop_counts)!r}.")
        base: ViewSpec | None = getattr(transforms, "view_spec", None)
        if base is not None and base.crop_size is not None:
            base = None  # it crops by itself: treat it as an opaque transform
        views: list[Callable[[Any], Any]] = []
        categories = zip(crop_sizes, crop_counts, crop_min_scales, crop_max_scales, strict=True)
        for size, count, low, high in categories:
            if base is not None:
                view: Callable[[Any], Any] = ViewTransform(
                    base.replace(crop_size=size, crop_scale=(low, high))
                )
            else:
                crop = ViewSpec(
                    crop_size=size, crop_scale=(low, high)
                )  # validates size and scales with the usual messages
                view = _CropThen(
                    v2.RandomResizedCrop(crop.crop_size, scale=crop.crop_scale),
                    transforms,
                )
            views.extend([view] * count)
        super().__init__(views)
