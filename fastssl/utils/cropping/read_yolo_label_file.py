"""Reading YOLO label files (LightlySSL's
``lightly.utils.cropping.read_yolo_label_file``).

A YOLO label file has one line per object: ``class_id x_center y_center width height``,
the coordinates relative to the image size.

Example:
    >>> import tempfile
    >>> path = tempfile.mktemp(suffix=".txt")
    >>> _ = open(path, "w").write("2 0.5 0.5 0.2 0.4\\n")
    >>> classes, boxes = read_yolo_label_file(path, padding=0.5)
    >>> classes, round(boxes[0].width, 6), round(boxes[0].height, 6)
    ([2], 0.3, 0.6)
"""

from __future__ import annotations

from fastssl.utils.bounding_box import BoundingBox


def read_yolo_label_file(
    filepath: str, padding: float, separator: str = " "
) -> tuple[list[int], list[BoundingBox]]:
    """Reads the objects of a YOLO label file, with their boxes enlarged by ``padding``.

    Args:
        filepath: The label file, usually a ``.txt``.
        padding: Relative margin added around each box: width and height are multiplied
            by ``1 + padding`` about the box center (the result is clipped to the image).
        separator: The separator between the five values of a line.

    Returns:
        ``(class_indices, bounding_boxes)``, one entry per object line, in file order.
        Blank lines are skipped.

    Raises:
        ValueError: If a line does not hold five numbers (the message names the file and
            line), or a box is empty.
    """
    class_indices: list[int] = []
    boxes: list[BoundingBox] = []
    with open(filepath) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            fields = [field for field in line.strip().split(separator) if field.strip()]
            try:
                class_id, x, y, w, h = (float(field) for field in fields)
            except ValueError as error:
                raise ValueError(
                    f"{filepath}:{number}: expected 'class_id x_center y_center width height' "
                    f"separated by {separator!r}, got {line.strip()!r}"
                ) from error
            class_indices.append(int(class_id))
            boxes.append(BoundingBox.from_yolo_label(x, y, w * (1 + padding), h * (1 + padding)))
    return class_indices, boxes
