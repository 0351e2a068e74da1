"""``build_views``: a method's view transform with a recipe's ``views:`` overrides;
``OptimizerDefaults.lars``: the LARS recipe of the large-batch papers."""

from __future__ import annotations

from typing import Any

import pytest

from fastssl.methods import create
from fastssl.methods.base import OptimizerDefaults, build_views
from fastssl.transforms import MAETransform, SimCLRTransform
from tests.methods._two_view_steps import tiny_cnn


@pytest.mark.parametrize(
    ("overrides", "blur", "scale", "cj"),
    [
        ({}, 0.5, (0.08, 1.0), 0.8),
        ({"gaussian_blur": 0.0}, 0.0, (0.08, 1.0), 0.8),
        ({"min_scale": 0.3, "cj_prob": 0.5}, 0.5, (0.3, 1.0), 0.5),
    ],
)
def test_overrides_replace_the_paper_views(
    overrides: dict[str, float], blur: float, scale: tuple[float, float], cj: float
) -> None:
    transform = build_views(SimCLRTransform, overrides, {"input_size": 24})
    assert len(transform.view_specs) == 2
    for spec in transform.view_specs:
        assert (spec.crop_size, spec.blur_prob, spec.crop_scale, spec.cj_prob) == (
            24,
            blur,
            scale,
            cj,
        )


def test_overrides_replace_method_defaults_but_not_derived_arguments() -> None:
    assert build_views(MAETransform, {}, {"input_size": 16}, {"min_scale": 0.67}).view_specs[
        0
    ].crop_scale == (0.67, 1.0)
    chosen = build_views(MAETransform, {"min_scale": 0.5}, {"input_size": 16}, {"min_scale": 0.67})
    assert chosen.view_specs[0].crop_scale == (0.5, 1.0)
    with pytest.raises(ValueError, match=r"views\.input_size: .*data\.input_size"):
        build_views(MAETransform, {"input_size": 8}, {"input_size": 16})


def test_unknown_argument_lists_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"views\.blur: SimCLRTransform has no .*gaussian_blur"):
        build_views(SimCLRTransform, {"blur": 0.0}, {"input_size": 16})


@pytest.mark.parametrize("name", ["byol", "barlowtwins", "tico"])
def test_pairs_get_the_overrides_on_both_views(name: str) -> None:
    model = create(name, backbone=tiny_cnn(), input_size=16)
    first, second = model.default_transform().view_specs
    assert first.blur_prob != second.blur_prob  # the paper's asymmetric pair
    first, second = model.default_transform(gaussian_blur=0.0, min_scale=0.4).view_specs
    assert first.blur_prob == second.blur_prob == 0.0
    assert first.crop_scale == second.crop_scale == (0.4, 1.0)
    assert first.solarize_prob != second.solarize_prob  # what was not overridden stays


_LARS_FIELDS = ("lr", "reference_batch_size", "lr_scaling", "weight_decay", "momentum")


@pytest.mark.parametrize(
    ("kwargs", "fields", "warmup_epochs", "extra"),
    [
        ({"lr": 0.2, "weight_decay": 1.5e-6}, (0.2, 256, "linear", 1.5e-6, 0.9), 10, {}),
        (
            {
                "lr": 4.8,
                "weight_decay": 1e-6,
                "reference_batch_size": 4096,
                "lr_scaling": "sqrt",
                "momentum": 0.8,
                "warmup_epochs": 3,
                "trust_coefficient": 0.02,
                "lr_biases": 0.0048,
                "final_lr": 0.0,
            },
            (4.8, 4096, "sqrt", 1e-6, 0.8),
            3,
            {"lr_biases": 0.0048, "final_lr": 0.0},
        ),
    ],
)
def test_lars_builds_the_recipe_it_names(
    kwargs: dict[str, Any], fields: tuple[Any, ...], warmup_epochs: int, extra: dict[str, Any]
) -> None:
    built = OptimizerDefaults.lars(**kwargs)
    assert built.name == "lars"
    assert tuple(getattr(built, f) for f in _LARS_FIELDS) == fields
    assert built.warmup_epochs == warmup_epochs
    assert built.betas == OptimizerDefaults().betas  # not a LARS setting: left at its default
    trust = kwargs.get("trust_coefficient", 0.001)
    # The further entries first, in the order given, then the trust coefficient.
    assert list(built.extra.items()) == [*extra.items(), ("trust_coefficient", trust)]


@pytest.mark.parametrize("name", ["byol", "dino", "moco", "msn", "tico"])
def test_momentum_copies_have_no_drop_path(name: str) -> None:
    timm = pytest.importorskip("timm")
    model = create(name, backbone="timm:vit_tiny_patch16_224(drop_path_rate=0.3)", input_size=32)
    teacher = model.ema_backbone()
    assert teacher is not None and teacher is not model.backbone
    probs = lambda m: [d.drop_prob for d in m.modules() if isinstance(d, timm.layers.DropPath)]  # noqa: E731
    assert max(probs(model.backbone)) == pytest.approx(0.3)  # the student keeps it
    assert probs(teacher) and set(probs(teacher)) == {0.0}
