"""Constants shared by the transforms."""

from __future__ import annotations

# Channel statistics of ImageNet-1k (RGB, [0, 1] range), the normalisation every method of
# lightly 1.6 uses by default. Same name and layout as ``lightly.transforms.utils``.
IMAGENET_NORMALIZE: dict[str, list[float]] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
