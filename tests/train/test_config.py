from __future__ import annotations

from pathlib import Path

import pytest

from fastssl.train.config import (
    ConfigError,
    PretrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    to_dict,
)


def test_defaults_and_round_trip() -> None:
    config = from_dict({})
    assert config == PretrainConfig()
    assert from_dict(to_dict(config)) == config


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"trainer": {"max_step": 3}}, ["trainer.max_step", "did you mean 'trainer.max_steps'"]),
        ({"dta": {}}, ["'dta'", "did you mean 'data'", "allowed keys are"]),
        ({"optimizer": {"lrr": 0.1}}, ["optimizer.lrr", "'optimizer.lr'"]),
    ],
)
def test_unknown_key_names_key_and_suggests(values: dict, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(values)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"data": {"batch_size": "big"}}, ["data.batch_size", "'big'", "expected int"]),
        ({"data": {"batch_size": 2.5}}, ["data.batch_size", "2.5"]),
        ({"trainer": {"precision": "fp8"}}, ["trainer.precision", "one of", "'bf16-mixed'"]),
        ({"optimizer": {"name": "adam"}}, ["optimizer.name", "'adamw'", "'lars'"]),
        ({"trainer": {"compile": "yes"}}, ["trainer.compile", "bool or null"]),
        ({"optimizer": {"betas": [0.9]}}, ["optimizer.betas", "a list of 2 numbers"]),
        ({"data": 3}, ["data.", "expected a mapping"]),
    ],
)
def test_wrong_type_names_key_and_allowed(values: dict, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(values)
    for needle in needles:
        assert needle in str(info.value)


def test_values_are_coerced_to_field_types() -> None:
    config = from_dict(
        {
            "trainer": {"precision": 32, "max_epochs": 3.0},
            "optimizer": {"lr": "1e-3", "betas": [0.9, 0.95]},
        }
    )
    assert config.trainer.precision == "32"
    assert config.trainer.max_epochs == 3 and isinstance(config.trainer.max_epochs, int)
    assert config.optimizer.lr == pytest.approx(1e-3)
    assert config.optimizer.betas == (0.9, 0.95)


def test_overrides_parse_with_field_type() -> None:
    config = apply_overrides(
        PretrainConfig(),
        [
            "optimizer.lr=0.5",
            "trainer.compile=true",
            "trainer.max_epochs=null",
            "method_kwargs.backbone=resnet18",
            "method_kwargs.temperature=0.2",
            "views.gaussian_blur=0.0",
            "views.normalize={mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}",
            "optimizer.extra.trust_coefficient=0.002",
            "knn.train=/data/train",
        ],
        values={"data.batch_size": 64, "data.path": "/tmp/x: y"},
    )
    assert config.optimizer.lr == 0.5
    assert config.trainer.compile is True
    assert config.trainer.max_epochs is None
    assert config.method_kwargs == {"backbone": "resnet18", "temperature": 0.2}
    assert config.views == {
        "gaussian_blur": 0.0,
        "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3},
    }
    assert config.optimizer.extra == {"trust_coefficient": 0.002}
    assert config.data.batch_size == 64
    assert config.data.path == "/tmp/x: y"  # flag values are not re-parsed as YAML
    assert config.knn.train == "/data/train"


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("trainer.max_stepz=3", ["trainer.max_stepz", "'trainer.max_steps'"]),
        ("trainr.seed=1", ["'trainr'", "'trainer'"]),
        ("data.batch_size=abc", ["data.batch_size", "'abc'", "expected int"]),
        ("trainer.seed", ["expected key.sub=value"]),
        ("data.path.x=1", ["data.path", "allowed keys"]),
    ],
)
def test_bad_override(override: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(PretrainConfig(), [override])
    for needle in needles:
        assert needle in str(info.value)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("method: byol\ndata: {batch_size: 32}\n")
    assert load_config(good).data.batch_size == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {devics: 2}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'trainer\.devics'"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("override", "attribute", "expected"),
    [
        ("trainer.accumulate_grad_batches=4", ("trainer", "accumulate_grad_batches"), 4),
        ("trainer.logger=wandb", ("trainer", "logger"), "wandb"),
        ("trainer.logger=csv", ("trainer", "logger"), "csv"),
        ("trainer.wandb_project=mine", ("trainer", "wandb_project"), "mine"),
        ("linear.train=/data/train", ("linear", "train"), "/data/train"),
        ("linear.lr=0.05", ("linear", "lr"), 0.05),
        ("linear.every_n_epochs=5", ("linear", "every_n_epochs"), 5),
    ],
)
def test_accumulation_logger_and_probe_are_recipe_keys(
    override: str, attribute: tuple[str, str], expected: object
) -> None:
    """Gradient accumulation, the logger and the online linear probe are known keys (the
    accumulation was refused as an unknown key before)."""
    config = apply_overrides(PretrainConfig(), [override])
    section, key = attribute
    assert getattr(getattr(config, section), key) == expected
    assert from_dict(to_dict(config)) == config


def test_accumulation_logger_and_probe_defaults() -> None:
    trainer, linear = PretrainConfig().trainer, PretrainConfig().linear
    assert (trainer.accumulate_grad_batches, trainer.logger) == (1, "tensorboard")
    assert (linear.train, linear.val) == (None, None)  # the probe is off unless asked for


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("trainer.logger=mlflow", ["trainer.logger", "'csv'", "'tensorboard'", "'wandb'"]),
        ("trainer.accumulate_grad_batches=1.5", ["trainer.accumulate_grad_batches", "int"]),
        ("linear.trian=/x", ["linear.trian", "'linear.train'"]),
    ],
)
def test_bad_accumulation_logger_and_probe_values_name_the_key(
    override: str, needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(PretrainConfig(), [override])
    for needle in needles:
        assert needle in str(info.value)
