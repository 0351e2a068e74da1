"""TiCo views (Zhu et al., 2022, https://arxiv.org/abs/2206.10698): BYOL's augmentations."""

from __future__ import annotations

from fastssl.transforms.byol_transform import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
)


class TiCoTransform(BYOLTransform):
    """The two asymmetric views of TiCo (https://arxiv.org/abs/2206.10698), BYOL's views.

    >>> import torch
    >>> view_1, view_2 = TiCoView1Transform(input_size=32), TiCoView2Transform(input_size=32)
    >>> transform = TiCoTransform(view_1, view_2)
    >>> len(transform(torch.zeros(3, 40, 40, dtype=torch.uint8)))
    2
    """


class TiCoView1Transform(BYOLView1Transform):
    """First TiCo view (https://arxiv.org/abs/2206.10698); see ``BYOLView1Transform``."""


class TiCoView2Transform(BYOLView2Transform):
    """Second TiCo view (https://arxiv.org/abs/2206.10698); see ``BYOLView2Transform``."""
