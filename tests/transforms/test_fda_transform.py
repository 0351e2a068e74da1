from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from lightly.transforms import fda_transform as lightly_fda
from torchvision.transforms.v2 import functional as F

from fastssl.transforms import fda_transform
from fastssl.transforms.view_spec import ViewSpec
from tests.transforms._images import (
    assert_same_signature,
    assert_same_structure,
    binomial_tolerance,
    random_pil,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside lightly

# Nothing random: full-image crop at the image's size, flips and rotation by 90 degrees and
# grayscale at probability 1, no frequency augmentation.
DETERMINISTIC: dict[str, Any] = dict(
    input_size=32,
    min_scale=1.0,
    hf_prob=1.0,
    vf_prob=1.0,
    rr_prob=1.0,
    cj_prob=0.0,
    random_gray_scale=1.0,
    gaussian_blur=0.0,
    ampl_rescale_prob=0.0,
    phase_shift_prob=0.0,
    rand_freq_mask_prob=0.0,
    gmm_prob=0.0,
    normalize=None,
)
# lightly converts float -> PIL with truncation (k / 255 after an FFT round trip can become
# k - 1) and grayscale rounding may differ: one level.
LEVEL = 1 / 255 + 1e-5


@pytest.mark.parametrize("name", ["FDATransform", "FDAView1Transform", "FDAView2Transform"])
def test_signature_matches_lightly(name: str) -> None:
    assert_same_signature(getattr(fda_transform, name), getattr(lightly_fda, name))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": 32},
        {"input_size": 24, "normalize": None, "ampl_rescale_prob": 1.0, "gmm_prob": 1.0},
        {"input_size": 16, "phase_shift_prob": 1.0, "rand_freq_mask_prob": 1.0, "rr_prob": 0.5},
    ],
)
def test_structure_matches_lightly(kwargs: dict[str, Any]) -> None:
    image = random_pil(40)
    ours = fda_transform.FDATransform(
        fda_transform.FDAView1Transform(**kwargs), fda_transform.FDAView2Transform(**kwargs)
    )
    theirs = lightly_fda.FDATransform(
        lightly_fda.FDAView1Transform(**kwargs), lightly_fda.FDAView2Transform(**kwargs)
    )(image)
    assert_same_structure(ours(image), theirs)
    assert_same_structure(ours(F.pil_to_tensor(image)), theirs)


def test_default_views() -> None:
    transform = fda_transform.FDATransform()
    view_1, view_2 = transform.transforms
    assert [p for _, p in view_1.frequency.transforms] == [0.2, 0.2, 0.5, 0.2]  # type: ignore[attr-defined]
    assert [p for _, p in view_2.frequency.transforms] == [0.2, 0.2, 0.5, 0.0]  # type: ignore[attr-defined]
    assert view_1.augment_spec == ViewSpec(  # type: ignore[attr-defined]
        crop_size=None, cj_bright=0.4, cj_contrast=0.4, cj_sat=0.2, cj_hue=0.1, blur_prob=1.0
    )
    assert view_2.augment_spec.blur_prob == 0.1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="has no ViewSpec"):
        transform.view_specs  # noqa: B018


@pytest.mark.parametrize("view", ["FDAView1Transform", "FDAView2Transform"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}},
        {"solarization_prob": 1.0},
        # Halving every amplitude halves the image (stays in range, so lightly agrees).
        {"ampl_rescale_prob": 1.0, "ampl_rescale_range": (0.5, 0.500001)},
    ],
)
def test_values_equal_lightly_when_nothing_is_random(view: str, extra: dict[str, Any]) -> None:
    args = {**DETERMINISTIC, **extra}
    image = random_pil(32)
    ours = getattr(fda_transform, view)(**args)(image)
    theirs = getattr(lightly_fda, view)(**args)(image).as_subclass(torch.Tensor)
    std = min(args["normalize"]["std"]) if args["normalize"] else 1.0
    levels = 2 if "solarization_prob" in extra else 1  # solarization can double a difference
    torch.testing.assert_close(ours, theirs, atol=levels * LEVEL / std, rtol=0)


def test_out_of_range_pixels_are_clamped() -> None:
    # Amplitudes x 1.5 push bright pixels above 1: clamped (lightly wraps them to dark ones).
    image = random_pil(32)
    no_gray = {**DETERMINISTIC, "random_gray_scale": 0.0}  # grayscale would mix the clamps
    plain = fda_transform.FDAView1Transform(**no_gray)(image)
    args = {**no_gray, "ampl_rescale_prob": 1.0, "ampl_rescale_range": (1.5, 1.5)}
    brightened = fda_transform.FDAView1Transform(**args)(image)
    torch.testing.assert_close(brightened, (1.5 * plain).clamp(0, 1), atol=LEVEL, rtol=0)
    assert (brightened == 1.0).float().mean() > 0.2


@pytest.mark.parametrize(
    ("prob_name", "settings"),
    [
        ("ampl_rescale_prob", {"ampl_rescale_range": (0.5, 0.5)}),
        ("phase_shift_prob", {"phase_shift_range": (math.pi, math.pi)}),
        ("rand_freq_mask_prob", {"rand_freq_mask_range": (1.0, 1.0)}),
        ("gmm_prob", {"gmm_num_gaussians": 20, "gmm_std_range": (3.0, 5.0)}),
    ],
)
def test_each_frequency_augmentation_fires_with_its_probability(
    prob_name: str, settings: dict[str, Any]
) -> None:
    # Each setting changes the image far beyond rounding (x 0.5, negation -> black,
    # mean colour only, strong attenuation), so "changed" counts the firings.
    torch.manual_seed(0)
    image = random_pil(32)
    plain = fda_transform.FDAView2Transform(**DETERMINISTIC)(image)
    p, n = 0.3, 300
    view = fda_transform.FDAView2Transform(**{**DETERMINISTIC, prob_name: p, **settings})
    changed = sum(bool((view(image) - plain).abs().max() > 3 * LEVEL) for _ in range(n))
    assert abs(changed / n - p) <= binomial_tolerance(p, n)


def test_bad_probability() -> None:
    with pytest.raises(ValueError, match=r"gmm_prob must be in \[0, 1\], got 1.5"):
        fda_transform.FDAView1Transform(gmm_prob=1.5)
