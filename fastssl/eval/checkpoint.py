"""Loads the backbone of a ``fastssl pretrain`` checkpoint for evaluation and export.

The checkpoint is a Lightning checkpoint: a dict whose ``"hyper_parameters"`` hold
``"method"`` (a :mod:`fastssl.methods` registry name) and ``"method_kwargs"`` (the method's
constructor arguments: ``backbone``, ``input_size``, ...), and whose ``"state_dict"`` holds
the method's weights under the prefix ``"method."``. The method is rebuilt from its name and
arguments (no pickled modules are trusted for the architecture; the file is read weights
only, by :mod:`fastssl.checkpoint`, the one reader of checkpoints) and its weights are loaded
strictly, so a checkpoint that does not match its own recipe is an error, not a silently
half-random backbone.

Example:
    >>> backbone, feature_dim, input_size = load_backbone("last.ckpt")  # doctest: +SKIP
    >>> features = backbone(images)  # (B, feature_dim)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastssl.checkpoint import (
    STATE_PREFIX,
    CheckpointError,
    CheckpointNotFoundError,
    method_state_dict,
    rebuild_method,
)
from fastssl.checkpoint import read_checkpoint as _read_file
from fastssl.methods.base import Method


@dataclass
class CheckpointInfo:
    """What a training checkpoint says about its model.

    Attributes:
        path: The checkpoint file.
        method: Registry name of the method (e.g. ``"simclr"``).
        method_kwargs: Constructor arguments of the method (``backbone``, ``input_size``, ...).
        state_dict: The method's own weights (the ``"method."`` prefix removed).
        default_backbone: The method's default backbone, used when ``method_kwargs``
            names none.
    """

    path: str
    method: str
    method_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    default_backbone: str | None = None

    @property
    def backbone_name(self) -> str:
        """The backbone's name in the recipe (``"?"`` when it was not a name)."""
        backbone = self.method_kwargs.get("backbone", self.default_backbone)
        return backbone if isinstance(backbone, str) else "?"


def _info(checkpoint: dict[str, Any], name: str) -> CheckpointInfo:
    hparams = checkpoint["hyper_parameters"]
    return CheckpointInfo(
        name, hparams["method"], dict(hparams.get("method_kwargs", {})),
        method_state_dict(checkpoint),
    )  # fmt: skip


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Reads a training checkpoint without building the model.

    The file is read by :func:`fastssl.checkpoint.read_checkpoint`: weights only, so a
    file that would unpickle arbitrary Python objects is refused before any of it runs.

    Args:
        path: A Lightning checkpoint written by ``fastssl pretrain``.

    Returns:
        The method name, its arguments and its weights.

    Raises:
        CheckpointError: When the file is missing, refused, unreadable, or lacks the fields
            above; the message names the file.
    """
    return _info(_read_file(path), os.fspath(path))


def load_method(path: str | os.PathLike[str]) -> tuple[Method, CheckpointInfo]:
    """Rebuilds the method of a checkpoint and loads its weights strictly.

    Returns:
        ``(method in eval mode, checkpoint info)``.

    Raises:
        CheckpointError: For a file not in the format, an unknown method, arguments the
            method does not accept, or weights that do not fit the rebuilt method.
    """
    name = os.fspath(path)
    checkpoint = _read_file(name)
    model = rebuild_method(checkpoint, name)
    info = _info(checkpoint, name)
    parameter = inspect.signature(type(model)).parameters.get("backbone")
    if parameter is not None and isinstance(parameter.default, str):
        info.default_backbone = parameter.default
    return model, info


def check_finite(module: nn.Module, checkpoint: str) -> None:
    """Refuses a network whose weights or buffers (BatchNorm statistics) hold NaN or inf.

    Such a backbone (from a diverged run) gives NaN, infinite or constant features, and
    any accuracy computed from them is chance, not a measurement.

    Raises:
        CheckpointError: Naming ``checkpoint`` and the first offending tensors.
    """
    bad = [
        key
        for key, value in module.state_dict().items()
        if value.is_floating_point() and not bool(value.isfinite().all())
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {checkpoint!r}: {len(bad)} backbone tensors hold NaN or infinite "
            f"values (e.g. {', '.join(bad[:3])}), from a diverged run; its features would "
            "be meaningless: evaluate an earlier checkpoint or train again"
        )


#: ``--network`` choices: the method's own choice, the trained backbone, its EMA copy.
NETWORKS = ("auto", "online", "ema")


def select_backbone(model: Method, network: str = "auto") -> tuple[nn.Module, str]:
    """The network of ``model`` to evaluate or export.

    Args:
        model: A rebuilt method.
        network: ``"auto"``: the network the method's paper evaluates
            (:attr:`~fastssl.methods.base.Method.eval_network`: e.g. DINO's teacher, MSN's
            target, BYOL's online backbone); ``"online"``: the trained backbone;
            ``"ema"``: its exponential-moving-average copy (BYOL's target, DINO's teacher,
            MoCo's key encoder, ...).

    Returns:
        ``(backbone, "online" or "ema")``.

    Raises:
        ValueError: For an unknown ``network``, or ``"ema"`` for a method without an EMA copy.
    """
    if network not in NETWORKS:
        raise ValueError(f"--network {network!r} is unknown: choose one of {', '.join(NETWORKS)}")
    chosen = model.eval_network if network == "auto" else network
    if chosen == "online":
        return model.backbone, "online"
    ema = model.ema_backbone()
    if ema is None:
        raise ValueError(
            f"--network ema: method {model.name or type(model).__name__!r} keeps no EMA copy "
            "of its backbone; use --network online"
        )
    return ema, "ema"


def load_backbone(
    path: str | os.PathLike[str], network: str = "auto"
) -> tuple[nn.Module, int, int]:
    """The pretrained backbone of a checkpoint, ready for feature extraction.

    Args:
        path: A Lightning checkpoint written by ``fastssl pretrain``.
        network: Which network (see :func:`select_backbone`): by default the one the
            method's paper evaluates (DINO: the teacher).

    Returns:
        ``(backbone in eval mode, feature dimension D, training input size in pixels)``;
        the backbone maps images (B, 3, H, W) to features (B, D).

    Raises:
        CheckpointError: See :func:`load_method`.
        ValueError: See :func:`select_backbone`.

    Example:
        >>> backbone, dim, size = load_backbone("last.ckpt")  # doctest: +SKIP
        >>> backbone(torch.randn(2, 3, size, size)).shape  # doctest: +SKIP
        torch.Size([2, 512])
    """
    model, _ = load_method(path)
    backbone, _ = select_backbone(model, network)
    return backbone.eval(), int(model.feature_dim), int(model.input_size)


__all__ = [
    "NETWORKS",
    "STATE_PREFIX",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "check_finite",
    "load_backbone",
    "load_method",
    "read_checkpoint",
    "select_backbone",
]
