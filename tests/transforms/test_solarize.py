from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.transforms.solarize import RandomSolarization as LightlyRandomSolarization
from torchvision.transforms.v2 import functional as F

from fastssl.transforms.solarize import RandomSolarization
from tests.transforms._images import binomial_tolerance, random_pil


@pytest.mark.parametrize("threshold", [0, 100, 128, 255])
def test_equals_lightly_and_formula(threshold: int) -> None:
    image = random_pil(24)
    ours = RandomSolarization(prob=1.0, threshold=threshold)
    theirs = LightlyRandomSolarization(prob=1.0, threshold=threshold)
    expected = np.array(theirs(image))
    assert np.array_equal(np.asarray(ours(image)), expected)
    tensor = F.pil_to_tensor(image)
    formula = torch.where(tensor >= threshold, 255 - tensor, tensor)
    assert torch.equal(ours(tensor), formula)
    assert torch.equal(
        F.pil_to_tensor(F.to_pil_image(ours(tensor))), torch.from_numpy(expected).permute(2, 0, 1)
    )
    # float input in [0, 1]: threshold / 255
    torch.testing.assert_close(ours(tensor.float() / 255), formula.float() / 255)


def test_rate() -> None:
    torch.manual_seed(0)
    image = F.pil_to_tensor(random_pil(8))
    n, p = 1000, 0.2
    solarize = RandomSolarization(prob=p)
    hits = sum(not torch.equal(solarize(image), image) for _ in range(n))
    assert abs(hits / n - p) <= binomial_tolerance(p, n)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got -0.1"):
        RandomSolarization(prob=-0.1)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 256\], got 300"):
        RandomSolarization(threshold=300)
