"""Tiny CPU Lightning runs shared by the benchmarking tests."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 5
FEATURE_DIM = 4


def backbone() -> nn.Module:
    """(B, 3, 6, 6) images -> (B, FEATURE_DIM, 1, 1) features, with BatchNorm statistics."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, FEATURE_DIM, 3),
        nn.BatchNorm2d(FEATURE_DIM),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )


def loader(n: int, seed: int, batch_size: int = 8, with_names: bool = False) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 6, 6, generator=g)
    targets = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    tensors = [images, targets]
    if with_names:  # (images, targets, filenames)-like third element
        tensors.append(torch.arange(n))
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=False)


def trainer(max_epochs: int = 1, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
