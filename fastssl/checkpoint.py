"""The one reader of ``fastssl pretrain`` checkpoints, shared by training, ``eval`` and ``export``.

A checkpoint (``OUT/last.ckpt``) is a Lightning checkpoint whose ``hyper_parameters`` hold
``"method"`` (a registry name such as ``"simclr"``, or ``"package.module:Class"``) and
``"method_kwargs"`` (the method's JSON-serialisable constructor arguments, ``backbone`` and
``input_size`` included), and whose ``state_dict`` keys are ``"method."`` followed by the
method's own keys (``torch.compile`` may insert ``"_orig_mod."``, which is removed).

Every file is read by :func:`load_file`, with ``torch.load(weights_only=True)``: tensors and
plain Python data only. Unpickling anything else can run arbitrary code (a ``__reduce__``
payload), so such a file is refused with a :class:`CheckpointError` that says why; fastssl's
own checkpoints never need more. The method is rebuilt from its name and arguments (no
pickled module is trusted for the architecture) and its weights are loaded strictly.

Example:
    >>> checkpoint = read_checkpoint("runs/simclr/last.ckpt")  # doctest: +SKIP
    >>> method = rebuild_method(checkpoint, "runs/simclr/last.ckpt")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

from fastssl import methods
from fastssl.methods.base import Method

#: Prefix of the method's weights in the Lightning module's state dict.
STATE_PREFIX = "method."
#: Inserted by ``torch.compile`` around a compiled module's parameters.
COMPILE_PREFIX = "_orig_mod."

_FORMAT_HINT = (
    "it is not a fastssl pretrain checkpoint (a dict whose hyper_parameters hold "
    "method, method_kwargs and whose state_dict holds 'method.' weights)"
)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, refused as unsafe or not in fastssl's format."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def _torch_detail(error: BaseException) -> str:
    """The informative lines of a ``torch.load`` error, without its boilerplate."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(boilerplate)]
    return " ".join(kept) or f"{type(error).__name__}: {error}"


def load_file(path: str | os.PathLike[str]) -> Any:
    """Reads a checkpoint file on the CPU, as tensors and plain data only.

    The only ``torch.load`` of a checkpoint in fastssl: ``weights_only=True``, so a file
    whose pickle would build other Python objects (and could run code while doing so) is
    refused before any of it runs.

    Args:
        path: The file.

    Returns:
        What the file holds (for a Lightning checkpoint, a dict).

    Raises:
        CheckpointNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not readable as weights only; the message names the
            file and says whether it was refused (it holds arbitrary Python objects) or is
            not a torch file at all.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointNotFoundError(f"checkpoint {name!r} does not exist (or is not a file)")
    try:
        return torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _torch_detail(error)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"checkpoint {name!r} was refused: it is not weights-only ({detail}). fastssl "
                "reads checkpoints with torch.load(weights_only=True), tensors and plain data "
                "only, because unpickling other Python objects can run arbitrary code; its "
                "own checkpoints never need more. Do not load this file unless you trust "
                "whoever made it"
            ) from error
        raise CheckpointError(
            f"checkpoint {name!r} cannot be read by torch.load(weights_only=True): {detail}"
        ) from error
    except Exception as error:  # zip, storage and torch errors all mean "not a checkpoint"
        raise CheckpointError(
            f"checkpoint {name!r} cannot be read by torch.load(weights_only=True): "
            f"{type(error).__name__}: {error}"
        ) from error


def method_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The method's own state dict: prefix ``"method."`` and ``"_orig_mod."`` removed."""
    return {
        key[len(STATE_PREFIX) :].replace(COMPILE_PREFIX, ""): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(STATE_PREFIX)
    }


def validate(data: Any, name: str) -> dict[str, Any]:
    """Checks that ``data`` (read from file ``name``) follows the checkpoint contract.

    Returns:
        ``data``, a dict with ``hyper_parameters["method"]`` (str),
        ``hyper_parameters["method_kwargs"]`` (dict) and ``"method."`` weights.

    Raises:
        CheckpointError: Naming the file and what is missing.
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(data).__name__}; {_FORMAT_HINT}")
    if data and all(isinstance(value, torch.Tensor) for value in data.values()):
        raise CheckpointError(
            f"checkpoint {name!r} is a bare state_dict of {len(data)} tensors (as written by "
            f"`fastssl export`), not a training checkpoint; {_FORMAT_HINT}"
        )
    hparams, state = data.get("hyper_parameters"), data.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {name!r} has keys {sorted(map(str, data))[:8]}; {_FORMAT_HINT}"
        )
    method, kwargs = hparams.get("method"), hparams.get("method_kwargs", {})
    if not isinstance(method, str) or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"checkpoint {name!r}: hyper_parameters['method'] is {method!r} and "
            f"hyper_parameters['method_kwargs'] is a {type(kwargs).__name__}; {_FORMAT_HINT}"
        )
    if not any(str(key).startswith(STATE_PREFIX) for key in state):
        raise CheckpointError(
            f"checkpoint {name!r}: no 'method.' weights in its state_dict; {_FORMAT_HINT}"
        )
    return data


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a ``fastssl pretrain`` checkpoint (weights only) and checks its contract.

    Raises:
        CheckpointNotFoundError: If ``path`` does not exist.
        CheckpointError: If it is refused, unreadable or not a ``fastssl pretrain``
            checkpoint (see :func:`load_file` and :func:`validate`).
    """
    return validate(load_file(path), os.fspath(path))


def rebuild_method(checkpoint: dict[str, Any], name: str, strict: bool = True) -> Method:
    """Builds the checkpoint's method from its name and arguments and loads its weights.

    Args:
        checkpoint: A dict from :func:`read_checkpoint`.
        name: Its file, for error messages.
        strict: Require the weights to match the rebuilt method exactly.

    Returns:
        The method in eval mode, on the CPU.

    Raises:
        CheckpointError: For an unknown method, arguments the method does not accept, or
            weights that do not fit it; the message names the file.
    """
    hparams = checkpoint["hyper_parameters"]
    method, kwargs = hparams["method"], dict(hparams.get("method_kwargs", {}))
    try:
        cls = methods.get(method)
    except (ValueError, ImportError) as error:
        raise CheckpointError(f"checkpoint {name!r}: {error}") from error
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {name!r}: method {method!r} cannot be built from "
            f"method_kwargs={kwargs!r}: {error}"
        ) from error
    where = f"checkpoint {name!r}: its weights do not fit method {method!r} built with {kwargs!r}"
    try:
        # strict=False, then our own check: the same strictness with a message naming the file.
        result = model.load_state_dict(method_state_dict(checkpoint), strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise CheckpointError(f"{where}: {error}") from error
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{where}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return model.eval()


__all__ = [
    "COMPILE_PREFIX",
    "STATE_PREFIX",
    "CheckpointError",
    "CheckpointNotFoundError",
    "load_file",
    "method_state_dict",
    "read_checkpoint",
    "rebuild_method",
    "validate",
]
