"""Shared helpers of the evaluation tests: a tiny method registered for the test only,
checkpoints in the training engine's format, and labeled folders of solid-colour images."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from fastssl import methods
from fastssl.methods.base import Method

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


class TinyMethod(Method):
    """A method whose "tiny" backbone is one convolution, BatchNorm and pooling (D=8)."""

    name = "tiny"

    def __init__(self, backbone: str = "tiny", input_size: int = 16, proj_dim: int = 4) -> None:
        if backbone == "tiny":
            module: nn.Module = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            super().__init__(module, input_size, feature_dim=8)
        else:
            super().__init__(backbone, input_size)
        self.projection = nn.Linear(self.feature_dim, proj_dim)  # a non-backbone weight


@pytest.fixture
def tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers TinyMethod as "tiny" in fastssl.methods for one test."""
    monkeypatch.setitem(methods._REGISTRY, "tiny", f"{__name__}:TinyMethod")


def save_checkpoint(
    path: Path, method: str = "tiny", seed: int = 0, **kwargs: Any
) -> tuple[Path, TinyMethod]:
    """Writes a checkpoint in the training engine's format; returns it and the model."""
    torch.manual_seed(seed)
    model = TinyMethod(**kwargs)
    with torch.no_grad():  # non-default BatchNorm statistics, so loading them is visible
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "pytorch-lightning_version": "2.0.0",
            "hyper_parameters": {"method": method, "method_kwargs": dict(kwargs)},
            "state_dict": {f"method.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path, model


#: Small heads of the EMA methods, so their checkpoints are quick to build.
SMALL_HEADS: dict[str, dict[str, Any]] = {
    "byol": {"hidden_dim": 16, "output_dim": 8},
    "dino": {"hidden_dim": 16, "bottleneck_dim": 8, "output_dim": 32, "n_local_views": 0},
    "moco": {"hidden_dim": 16, "output_dim": 8, "memory_bank_size": 16},
}


def save_method_checkpoint(path: Path, name: str) -> tuple[Path, Method]:
    """A checkpoint of the registered method ``name`` (resnet18 at 16 px) whose EMA copy
    differs from its online backbone, as after training."""
    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "input_size": 16, **SMALL_HEADS.get(name, {})}
    model = methods.create(name, **kwargs)
    ema = model.ema_backbone()
    if ema is not None:
        with torch.no_grad():
            next(ema.parameters()).add_(0.5)  # the first convolution
    torch.save(
        {
            "global_step": 1,
            "hyper_parameters": {"method": name, "method_kwargs": kwargs},
            "state_dict": {f"method.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path, model


def make_folder(
    root: Path,
    per_class: int,
    classes: Sequence[str] = tuple(COLORS),
    size: int = 16,
    seed: int = 0,
    label_of: Callable[[int, str], str] | None = None,
) -> Path:
    """A labeled folder of noisy solid-colour PNGs: ``root/<class>/<i>.png``.

    Image i of colour c goes to class ``label_of(i, c)`` (default: its colour), so a random
    ``label_of`` makes labels independent of the pixels.
    """
    rng = random.Random(seed)
    for color in classes:
        base = COLORS[color]
        for i in range(per_class):
            label = color if label_of is None else label_of(i, color)
            folder = root / label
            folder.mkdir(parents=True, exist_ok=True)
            pixels = bytes(
                min(255, max(0, base[ch] + rng.randint(-25, 25)))
                for _ in range(size * size)
                for ch in range(3)
            )
            Image.frombytes("RGB", (size, size), pixels).save(folder / f"{color}_{i:03d}.png")
    return root
