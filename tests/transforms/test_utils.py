from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pytest

from fastssl.transforms.dino_transform import DINOViewTransform
from fastssl.transforms.multi_view_transform import ViewTransform
from fastssl.transforms.simclr_transform import SimCLRViewTransform
from fastssl.transforms.utils import lightly_arguments
from fastssl.transforms.vicreg_transform import VICRegViewTransform
from fastssl.transforms.view_spec import ViewSpec


class _Forwarder:
    """Records what ``lightly_arguments`` makes of a real ``__init__``'s ``locals()``."""

    def __init__(
        self,
        input_size: int = 32,
        hf_prob: float = 0.5,
        solarize_prob: float = 0.1,
        n_views: int = 2,
        *,
        exclude: Collection[str] = (),
        rename: Mapping[str, str] | None = None,
    ) -> None:
        # The call sits inside a ``super()`` call, so locals() holds ``__class__`` too.
        super().__init__()
        self.arguments = lightly_arguments(
            {k: v for k, v in locals().items() if k not in ("exclude", "rename")},
            exclude=exclude,
            rename=rename,
        )


def test_drops_self_and_class_cell_and_keeps_argument_order() -> None:
    arguments = _Forwarder(input_size=48).arguments
    assert list(arguments) == ["input_size", "hf_prob", "solarize_prob", "n_views"]
    assert arguments == {"input_size": 48, "hf_prob": 0.5, "solarize_prob": 0.1, "n_views": 2}


@pytest.mark.parametrize(
    ("exclude", "rename", "expected"),
    [
        (("n_views",), None, {"input_size": 32, "hf_prob": 0.5, "solarize_prob": 0.1}),
        (
            ["n_views", "hf_prob"],
            {"solarize_prob": "solarization_prob"},
            {"input_size": 32, "solarization_prob": 0.1},
        ),
        (
            (),
            {"input_size": "crop_size", "n_views": "views"},
            {"crop_size": 32, "hf_prob": 0.5, "solarize_prob": 0.1, "views": 2},
        ),
    ],
)
def test_exclude_and_rename(
    exclude: Collection[str], rename: Mapping[str, str] | None, expected: dict[str, Any]
) -> None:
    arguments = _Forwarder(exclude=exclude, rename=rename).arguments
    assert arguments == expected
    assert list(arguments) == list(expected)  # renamed keys stay in place


@pytest.mark.parametrize(
    ("exclude", "rename", "message"),
    [
        (("n_view",), None, "['n_view'] that are not among the arguments"),
        ((), {"hf": "hf_prob"}, "['hf'] that are not among the arguments"),
        (("n_views",), {"n_views": "views"}, "['n_views'] both excluded and renamed"),
        ((), {"input_size": "hf_prob"}, "two arguments are forwarded as 'hf_prob'"),
    ],
)
def test_wrong_keys_fail_loudly(
    exclude: Collection[str], rename: Mapping[str, str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _Forwarder(exclude=exclude, rename=rename)


def test_returns_a_new_dict() -> None:
    arguments = {"self": None, "input_size": 32}
    forwarded = lightly_arguments(arguments)
    forwarded["input_size"] = 64
    assert arguments == {"self": None, "input_size": 32}


def test_forwarding_a_name_the_callee_lacks_is_a_type_error() -> None:
    # A local bound before the call is forwarded too; the callee rejects it.
    with pytest.raises(TypeError, match="n_views"):
        ViewSpec.from_lightly_args(**lightly_arguments({"input_size": 32, "n_views": 2}))


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (
            SimCLRViewTransform(input_size=48, cj_strength=0.5, rr_prob=0.3, normalize=None),
            ViewSpec.from_lightly_args(input_size=48, cj_strength=0.5, rr_prob=0.3, normalize=None),
        ),
        (  # renamed: solarize_prob -> solarization_prob
            VICRegViewTransform(input_size=48, solarize_prob=0.7),
            ViewSpec.from_lightly_args(
                input_size=48,
                cj_strength=0.5,
                cj_sat=0.4,
                solarization_prob=0.7,
                sigmas=(0.2, 2),
            ),
        ),
        (  # renamed crop_size -> input_size, crop_scale excluded and split
            DINOViewTransform(crop_size=48, crop_scale=(0.2, 0.9), solarization_prob=0.0),
            ViewSpec.from_lightly_args(
                input_size=48,
                min_scale=0.2,
                max_scale=0.9,
                interpolation="bicubic",
                cj_strength=0.5,
                cj_sat=0.4,
                gaussian_blur=1.0,
            ),
        ),
    ],
)
def test_forwarded_views_match_explicit_keywords(view: ViewTransform, expected: ViewSpec) -> None:
    assert view.view_spec == expected
