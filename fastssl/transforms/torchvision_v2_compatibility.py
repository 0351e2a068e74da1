"""torchvision ``transforms.v2`` with a non-deprecated ``ToTensor``, as in
``lightly.transforms.torchvision_v2_compatibility``.

``torchvision.transforms.v2.ToTensor`` is deprecated; ``ToTensor`` here is its replacement
(``ToImage`` then ``ToDtype(float32, scale=True)``), and ``torchvision_transforms`` is the v2
namespace with that ``ToTensor`` swapped in, so ``T.ToTensor()`` keeps working in code written
for lightly. fastssl requires torchvision >= 0.19, so v2 is always available (lightly falls
back to the v1 transforms on older versions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms import v2 as _v2


class ToTensor:
    """Converts a PIL image, numpy array or tensor to a float32 tensor with values in [0, 1].

    The replacement of the deprecated ``torchvision.transforms.v2.ToTensor``, with the
    interface of lightly 1.6's ``ToTensor``. A PIL image or (H, W, C) array becomes
    (C, H, W); uint8 values are divided by 255; a float tensor is passed through unchanged.
    Unlike lightly, the result is a plain ``torch.Tensor`` (not a ``tv_tensors.Image``),
    which keeps collate and ``torch.compile`` simple.

    Input: PIL image (H, W, C), numpy array (H, W, C) or tensor (C, H, W).
    Output: float32 tensor (C, H, W) in [0, 1].

    >>> import torch
    >>> ToTensor()(torch.full((3, 2, 2), 255, dtype=torch.uint8)).unique()
    tensor([1.])
    """

    def __init__(self) -> None:
        self.transform: Callable[..., Any] = _v2.Compose(
            [_v2.ToImage(), _v2.ToDtype(dtype=torch.float32, scale=True), _v2.ToPureTensor()]
        )

    def __call__(self, *args: Tensor | Image, **kwargs: Any) -> Tensor:
        """Converts the input(s); several inputs give a tuple, as ``v2.Compose`` does."""
        converted: Tensor = self.transform(*args, **kwargs)
        return converted

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


class DeprecatedShim:
    """A stand-in for the ``torchvision.transforms.v2`` module with some names replaced.

    Attribute lookups return ``custom_transforms[name]`` when present, else the attribute of
    ``torchvision.transforms.v2``; ``dir()`` lists the module's names.

    Args:
        custom_transforms: ``{name: replacement}``, e.g. ``{"ToTensor": ToTensor}``.

    >>> T = DeprecatedShim({"ToTensor": ToTensor})
    >>> T.ToTensor is ToTensor, T.RandomCrop is _v2.RandomCrop
    (True, True)
    """

    def __init__(self, custom_transforms: Mapping[str, Callable[..., Any]]) -> None:
        self._torchvision_transforms = _v2
        self._custom_transforms = dict(custom_transforms)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the instance; guard the private fields so that
        # copy/pickle (which look names up before __init__ ran) do not recurse.
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._custom_transforms:
            return self._custom_transforms[name]
        return getattr(self._torchvision_transforms, name)

    def __dir__(self) -> list[str]:
        return dir(self._torchvision_transforms)


# The v2 namespace with ToTensor replaced, and its functional module (lightly's names).
torchvision_transforms: Any = DeprecatedShim({"ToTensor": ToTensor})
functional = torchvision_transforms.functional
