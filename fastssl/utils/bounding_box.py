"""A bounding box in coordinates relative to the image size (LightlySSL's
``lightly.utils.bounding_box``).

Example:
    >>> box = BoundingBox.from_x_y_w_h(0.1, 0.2, 0.2, 0.4)
    >>> round(box.x1, 6), round(box.y1, 6), round(box.area, 6)
    (0.3, 0.6, 0.08)
    >>> W, H = 100, 50  # pixel coordinates are divided by the image size
    >>> BoundingBox(10 / W, 5 / H, 30 / W, 25 / H).height
    0.4
"""

from __future__ import annotations


class BoundingBox:
    """Box with corners ``(x0, y0)`` (top left) and ``(x1, y1)`` (bottom right), every
    coordinate relative to the image width or height, hence in [0, 1].

    Args:
        x0: Left edge relative to the image width.
        y0: Top edge relative to the image height.
        x1: Right edge relative to the image width.
        y1: Bottom edge relative to the image height.
        clip_values: Clip every coordinate to [0, 1] first (boxes reaching past the
            image border are cut at the border).

    Attributes:
        x0, y0, x1, y1: The (clipped) corners.

    Raises:
        ValueError: If a coordinate is outside [0, 1] (without clipping), or the box is
            empty (``x0 >= x1`` or ``y0 >= y1``).
    """

    def __init__(
        self, x0: float, y0: float, x1: float, y1: float, clip_values: bool = True
    ) -> None:
        if clip_values:
            x0, y0, x1, y1 = (min(1, max(0, value)) for value in (x0, y0, x1, y1))
        if not all(0 <= value <= 1 for value in (x0, y0, x1, y1)):
            raise ValueError(
                f"Bounding Box Coordinates must be relative to "
                f"image width and height but are ({x0}, {y0}, {x1}, {y1})."
            )
        if x0 >= x1:
            raise ValueError(
                f"x0 must be smaller than x1 for bounding box [{x0}, {y0}, {x1}, {y1}]"
            )
        if y0 >= y1:
            raise ValueError(
                f"y0 must be smaller than y1 for bounding box [{x0}, {y0}, {x1}, {y1}]"
            )
        self.x0 = x0
        self.y0 = y0
        self.x1 = x1
        self.y1 = y1

    @classmethod
    def from_x_y_w_h(cls, x: float, y: float, w: float, h: float) -> BoundingBox:
        """Box from its top-left corner ``(x, y)``, width ``w`` and height ``h``
        (all relative to the image size), clipped to the image."""
        return cls(x, y, x + w, y + h)

    @classmethod
    def from_yolo_label(cls, x_center: float, y_center: float, w: float, h: float) -> BoundingBox:
        """Box from a YOLO label: its center, width and height (relative to the image
        size), clipped to the image."""
        return cls(
            x_center - w / 2, y_center - h / 2, x_center + w / 2, y_center + h / 2, clip_values=True
        )

    @property
    def width(self) -> float:
        """Width relative to the image width."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Height relative to the image height."""
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        """Area relative to the image area."""
        return self.width * self.height

    def __repr__(self) -> str:
        return f"BoundingBox(x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1})"
