"""The typed configuration of ``fastssl pretrain``: one dataclass per section of a recipe.

A recipe (``pipelines/<method>.yaml``) is YAML with the sections below; every value can be
overridden from the command line with ``--set section.key=value`` (the value is parsed as
YAML, then checked against the field's type). An unknown key or a value of the wrong type
is a :class:`ConfigError` that names the key, suggests the closest known key and says what
is allowed.

Example:
    >>> config = from_dict({"method": "simclr", "data": {"batch_size": 512}})
    >>> config = apply_overrides(config, ["optimizer.lr=0.3", "trainer.max_steps=100"])
    >>> config.data.batch_size, config.optimizer.lr, config.trainer.max_steps
    (512, 0.3, 100)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

OptimizerName = Literal["sgd", "lars", "adamw"]
LrScaling = Literal["linear", "sqrt", "none"]
Precision = Literal["32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
BackendName = Literal["auto", "torch", "dali", "ffcv"]
LoggerName = Literal["csv", "tensorboard", "wandb"]


class ConfigError(ValueError):
    """A recipe or an override names an unknown key or holds a value of the wrong type."""


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    # image folder, `fastssl shards` folder, FFCV .beton, or any WebDataset tars: a folder of
    # them, a .tar, a .txt list, a brace pattern, http(s)://, s3://, pipe:CMD URLs
    path: str = ""
    backend: BackendName = "auto"  # data engine (see fastssl.data.loader.make_loader)
    input_size: int = 224  # resolution of the global views; also the method's input_size
    batch_size: int = 256  # GLOBAL batch over all processes (split evenly across them)
    num_workers: int | None = None  # loader processes per training process (None: all cores)
    shuffle: bool = True  # seeded reshuffle every epoch
    # WebDataset tars: where a sample's class index is ("cls": the .cls member; "json:FIELD";
    # "none"); only kNN / linear evaluation and the profiler read targets
    label_key: str = "cls"
    # WebDataset streams: draw shards at random with replacement instead of one exact pass
    # (for remote data whose counts are not worth a scan); needs num_samples
    resampled: bool = False
    num_samples: int | None = None  # the epoch length in resampled mode (all processes)


@dataclass
class OptimizerConfig:
    """The optimizer; ``None`` fields take the method's paper defaults."""

    name: OptimizerName | None = None
    lr: float | None = None  # base learning rate for a batch of `reference_batch_size`
    reference_batch_size: int | None = None
    lr_scaling: LrScaling | None = None  # lr * (global batch / reference) or its sqrt
    weight_decay: float | None = None
    momentum: float | None = None  # SGD / LARS
    betas: tuple[float, float] | None = None  # AdamW
    exclude_norm_and_bias: bool = True  # no weight decay (and no LARS scaling) on them
    # Arguments of the optimizer class (e.g. LARS' trust_coefficient) or engine settings
    # (fastssl.train.optim.ENGINE_EXTRAS: weight_decay_end, final_lr, clip_grad_norm, ...);
    # merged over the method's, KEY: null unsets one of the method's.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """Per-step learning-rate schedule: linear warm-up, then cosine decay."""

    warmup_epochs: float | None = None  # None: the method's default
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    # lr at the last step, as a fraction of the peak lr (None: the method's
    # optimizer.extra.final_lr / lr, or 0)
    end_factor: float | None = None
    # lr the warm-up ramps up from, fraction of the peak (None: extra.start_lr / lr, or 0)
    warmup_start_factor: float | None = None


@dataclass
class TrainerConfig:
    """Run length, hardware, numerics, checkpoints and logging."""

    max_steps: int = -1  # optimizer steps (-1: bounded by max_epochs)
    max_epochs: int | None = 100
    max_time: str | None = None  # "DD:HH:MM:SS"; stops early (the schedule is not shortened)
    accelerator: Accelerator = "auto"
    devices: int = 1  # processes per node
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning strategy ("ddp" when more than one process)
    precision: Precision = "32"
    compile: bool | None = None  # torch.compile the backbone (None: on for GPUs, off on CPU)
    channels_last: bool = False  # NHWC memory format for convolutional backbones
    # Convolutions whose output has at most 4 positions (a ResNet's last stages on small
    # images) as exact matrix products: fastssl.models.small_conv (None: on for CPUs,
    # where oneDNN is slow on such maps; off for GPUs)
    matmul_small_convs: bool | None = None
    gradient_clip: float | None = None  # max gradient norm (None: the method's clip_grad_norm)
    # Batches per optimizer step (the mean of their gradients): the effective batch is
    # data.batch_size x accumulate_grad_batches (the learning rate scales with it; steps,
    # max_steps and the schedules count optimizer steps)
    accumulate_grad_batches: int = 1
    checkpoint_every_n_steps: int = 1000  # rewrite OUT/last.ckpt every N optimizer steps
    keep_step_checkpoints: bool = False  # also keep OUT/step-<N>.ckpt copies
    log_every_n_steps: int = 50
    # collapse/std and collapse/effective_rank of the backbone's features of a training batch
    # every log_every_n_steps steps and on the last (fastssl.train.callbacks.CollapseMonitor)
    collapse_statistics: bool = True
    # Where metrics go besides OUT/metrics.csv (always written): "tensorboard" (OUT/tensorboard),
    # "wandb" (Weights & Biases, files under OUT/wandb; WANDB_MODE=offline needs no network;
    # pip install wandb) or "csv" (metrics.csv only)
    logger: LoggerName = "tensorboard"
    wandb_project: str = "fastssl"  # the W&B project of logger "wandb"
    wandb_name: str | None = None  # the W&B run name (None: the name of the out folder)
    seed: int = 0  # one seed: init, data order, augmentation, method randomness
    out: str = "runs/pretrain"  # output folder


