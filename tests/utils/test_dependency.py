from __future__ import annotations

import importlib

import pytest
from lightly.utils import dependency as lightly_dependency

from fastssl.utils import dependency

CHECKS = ["torchvision_vit_available", "timm_vit_available", "torchvision_transforms_v2_available"]


@pytest.mark.parametrize("name", CHECKS)
def test_matches_lightly(name: str) -> None:
    assert getattr(dependency, name)() is getattr(lightly_dependency, name)() is True


@pytest.mark.parametrize(
    ("name", "blocked", "error", "available"),
    [
        ("torchvision_vit_available", "torchvision.models.vision_transformer", ImportError, False),
        # A torchvision built for another CUDA version fails with RuntimeError / OSError.
        ("torchvision_vit_available", "torchvision.models.vision_transformer", RuntimeError, False),
        ("torchvision_vit_available", "torchvision.models.vision_transformer", OSError, False),
        ("timm_vit_available", "timm.models.vision_transformer", ImportError, False),
        ("timm_vit_available", "timm.layers", ImportError, False),
        ("torchvision_transforms_v2_available", "torchvision.tv_tensors", ImportError, False),
        # Only ImportError means "not installed" there: other errors are real problems.
        ("torchvision_transforms_v2_available", "torchvision.tv_tensors", RuntimeError, None),
    ],
)
def test_import_failures(
    name: str,
    blocked: str,
    error: type[Exception],
    available: bool | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = getattr(dependency, name)
    real_import_module = importlib.import_module

    def import_module(module: str, package: str | None = None) -> object:
        if module == blocked:
            raise error(f"{module} blocked")
        return real_import_module(module, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    check.cache_clear()
    try:
        if available is None:
            with pytest.raises(error):
                check()
        else:
            assert check() is available
    finally:
        check.cache_clear()


def test_timm_without_layer_type_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.layers

    monkeypatch.delattr(timm.layers, "LayerType")
    dependency.timm_vit_available.cache_clear()
    try:
        assert dependency.timm_vit_available() is False
    finally:
        dependency.timm_vit_available.cache_clear()
