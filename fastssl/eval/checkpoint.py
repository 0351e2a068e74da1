"""Loads the backbone of a ``fastssl pretrain`` checkpoint for evaluation and export.

The checkpoint is a Lightning checkpoint: a dict whose ``"hyper_parameters"`` hold
``"method"`` (a :mod:`fastssl.methods` registry name) and ``"method_kwargs"`` (the method's
constructor arguments: ``backbone``, ``input_size``, ...), and whose ``"state_dict"`` holds
the method's weights under the prefix ``"method."``. The method is rebuilt from its name and
arguments (no pickled modules are trusted for the architecture) and its weights are loaded
strictly, so a checkpoint that does not match its own recipe is an error, not a silently
half-random backbone.

Example:
    >>> backbone, feature_dim, input_size = load_backbone("last.ckpt")  # doctest: +SKIP
    >>> features = backbone(images)  # (B, feature_dim)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastssl import methods
from fastssl.methods.base import Method

#: Prefix of the method's weights in the Lightning module's state dict.
STATE_PREFIX = "method."
#: Inserted by ``torch.compile`` around a compiled module's parameters.
_COMPILE_PREFIX = "_orig_mod."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not in fastssl's training format."""


@dataclass
class CheckpointInfo:
    """What a training checkpoint says about its model.

    Attributes:
        path: The checkpoint file.
        method: Registry name of the method (e.g. ``"simclr"``).
        method_kwargs: Constructor arguments of the method (``backbone``, ``input_size``, ...).
        state_dict: The method's own weights (the ``"method."`` prefix removed).
    """

    path: str
    method: str
    method_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    #: The method's default backbone, used when ``method_kwargs`` names none.
    default_backbone: str | None = None

    @property
    def backbone_name(self) -> str:
        """The backbone's name in the recipe (``"?"`` when it was not a name)."""
        backbone = self.method_kwargs.get("backbone", self.default_backbone)
        return backbone if isinstance(backbone, str) else "?"


def _strip_compile(key: str) -> str:
    # A backbone compiled in place saves its weights as "<name>._orig_mod.<param>".
    return key.replace(_COMPILE_PREFIX, "")


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Reads a training checkpoint without building the model.

    Args:
        path: A Lightning checkpoint written by ``fastssl pretrain``.

    Returns:
        The method name, its arguments and its weights.

    Raises:
        CheckpointError: When the file is missing, unreadable, or lacks the fields above;
            the message names the file.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"checkpoint {name!r} does not exist (or is not a file)")
    try:
        # weights_only=False: Lightning stores hyper-parameters as plain Python objects.
        data = torch.load(name, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise CheckpointError(
            f"checkpoint {name!r} cannot be read by torch.load: {type(error).__name__}: {error}"
        ) from error
    hint = (
        "expected a `fastssl pretrain` checkpoint: a dict with 'hyper_parameters' "
        "{'method', 'method_kwargs'} and a 'state_dict' with 'method.' keys"
    )
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(data).__name__}; {hint}")
    hparams = data.get("hyper_parameters")
    state = data.get("state_dict")
    if all(isinstance(value, torch.Tensor) for value in data.values()):
        raise CheckpointError(
            f"checkpoint {name!r} is a bare state_dict of {len(data)} tensors (as written by "
            f"`fastssl export`), not a training checkpoint; {hint}"
        )
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {name!r} has keys {sorted(map(str, data))[:8]}; {hint}")
    method = hparams.get("method")
    kwargs = hparams.get("method_kwargs", {})
    if not isinstance(method, str) or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"checkpoint {name!r}: hyper_parameters['method'] is {method!r} and "
            f"hyper_parameters['method_kwargs'] is a {type(kwargs).__name__}; {hint}"
        )
    own = {
        _strip_compile(key[len(STATE_PREFIX) :]): value
        for key, value in state.items()
        if key.startswith(STATE_PREFIX)
    }
    if not own:
        raise CheckpointError(
            f"checkpoint {name!r}: no 'method.' weights in its state_dict; {hint}"
        )
    return CheckpointInfo(name, method, dict(kwargs), own)


def resolve_method(name: str) -> type[Method]:
    """The method class of a registry name (``"simclr"``) or a ``"package.module:Class"``
    path (how the training engine records methods outside the registry).

    Raises:
        ValueError: For an unknown registry name or a path that names no Method subclass.
        ImportError: When the path's module cannot be imported.
    """
    if ":" not in name:
        return methods.get(name)
    module_name, _, class_name = name.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"method {name!r} does not name a fastssl.methods.Method subclass")
    return cls


def load_method(path: str | os.PathLike[str]) -> tuple[Method, CheckpointInfo]:
    """Rebuilds the method of a checkpoint and loads its weights strictly.

    Returns:
        ``(method in eval mode, checkpoint info)``.

    Raises:
        CheckpointError: For a file not in the format, an unknown method, arguments the
            method does not accept, or weights that do not fit the rebuilt method.
    """
    info = read_checkpoint(path)
    try:
        cls = resolve_method(info.method)
    except (ValueError, ImportError) as error:
        raise CheckpointError(f"checkpoint {info.path!r}: {error}") from error
    parameter = inspect.signature(cls).parameters.get("backbone")
    if parameter is not None and isinstance(parameter.default, str):
        info.default_backbone = parameter.default
    try:
        model = cls(**info.method_kwargs)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {info.path!r}: method {info.method!r} cannot be built from "
            f"method_kwargs={info.method_kwargs!r}: {error}"
        ) from error
    try:
        # strict=False, then our own check: the same strictness with a message naming the file.
        result = model.load_state_dict(info.state_dict, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise CheckpointError(
            f"checkpoint {info.path!r}: its weights do not fit method {info.method!r} built "
            f"with {info.method_kwargs!r}: {error}"
        ) from error
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {info.path!r}: its weights do not fit method {info.method!r} built "
            f"with {info.method_kwargs!r}: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected "
            f"{result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
    return model.eval(), info


def load_backbone(path: str | os.PathLike[str]) -> tuple[nn.Module, int, int]:
    """The pretrained backbone of a checkpoint, ready for feature extraction.

    Args:
        path: A Lightning checkpoint written by ``fastssl pretrain``.

    Returns:
        ``(backbone in eval mode, feature dimension D, training input size in pixels)``;
        the backbone maps images (B, 3, H, W) to features (B, D).

    Raises:
        CheckpointError: See :func:`load_method`.

    Example:
        >>> backbone, dim, size = load_backbone("last.ckpt")  # doctest: +SKIP
        >>> backbone(torch.randn(2, 3, size, size)).shape  # doctest: +SKIP
        torch.Size([2, 512])
    """
    model, _ = load_method(path)
    return model.backbone.eval(), int(model.feature_dim), int(model.input_size)
