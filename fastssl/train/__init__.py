"""The training engine of ``fastssl pretrain``: config, Lightning module, callbacks, checkpoints.

Example:
    >>> from fastssl.train import load_config, pretrain
    >>> summary = pretrain(load_config("pipelines/simclr.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from fastssl.train.checkpoint import load_method
from fastssl.train.config import (
    ConfigError,
    PretrainConfig,
    apply_overrides,
    from_dict,
    load_config,
)
from fastssl.train.engine import pretrain
from fastssl.train.module import NonFiniteLossError, PretrainModule

__all__ = [
    "ConfigError",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainModule",
    "apply_overrides",
    "from_dict",
    "load_config",
    "load_method",
    "pretrain",
]
