"""The optimizer recipe of a run: parameter groups, learning-rate scaling, the optimizer.

A method declares its paper's optimizer as :class:`~fastssl.methods.base.OptimizerDefaults`
(name, learning rate at a reference batch, weight decay, momentum or betas, and
``extra`` settings); a recipe's ``optimizer`` section overrides them
(:func:`merge_optimizer`). :class:`~fastssl.train.module.PretrainModule` then builds the
optimizer from :func:`param_groups` (no weight decay on biases, 1-D parameters and
normalisation layers) with the learning rate scaled to the global batch
(:func:`scaled_lr`), and applies the ``extra`` settings the engine owns
(:data:`ENGINE_EXTRAS`: weight-decay schedule, learning-rate ends, clipping, ...).

Example:
    >>> from fastssl.methods.base import OptimizerDefaults
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    >>> defaults = OptimizerDefaults(name="sgd", lr=0.1, weight_decay=1e-4)
    >>> opt = build_optimizer(param_groups([model], 1e-4), defaults, scaled_lr(0.1, 512, 256))
    >>> [group["weight_decay"] for group in opt.param_groups]
    [0.0001, 0.0]
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from fastssl.methods.base import OptimizerDefaults
from fastssl.models.utils import NORM_LAYERS
from fastssl.utils.lars import LARS

__all__ = [
    "ENGINE_EXTRAS",
    "NORM_LAYERS",
    "build_optimizer",
    "check_extras",
    "merge_optimizer",
    "param_groups",
    "scaled_lr",
]


def scaled_lr(
    base_lr: float, batch_size: int, reference_batch_size: int, scaling: str = "linear"
) -> float:
    """Learning rate for a global batch of ``batch_size``.

    ``linear``: ``base_lr * batch_size / reference_batch_size`` (Goyal et al. 2017);
    ``sqrt``: ``base_lr * sqrt(batch_size / reference_batch_size)`` (LightlySSL's
    benchmarks for LARS / AdamW methods); ``none``: ``base_lr``.

    Example:
        >>> scaled_lr(0.3, 512, 256, "linear"), scaled_lr(0.3, 1024, 256, "sqrt")
        (0.6, 0.6)

    Raises:
        ValueError: For a non-positive batch size or an unknown scaling.
    """
    if batch_size < 1 or reference_batch_size < 1:
        raise ValueError(
            f"batch sizes must be >= 1, got batch_size={batch_size} and "
            f"reference_batch_size={reference_batch_size}"
        )
    ratio = batch_size / reference_batch_size
    if scaling == "linear":
        return base_lr * ratio
    if scaling == "sqrt":
        return base_lr * math.sqrt(ratio)
    if scaling == "none":
        return base_lr
    raise ValueError(f"lr_scaling={scaling!r} is unknown: choose one of linear, sqrt, none")


def param_groups(
    modules: Iterable[nn.Module], weight_decay: float, exclude_norm_and_bias: bool = True
) -> list[dict[str, Any]]:
    """Splits the trainable parameters of ``modules`` into decayed and not-decayed groups.

    Biases, 1-D parameters and all parameters of normalisation layers go to the group with
    ``weight_decay=0`` (SimCLR, BYOL and most later methods exclude them). A parameter
    shared by several modules appears once.

    Returns:
        ``[{"params": decayed, "weight_decay": wd}, {"params": others, "weight_decay": 0}]``
        without empty groups.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            is_norm = isinstance(module, NORM_LAYERS)  # the rule of get_weight_decay_parameters
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                plain = is_norm or param.ndim <= 1 or name.endswith("bias")
                (no_decay if exclude_norm_and_bias and plain else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [group for group in groups if group["params"]]


#: ``optimizer.extra`` keys the engine applies itself. Every other key must be an argument
#: of the optimizer class (e.g. LARS' ``trust_coefficient``); anything else is an error.
ENGINE_EXTRAS: dict[str, str] = {
    "lr_biases": "learning rate of biases and norms at the reference batch, scaled like lr "
    "(Barlow Twins)",
    "weight_decay_end": "weight decay at the last step, reached along a cosine from "
    "weight_decay (DINO, MSN); null keeps it constant",
    "final_lr": "learning rate at the last step at the reference batch, scaled like lr; used "
    "when schedule.end_factor is unset (DINO, MSN)",
    "start_lr": "learning rate the warm-up starts from at the reference batch, scaled like lr; "
    "used when schedule.warmup_start_factor is unset (MSN)",
    "clip_grad_norm": "gradient-norm clipping when trainer.gradient_clip is unset (DINO)",
    "fix_predictor_lr": "the method's predictor keeps the peak learning rate: no warm-up, no "
    "decay (SimSiam)",
    "sqrt_scaling_lr": "learning rate per sqrt(image) used when lr_scaling is sqrt and "
    "optimizer.lr is unset (SimCLR: 0.075 x sqrt(batch))",
    "note": "free text on the paper's recipe (not applied)",
}


def check_extras(defaults: OptimizerDefaults, cls: type) -> None:
    """Raises a ValueError naming an ``extra`` key neither ``cls`` nor the engine takes.

    Keys set to None (``--set optimizer.extra.KEY=null``) are unset and always allowed.
    """
    accepted = set(inspect.signature(cls).parameters) - {"params", "lr"}
    for key, value in defaults.extra.items():
        if value is not None and key not in accepted and key not in ENGINE_EXTRAS:
            raise ValueError(
                f"optimizer.extra.{key} is neither an argument of {cls.__name__} "
                f"({', '.join(sorted(accepted))}) nor an engine setting "
                f"({', '.join(ENGINE_EXTRAS)}): remove it or fix its name"
            )


def build_optimizer(
    groups: list[dict[str, Any]], defaults: OptimizerDefaults, lr: float
) -> torch.optim.Optimizer:
    """The optimizer ``defaults.name`` over ``groups`` at learning rate ``lr``.

    ``defaults.extra["lr_biases"]`` (Barlow Twins) is the learning rate of the biases and
    normalisation parameters (the ``no_decay`` group of :func:`param_groups`) for a batch
    of ``reference_batch_size``; it is scaled to the run's batch as ``lr`` is, i.e. the
    group gets ``lr * lr_biases / defaults.lr``.

    Raises:
        ValueError: For an unknown optimizer name, an ``extra`` key that is neither an
            argument of the optimizer nor in :data:`ENGINE_EXTRAS`, or ``lr_biases``
            without a ``no_decay`` group (``optimizer.exclude_norm_and_bias`` off).
    """
    classes: dict[str, Any] = {
        "sgd": torch.optim.SGD,
        "lars": LARS,
        "adamw": torch.optim.AdamW,
    }
    if defaults.name not in classes:
        raise ValueError(f"optimizer {defaults.name!r} is unknown: choose one of sgd, lars, adamw")
    cls = classes[defaults.name]
    check_extras(defaults, cls)
    # The engine's own keys (ENGINE_EXTRAS) are applied by PretrainModule, not passed here.
    accepted = inspect.signature(cls).parameters
    kwargs = {
        k: v
        for k, v in defaults.extra.items()
        if k in accepted and k not in ("params", "lr") and v is not None
    }
    if defaults.name == "adamw":
        kwargs.setdefault("betas", defaults.betas)
    else:
        kwargs.setdefault("momentum", defaults.momentum)
    lr_biases = defaults.extra.get("lr_biases")
    if lr_biases is not None:
        no_decay = [group for group in groups if group.get("name") == "no_decay"]
        if not no_decay:
            raise ValueError(
                "optimizer.extra.lr_biases sets the learning rate of biases and norms, which "
                "needs them in their own group: set optimizer.exclude_norm_and_bias=true or "
                "optimizer.extra.lr_biases=null"
            )
        for group in no_decay:
            group["lr"] = lr * float(lr_biases) / defaults.lr
    optimizer: torch.optim.Optimizer = cls(groups, lr=lr, **kwargs)
    return optimizer


def merge_optimizer(defaults: OptimizerDefaults, overrides: dict[str, Any]) -> OptimizerDefaults:
    """The method's optimizer defaults with the non-None ``overrides`` applied."""
    fields = {k: v for k, v in overrides.items() if v is not None and hasattr(defaults, k)}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    if "extra" in fields:
        fields["extra"] = {**defaults.extra, **fields["extra"]}
    merged: dict[str, Any] = {**defaults.__dict__, **fields}
    sqrt_lr = merged["extra"].get("sqrt_scaling_lr")
    if merged["lr_scaling"] == "sqrt" and "lr" not in fields and sqrt_lr is not None:
        # The paper's square-root rule, lr = sqrt_scaling_lr x sqrt(B), at the reference batch.
        merged["lr"] = float(sqrt_lr) * math.sqrt(merged["reference_batch_size"])
    return OptimizerDefaults(**merged)
