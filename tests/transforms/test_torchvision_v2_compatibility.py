from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms import torchvision_v2_compatibility as lightly_compat
from torchvision.transforms import v2

import fastssl.transforms
from fastssl.transforms import torchvision_v2_compatibility as compat
from tests.transforms._images import random_pil


@pytest.mark.parametrize(
    "make_input",
    [
        lambda: random_pil(12),
        lambda: np.array(random_pil(12)),
        lambda: v2.functional.pil_to_tensor(random_pil(12)),
        lambda: torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)),
    ],
    ids=["pil", "numpy", "uint8", "float"],
)
def test_to_tensor_equals_lightly(make_input: object) -> None:
    image = make_input()  # type: ignore[operator]
    ours = compat.ToTensor()(image)
    theirs = lightly_compat.ToTensor()(image)
    assert type(ours) is torch.Tensor  # plain tensor, lightly's is a tv_tensors.Image
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs.as_subclass(torch.Tensor))
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_to_tensor_scales_uint8() -> None:
    image = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    torch.testing.assert_close(compat.ToTensor()(image), torch.tensor([[[0.0, 0.2, 1.0]]]))
    assert repr(compat.ToTensor()).startswith("ToTensor(Compose(")


def test_shim_replaces_only_custom_names() -> None:
    shim = compat.DeprecatedShim({"ToTensor": compat.ToTensor, "Extra": len})
    assert shim.ToTensor is compat.ToTensor and shim.Extra is len
    assert shim.RandomCrop is v2.RandomCrop and shim.functional is v2.functional
    assert dir(shim) == dir(v2)
    with pytest.raises(AttributeError):
        shim.NoSuchTransform  # noqa: B018


def test_module_level_names() -> None:
    assert compat.torchvision_transforms.ToTensor is compat.ToTensor
    assert compat.torchvision_transforms.Compose is v2.Compose
    assert compat.functional is v2.functional
    assert fastssl.transforms.ToTensor is compat.ToTensor
    assert fastssl.transforms.torchvision_transforms is compat.torchvision_transforms
    assert fastssl.transforms.functional is v2.functional
    # Same surface as lightly's shim.
    assert set(dir(compat.torchvision_transforms)) == set(
        dir(lightly_compat.torchvision_transforms)
    )
