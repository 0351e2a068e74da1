"""Reading ``fastssl pretrain`` checkpoints back: the contract with ``fastssl eval``.

A checkpoint (``OUT/last.ckpt``) is a Lightning checkpoint whose ``hyper_parameters``
hold ``"method"`` (a registry name such as ``"simclr"``, or ``"package.module:Class"``)
and ``"method_kwargs"`` (the method's JSON-serialisable constructor arguments, ``backbone``
and ``input_size`` included), and whose ``state_dict`` keys are ``"method."`` followed by
the method's own keys (the backbone's weights are under ``"method.backbone."``).

Example:
    >>> method = load_method("runs/simclr/last.ckpt")  # doctest: +SKIP
    >>> features = method(images)  # (B, D)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fastssl.methods.base import Method

#: Prefix of the method's parameters in the checkpoint's state dict.
STATE_PREFIX = "method."


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a checkpoint on the CPU and checks it follows the contract.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not a ``fastssl pretrain`` checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint.get("hyper_parameters", {})
    missing = [key for key in ("method", "method_kwargs") if key not in hparams]
    if missing or "state_dict" not in checkpoint:
        raise ValueError(
            f"{os.fspath(path)!r} is not a fastssl pretrain checkpoint: its hyper_parameters "
            f"lack {', '.join(missing) or 'nothing'} and it "
            f"{'has' if 'state_dict' in checkpoint else 'lacks'} a state_dict"
        )
    return checkpoint


def method_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The method's own state dict (prefix ``"method."`` removed)."""
    return {
        key[len(STATE_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(STATE_PREFIX)
    }


def load_method(path: str | os.PathLike[str], strict: bool = True) -> Method:
    """Rebuilds the trained method of a checkpoint, in eval mode, on the CPU.

    Args:
        path: A ``fastssl pretrain`` checkpoint (e.g. ``OUT/last.ckpt``).
        strict: Require the state dict to match the rebuilt method exactly.

    Returns:
        The :class:`~fastssl.methods.Method` with the trained weights; its ``backbone``
        gives (B, D) features for images of shape (B, 3, H, W).
    """
    from fastssl.train.module import resolve_method

    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    method = resolve_method(hparams["method"])(**hparams["method_kwargs"])
    method.load_state_dict(method_state_dict(checkpoint), strict=strict)
    return method.eval()


__all__ = ["STATE_PREFIX", "load_method", "method_state_dict", "read_checkpoint"]
