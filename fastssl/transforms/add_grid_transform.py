"""``AddGridTransform``: DetCon's naive segmentation of an image into a regular grid
(Hénaff et al., 2021, https://arxiv.org/abs/2103.10957)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


class AddGridTransform(v2.Transform):
    """Replaces every mask and bounding-box set in a sample by a regular grid (DetCon,
    "Efficient Visual Pretraining with Contrastive Detection", Hénaff, Koppula, Alayrac,
    van den Oord, Vinyals, Carreira, 2021, https://arxiv.org/abs/2103.10957).

    DetCon's simplest segmentation: cut the image into ``num_rows x num_cols`` cells and treat
    each cell as an object. Works on any ``torchvision.transforms.v2`` sample (tuples, nested
    dicts, ...); images and everything else pass through untouched. Same interface and
    outputs as lightly 1.6's ``AddGridTransform``, including its cell numbering:

    - a ``tv_tensors.Mask`` of shape (*, H, W) becomes (1, H, W) with the label
      ``row * num_cols + col`` for the cell at (row, col) (row-major). When H or W is not a
      multiple of the grid, cells are ``ceil(H / num_rows)`` x ``ceil(W / num_cols)`` pixels
      and the grid is centred, so the outer cells are cut (torchvision's ``center_crop``);
    - a ``tv_tensors.BoundingBoxes`` becomes (num_rows * num_cols, 4) boxes with edges at
      ``linspace(0, W, num_cols + 1)`` and ``linspace(0, H, num_rows + 1)``, in the input's
      format, numbered ``col * num_rows + row`` (column-major: lightly's box order, which is
      not the mask's label order when both num_rows and num_cols exceed 1).

    The outputs keep the input's dtype, device and ``requires_grad``.

    Input: any v2 sample. Output: the same structure, masks and boxes replaced.

    Args:
        num_rows: Number of grid rows (>= 1).
        num_cols: Number of grid columns (>= 1).

    >>> import torch
    >>> from torchvision import tv_tensors
    >>> mask = tv_tensors.Mask(torch.zeros(4, 6, dtype=torch.int64))
    >>> AddGridTransform(num_rows=2, num_cols=3)(mask)
    Mask([[[0, 0, 1, 1, 2, 2],
           [0, 0, 1, 1, 2, 2],
           [3, 3, 4, 4, 5, 5],
           [3, 3, 4, 4, 5, 5]]])
    """

    # Only these are replaced; images and anything else are passed through.
    _transformed_types = (tv_tensors.BoundingBoxes, tv_tensors.Mask)

    def __init__(self, num_rows: int, num_cols: int) -> None:
        super().__init__()
        for name, value in (("num_rows", num_rows), ("num_cols", num_cols)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self.num_rows = num_rows
        self.num_cols = num_cols

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Returns the grid that replaces ``inpt`` (a Mask or BoundingBoxes)."""
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return self._boxes_like(inpt)
        if isinstance(inpt, tv_tensors.Mask):
            return self._mask_like(inpt)
        return inpt

    # torchvision < 0.21 calls the private name.
    _transform = transform

    def _mask_like(self, mask: tv_tensors.Mask) -> tv_tensors.Mask:
        if mask.dim() < 2:
            raise ValueError(
                f"AddGridTransform needs masks of shape (*, H, W), got shape {tuple(mask.shape)}."
            )
        height, width = mask.shape[-2:]
        cell_h = math.ceil(height / self.num_rows)
        cell_w = math.ceil(width / self.num_cols)
        # Label map of the whole grid (num_rows * cell_h, num_cols * cell_w), then centred on
        # the mask: the grid is at least as large as the mask.
        rows = torch.arange(self.num_rows * cell_h, device=mask.device) // cell_h
        cols = torch.arange(self.num_cols * cell_w, device=mask.device) // cell_w
        labels = rows[:, None] * self.num_cols + cols[None, :]
        labels = F.center_crop(labels[None], [height, width])
        return tv_tensors.Mask(labels, dtype=mask.dtype, requires_grad=mask.requires_grad)

    def _boxes_like(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        height, width = boxes.canvas_size
        xs = torch.linspace(0, width, self.num_cols + 1, device=boxes.device)
        ys = torch.linspace(0, height, self.num_rows + 1, device=boxes.device)
        # (num_cols, num_rows) cells, flattened column-major: index col * num_rows + row.
        x_min = xs[:-1, None].expand(self.num_cols, self.num_rows)
        x_max = xs[1:, None].expand(self.num_cols, self.num_rows)
        y_min = ys[None, :-1].expand(self.num_cols, self.num_rows)
        y_max = ys[None, 1:].expand(self.num_cols, self.num_rows)
        xyxy = torch.stack([x_min, y_min, x_max, y_max], dim=-1).reshape(-1, 4)
        grid = tv_tensors.BoundingBoxes(
            xyxy,
            format=tv_tensors.BoundingBoxFormat.XYXY,
            canvas_size=boxes.canvas_size,
            dtype=boxes.dtype,
            requires_grad=boxes.requires_grad,
        )
        converted: tv_tensors.BoundingBoxes = F.convert_bounding_box_format(
            grid, new_format=boxes.format
        )
        return converted
