from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torchvision.transforms import v2

from fastssl.transforms.view_spec import ViewSpec, normalize_fields
from tests.transforms._images import (
    binomial_tolerance,
    crop_box,
    is_gray,
    is_hflipped,
    is_vflipped,
    rate,
    tagged_image,
)

# A spec that only crops, so that the tagged image's coordinates survive.
GEOMETRY_ONLY = dict(
    crop_size=64,
    hf_prob=0.0,
    cj_prob=0.0,
    gray_prob=0.0,
    blur_prob=0.0,
    normalize_mean=None,
    normalize_std=None,
)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("crop_size", 0, "None, an int > 0"),
        ("crop_size", (32, -1), "None, an int > 0"),
        ("crop_scale", (0.5, 0.2), "min <= max, both in (0.0, 1.0]"),
        ("crop_scale", (0.0, 1.0), "(0.0, 1.0]"),
        ("crop_scale", (0.1, 1.5), "(0.0, 1.0]"),
        ("crop_ratio", (2.0, 1.0), "min <= max"),
        ("interpolation", "lanczos", "one of ('nearest', 'bilinear', 'bicubic')"),
        ("hf_prob", 1.5, "a probability in [0, 1]"),
        ("vf_prob", -0.1, "a probability in [0, 1]"),
        ("gray_prob", 2, "a probability in [0, 1]"),
        ("solarize_prob", "0.5", "a probability in [0, 1]"),
        ("rr_degrees", -5, "None, a number >= 0 or a (min, max) pair"),
        ("rr_degrees", (30, 10), "min <= max"),
        ("cj_bright", -0.1, "a finite number >= 0"),
        ("cj_hue", 0.6, "a number in [0, 0.5]"),
        ("blur_sigmas", (0.0, 2.0), "(0.0, inf]"),
        ("blur_kernel_size", 4, "None (sized to sigma) or an odd int >= 1"),
        ("solarize_threshold", 300, "an int in [0, 256]"),
        ("normalize_std", (0.2, 0.0, 0.2), "3 numbers > 0"),
    ],
)
def test_validation_names_field_value_and_range(field: str, value: Any, allowed: str) -> None:
    with pytest.raises(ValueError) as info:
        ViewSpec(**{field: value})
    message = str(info.value)
    assert f"ViewSpec.{field} must be" in message
    assert allowed in message
    assert repr(value) in message


def test_mean_without_std_is_rejected() -> None:
    with pytest.raises(ValueError, match="normalize_std must be None only together"):
        ViewSpec(normalize_std=None)


def test_round_trip_through_dict_and_json() -> None:
    spec = ViewSpec(
        crop_size=(32, 48),
        crop_scale=(0.2, 0.9),
        rr_prob=0.3,
        rr_degrees=(-10.0, 15.0),
        blur_kernel_size=5,
        solarize_prob=0.2,
        interpolation="bicubic",
    )
    assert ViewSpec.from_dict(spec.to_dict()) == spec
    # JSON turns tuples into lists; from_dict turns them back.
    restored = ViewSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    assert hash(restored) == hash(spec)
    assert isinstance(restored.crop_scale, tuple)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['cj_strength'\]"):
        ViewSpec.from_dict({"cj_strength": 0.5})


def test_from_lightly_args_multiplies_strength() -> None:
    spec = ViewSpec.from_lightly_args(cj_strength=0.5, cj_bright=0.8, cj_hue=0.2, min_scale=0.3)
    assert spec.cj_bright == pytest.approx(0.4)
    assert spec.cj_hue == pytest.approx(0.1)
    assert spec.crop_scale == (0.3, 1.0)
    assert normalize_fields(None) == {"normalize_mean": None, "normalize_std": None}
    with pytest.raises(ValueError, match="keys 'mean' and 'std'"):
        normalize_fields({"mean": [0.5]})


def test_pipeline_is_uint8_until_the_float_conversion() -> None:
    spec = ViewSpec(crop_size=16, solarize_prob=0.5, rr_prob=0.5)
    ops = spec.build_torchvision().transforms
    names = [type(op).__name__ for op in ops]
    assert names[0] == "ToImage"
    to_dtype = names.index("ToDtype")
    assert names[to_dtype + 1] == "Normalize"
    assert names[1:to_dtype] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomRotate",
        "RandomApply",
        "RandomGrayscale",
        "GaussianBlur",
        "RandomSolarization",
    ]
    # Every op before ToDtype sees and returns uint8.
    seen = []

    def spy(image: torch.Tensor) -> torch.Tensor:
        seen.append(image.dtype)
        return image

    instrumented = v2.Compose(
        [op for pair in zip(ops[:to_dtype], [spy] * to_dtype, strict=True) for op in pair]
    )
    instrumented(tagged_image())
    assert seen[1:] == [torch.uint8] * (to_dtype - 1)


def test_zero_probabilities_leave_operations_out() -> None:
    names = [type(op).__name__ for op in ViewSpec(**GEOMETRY_ONLY).build_torchvision().transforms]
    assert names == ["ToImage", "RandomResizedCrop", "ToDtype", "function"]


@pytest.mark.parametrize("as_pil", [False, True])
def test_output_is_plain_float_tensor(as_pil: bool) -> None:
    image: Any = tagged_image()
    if as_pil:
        image = v2.functional.to_pil_image(image)
    out = ViewSpec(crop_size=(24, 32)).build_torchvision()(image)
    assert type(out) is torch.Tensor
    assert out.dtype == torch.float32
    assert out.shape == (3, 24, 32)


@pytest.mark.parametrize(
    ("scale", "ratio"), [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.3, 0.6), (0.5, 2.0))]
)
def test_crop_area_and_aspect_stay_in_range(
    scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    torch.manual_seed(0)
    view = ViewSpec(
        **{**GEOMETRY_ONLY, "crop_scale": scale, "crop_ratio": ratio}
    ).build_torchvision()
    image = tagged_image()
    boxes = [crop_box(view(image)) for _ in range(400)]
    areas = [area for area, _ in boxes]
    aspects = [aspect for _, aspect in boxes]
    # Integer crop sides: +-1 pixel on 64 gives ~0.035 of area and ~10 % of aspect.
    assert min(areas) >= scale[0] - 0.035 and max(areas) <= scale[1] + 0.035
    assert min(aspects) >= ratio[0] / 1.12 and max(aspects) <= ratio[1] * 1.12
    # ... and the whole range is used, so the test fails if the scale were ignored.
    assert min(areas) <= scale[0] + 0.06 and max(areas) >= scale[1] - 0.1


@pytest.mark.parametrize(
    ("field", "p", "predicate"),
    [
        ("hf_prob", 0.3, is_hflipped),
        ("vf_prob", 0.7, is_vflipped),
        ("gray_prob", 0.4, is_gray),
    ],
)
def test_random_rates_match_probability(field: str, p: float, predicate: Any) -> None:
    torch.manual_seed(1)
    n = 1500
    view = ViewSpec(**{**GEOMETRY_ONLY, field: p}).build_torchvision()
    # Tolerance: 4 binomial standard deviations (false failure ~6e-5).
    assert abs(rate(predicate, view, n) - p) <= binomial_tolerance(p, n)


def test_determinism_under_manual_seed() -> None:
    view = ViewSpec(crop_size=32, rr_prob=0.5, solarize_prob=0.5).build_torchvision()
    image = tagged_image()
    torch.manual_seed(3)
    first = [view(image) for _ in range(5)]
    torch.manual_seed(3)
    second = [view(image) for _ in range(5)]
    torch.manual_seed(4)
    other = [view(image) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
