from __future__ import annotations

import re

import pytest
import torch
from lightly.loss import roi_resample_to_grid as lightly_roi_resample_to_grid

from fastssl.loss.dense_relational_utils import roi_resample_to_grid


@pytest.mark.parametrize(
    ("shape", "out"), [((2, 3, 6, 5), (3, 4)), ((1, 8, 14, 14), (7, 7)), ((3, 2, 4, 4), (1, 2))]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_lightly(shape: tuple[int, ...], out: tuple[int, int], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(shape[0])
    b, _, h, w = shape
    feature_map = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    corners = torch.rand(b, 2, 2, generator=g) * torch.tensor([w, h])
    boxes = torch.cat([corners.amin(1), corners.amax(1)], dim=1)  # (x0, y0, x1, y1)
    ours = roi_resample_to_grid(feature_map, boxes, *out)
    theirs = lightly_roi_resample_to_grid(feature_map, boxes, *out)
    assert ours.shape == (b, out[0] * out[1], shape[1])
    assert ours.dtype == dtype and ours.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    weights = torch.randn(ours.shape, generator=g, dtype=dtype)
    torch.testing.assert_close(
        torch.autograd.grad((ours * weights).sum(), feature_map)[0],
        torch.autograd.grad((theirs * weights).sum(), feature_map)[0],
        rtol=1e-4,
        atol=1e-6,
    )


def test_full_box_on_the_feature_grid_returns_the_tokens() -> None:
    """With aligned=True, the box (0, 0, W, H) on an H x W grid samples every pixel center."""
    feature_map = torch.randn(2, 3, 4, 5)
    boxes = torch.tensor([[0.0, 0.0, 5.0, 4.0]] * 2)
    tokens = roi_resample_to_grid(feature_map, boxes, 4, 5)
    torch.testing.assert_close(tokens, feature_map.flatten(2).transpose(1, 2))


def test_half_pixel_shift_interpolates_neighbours() -> None:
    """Shifting the box by half a pixel in x samples halfway between two pixel centers."""
    feature_map = torch.randn(1, 2, 3, 4)
    boxes = torch.tensor([[0.5, 0.0, 3.5, 3.0]])
    tokens = roi_resample_to_grid(feature_map, boxes, 3, 3).reshape(1, 3, 3, 2)
    expected = 0.5 * (feature_map[..., :-1] + feature_map[..., 1:])  # (1, 2, 3, 3)
    torch.testing.assert_close(tokens, expected.permute(0, 2, 3, 1))


def test_rejects_bad_shapes() -> None:
    fm = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=re.escape("feature_map must have shape (B, C, H, W)")):
        roi_resample_to_grid(fm[0], torch.zeros(2, 4), 2, 2)
    with pytest.raises(ValueError, match=re.escape("boxes must have shape (B, 4), got (2, 5)")):
        roi_resample_to_grid(fm, torch.zeros(2, 5), 2, 2)
    with pytest.raises(ValueError, match="boxes has batch size 3 but feature_map has 2"):
        roi_resample_to_grid(fm, torch.zeros(3, 4), 2, 2)
