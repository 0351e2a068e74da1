from __future__ import annotations

from pathlib import Path

import pytest
from lightly.utils.cropping.read_yolo_label_file import (
    read_yolo_label_file as lightly_read_yolo_label_file,
)

from fastssl.utils.cropping.read_yolo_label_file import read_yolo_label_file

LINES = ["0 0.5 0.5 0.2 0.4", "3 0.1 0.9 0.3 0.3", "12 0.75 0.25 0.5 0.1"]


@pytest.mark.parametrize("padding", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("separator", [" ", ","])
def test_matches_lightly(tmp_path: Path, padding: float, separator: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(line.replace(" ", separator) for line in LINES) + "\n")
    classes, boxes = read_yolo_label_file(str(path), padding, separator)
    their_classes, their_boxes = lightly_read_yolo_label_file(str(path), padding, separator)
    assert classes == their_classes == [0, 3, 12]
    assert len(boxes) == len(their_boxes) == 3
    for box, theirs in zip(boxes, their_boxes, strict=True):
        assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx(
            (theirs.x0, theirs.y0, theirs.x1, theirs.y1)
        )


def test_padding_scales_about_the_center(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("1 0.5 0.5 0.2 0.4\n")
    _, (box,) = read_yolo_label_file(str(path), padding=0.5)
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((0.35, 0.2, 0.65, 0.8))


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\n0 0.5 0.5 0.2 0.2\n\n  \n")
    classes, boxes = read_yolo_label_file(str(path), padding=0.0)
    assert classes == [0] and len(boxes) == 1


@pytest.mark.parametrize("line", ["0 0.5 0.5 0.2", "0 0.5 0.5 0.2 0.2 0.1", "a 0.5 0.5 0.2 0.2"])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(ValueError, match=r"labels\.txt:2"):
        read_yolo_label_file(str(path), padding=0.0)