@dataclass
class KNNConfig:
    """Online weighted-kNN accuracy (k=200, t=0.1) on a labeled folder at epoch ends."""

    train: str | None = None  # labeled image folder (class subfolders): the kNN bank
    val: str | None = None  # labeled image folder: the queries
    k: int = 200
    t: float = 0.1
    every_n_epochs: int = 1
    batch_size: int = 256


@dataclass
class LinearProbeConfig:
    """Online linear probe: a linear classifier on the backbone's detached features, trained
    alongside pretraining on a labeled folder, its top-1 accuracy measured at epoch ends."""

    train: str | None = None  # labeled image folder (class subfolders): the probe's data
    val: str | None = None  # labeled image folder: the accuracy's queries
    lr: float = 0.1  # the probe's SGD learning rate (momentum 0.9, no weight decay)
    every_n_epochs: int = 1  # evaluate every N epochs
    batch_size: int = 256  # labeled images per probe step (one step per training batch)


@dataclass
class PretrainConfig:
    """A whole pretraining recipe."""

    method: str = "simclr"  # registry name (fastssl.methods.list_methods()) or "module:Class"
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # backbone, hyper-parameters
    # Arguments of the method's view transform that replace the paper's, e.g.
    # {gaussian_blur: 0.0, min_scale: 0.2} for SimCLRTransform (both views of BYOL-style pairs).
    views: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    knn: KNNConfig = field(default_factory=KNNConfig)
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)


def _describe(hint: Any) -> str:
    """Human-readable form of a type hint, for error messages."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the type ``hint`` describes, or a ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        choices = typing.get_args(hint)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        text = str(value) if number else value  # precision 32 read from YAML as an int
        if text in choices:
            return text
    elif origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(
                _coerce(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif hint is Any:
        return value
    raise ConfigError(f"{key}: {value!r} is not allowed: expected {_describe(hint)}")


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {(section + '.' if section else '') + close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r}{hint}: allowed keys are {', '.join(sorted(known))}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    """An instance of dataclass ``cls`` from a mapping, every field type-checked."""
    if not isinstance(values, dict):
        where = prefix or "the recipe"
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown_key(full, names)
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, f"{full}.")
        else:
            kwargs[key] = _coerce(value, hint, full)
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> PretrainConfig:
    """Builds a config from a (parsed YAML) mapping; missing keys keep their defaults.

    Raises:
        ConfigError: For an unknown key or a value of the wrong type.
    """
    config: PretrainConfig = _build(PretrainConfig, values, "")
    return config


def load_config(path: str | os.PathLike[str]) -> PretrainConfig:
    """Reads a YAML recipe.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ConfigError: For an unknown key or a value of the wrong type (prefixed by the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    try:
        return from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def apply_overrides(
    config: PretrainConfig, overrides: list[str], values: dict[str, Any] | None = None
) -> PretrainConfig:
    """Returns a copy of ``config`` with ``values`` then ``key.sub=value`` overrides applied.

    Strings in ``overrides`` are parsed as YAML (``0.1``, ``true``, ``null``,
    ``[0.9, 0.95]``); ``values`` maps keys to already-typed values (the CLI flags). Both
    are checked against the field's type; keys under ``method_kwargs``, ``views`` and
    ``optimizer.extra`` are free-form here (the method checks them when it builds).

    Raises:
        ConfigError: For a malformed override, an unknown key or a wrong type.
    """
    pairs = list((values or {}).items())
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected key.sub=value")
        pairs.append((key.strip(), yaml.safe_load(text) if text.strip() else ""))
    tree = to_dict(config)
    for key, value in pairs:
        parts = key.split(".")
        node: Any = tree
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                sections = [k for k, v in node.items() if isinstance(v, dict)]
                raise _unknown_key(".".join(parts[: i + 1]), sections)
            node = node[part]
        free_form = parts[0] in ("method_kwargs", "views") or parts[:2] == ["optimizer", "extra"]
        if parts[-1] not in node and not (free_form and len(parts) > 1):
            raise _unknown_key(key, list(node))
        node[parts[-1]] = value
    return from_dict(tree)


def to_dict(config: PretrainConfig) -> dict[str, Any]:
    """The config as plain (YAML / JSON-serialisable) values; tuples become lists."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(config))
    return result


__all__ = [
    "ConfigError",
    "DataConfig",
    "KNNConfig",
    "LinearProbeConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "ScheduleConfig",
    "TrainerConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "to_dict",
]
