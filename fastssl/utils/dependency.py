"""Checks for optional features of installed libraries (LightlySSL's
``lightly.utils.dependency``).

Each check imports the modules in question once and caches the answer.

Example:
    >>> torchvision_transforms_v2_available()
    True
"""

from __future__ import annotations

import functools
import importlib


def _importable(
    module: str, attribute: str | None = None, errors: tuple[type[Exception], ...] = (ImportError,)
) -> bool:
    """Whether ``module`` imports without one of ``errors`` (and has ``attribute``)."""
    try:
        imported = importlib.import_module(module)
    except errors:
        return False
    return attribute is None or hasattr(imported, attribute)


@functools.lru_cache(maxsize=1)
def torchvision_vit_available() -> bool:
    """Whether torchvision provides Vision Transformers (torchvision >= 0.12).

    A torchvision built for another CUDA version than torch fails to import with a
    RuntimeError or OSError instead of an ImportError: that counts as unavailable too.
    """
    return _importable(
        "torchvision.models.vision_transformer", errors=(ImportError, RuntimeError, OSError)
    )


@functools.lru_cache(maxsize=1)
def timm_vit_available() -> bool:
    """Whether timm provides Vision Transformers (timm >= 0.3.3) and
    ``timm.layers.LayerType`` (timm >= 0.9.9), which the timm-based models need."""
    return _importable("timm.models.vision_transformer") and _importable(
        "timm.layers", attribute="LayerType"
    )


@functools.lru_cache(maxsize=1)
def torchvision_transforms_v2_available() -> bool:
    """Whether torchvision has the transforms v2 API with ``tv_tensors`` (torchvision >=
    0.16; ``transforms.v2`` alone appeared in 0.15, without ``tv_tensors``)."""
    return _importable("torchvision.tv_tensors")
