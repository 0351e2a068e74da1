"""``MultiViewTransform``: one image in, a list of augmented views out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL.Image import Image
from torch import Tensor

from fastssl.transforms.view_spec import ViewSpec


class ViewTransform:
    """Turns an image into one view by running the pipeline compiled from a ViewSpec.

    Base of every ``*ViewTransform`` class; ``view_spec`` is what the DALI and FFCV engines
    compile, ``transform`` is the torchvision pipeline.

    Input: PIL image or (C, H, W) uint8 tensor. Output: (C, H', W') float32 tensor.

    >>> import torch
    >>> view = ViewTransform(ViewSpec(crop_size=16))
    >>> view(torch.zeros(3, 20, 20, dtype=torch.uint8)).shape
    torch.Size([3, 16, 16])
    """

    def __init__(self, view_spec: ViewSpec) -> None:
        self.view_spec = view_spec
        self.transform = view_spec.build_torchvision()

    def __call__(self, image: Tensor | Image) -> Tensor:
        """Applies the view's augmentations to ``image``."""
        return self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.view_spec})"


class MultiViewTransform:
    """Transforms an image into several views, one per transform in ``transforms``.

    Same interface as ``lightly.transforms.MultiViewTransform``.

    Input: PIL image or (C, H, W) uint8 tensor. Output: list of len(transforms) views.

    Args:
        transforms: One callable per view.

    >>> import torch
    >>> view = ViewTransform(ViewSpec(crop_size=8))
    >>> views = MultiViewTransform([view, view])(torch.zeros(3, 9, 9, dtype=torch.uint8))
    >>> [tuple(v.shape) for v in views]
    [(3, 8, 8), (3, 8, 8)]
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = transforms

    def __call__(self, image: Tensor | Image) -> list[Any]:
        """Returns ``[transform(image) for transform in transforms]``."""
        return [transform(image) for transform in self.transforms]

    @property
    def view_specs(self) -> list[ViewSpec]:
        """The ViewSpec of every view, in view order, for the DALI/FFCV engines.

        Raises:
            ValueError: If a view's transform was not built from a ViewSpec.
        """
        specs = []
        for index, transform in enumerate(self.transforms):
            spec = getattr(transform, "view_spec", None)
            if not isinstance(spec, ViewSpec):
                raise ValueError(
                    f"view {index} ({transform!r}) has no ViewSpec; only transforms built from "
                    "a ViewSpec (fastssl.transforms.ViewSpec) can be compiled by other engines."
                )
            specs.append(spec)
        return specs
