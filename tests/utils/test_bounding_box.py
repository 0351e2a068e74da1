from __future__ import annotations

import pytest
from lightly.utils.bounding_box import BoundingBox as LightlyBoundingBox

from fastssl.utils.bounding_box import BoundingBox


def _corners(box: BoundingBox | LightlyBoundingBox) -> tuple[float, ...]:
    return (box.x0, box.y0, box.x1, box.y1, box.width, box.height, box.area)


@pytest.mark.parametrize(
    "args",
    [
        (0.1, 0.2, 0.3, 0.4),
        (-0.5, 0.0, 1.5, 0.5),  # clipped to the image
        (0.0, 0.0, 1.0, 1.0),
    ],
)
def test_init_matches_lightly(args: tuple[float, ...]) -> None:
    assert _corners(BoundingBox(*args)) == pytest.approx(_corners(LightlyBoundingBox(*args)))


@pytest.mark.parametrize(
    "args", [(0.1, 0.2, 0.2, 0.2), (0.9, 0.9, 0.3, 0.3), (-0.1, 0.5, 0.4, 0.2)]
)
def test_from_x_y_w_h_matches_lightly(args: tuple[float, ...]) -> None:
    ours, theirs = BoundingBox.from_x_y_w_h(*args), LightlyBoundingBox.from_x_y_w_h(*args)
    assert _corners(ours) == pytest.approx(_corners(theirs))


@pytest.mark.parametrize(
    "args", [(0.5, 0.4, 0.2, 0.3), (0.05, 0.95, 0.4, 0.4), (0.5, 0.5, 2.0, 2.0)]
)
def test_from_yolo_label_matches_lightly(args: tuple[float, ...]) -> None:
    ours, theirs = BoundingBox.from_yolo_label(*args), LightlyBoundingBox.from_yolo_label(*args)
    assert _corners(ours) == pytest.approx(_corners(theirs))


def test_from_yolo_label_values() -> None:
    box = BoundingBox.from_yolo_label(0.5, 0.4, 0.2, 0.3)
    assert _corners(box) == pytest.approx((0.4, 0.25, 0.6, 0.55, 0.2, 0.3, 0.06))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.3, 0.2, 0.3, 0.4), "x0 must be smaller than x1"),
        ((0.1, 0.5, 0.3, 0.4), "y0 must be smaller than y1"),
        ((1.2, 0.0, 1.5, 0.5), "x0 must be smaller than x1"),  # clipped to an empty box
    ],
)
def test_empty_boxes_raise(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoundingBox(*args)
    with pytest.raises(ValueError, match=message):
        LightlyBoundingBox(*args)


def test_unclipped_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="relative to image width"):
        BoundingBox(-0.1, 0.0, 0.5, 0.5, clip_values=False)
