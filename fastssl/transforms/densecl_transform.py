"""DenseCL views (Wang et al., 2021, https://arxiv.org/abs/2011.09157): MoCo v2's augmentations."""

from __future__ import annotations

from fastssl.transforms.moco_transform import MoCoV2Transform


class DenseCLTransform(MoCoV2Transform):
    """Two DenseCL views (DenseCL, https://arxiv.org/abs/2011.09157), the views of MoCo v2.

    Same arguments and defaults as lightly 1.6's ``DenseCLTransform`` (those of
    ``MoCoV2Transform``).

    Input: PIL image or (C, H, W) uint8 tensor.
    Output: list of 2 tensors of shape (C, input_size, input_size), float32.

    >>> import torch
    >>> len(DenseCLTransform(input_size=32)(torch.zeros(3, 40, 40, dtype=torch.uint8)))
    2
    """
