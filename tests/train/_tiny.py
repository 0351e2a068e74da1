"""A tiny method and image folders for the engine's tests (fast on 2 CPU cores).

``TinyMethod`` has a convolution, a BatchNorm (converted to sync BN under DDP) and an
NT-Xent loss with ``gather_distributed=True``, so a 2-process run exercises both. Its
default transform is deterministic (resize; resize + horizontal flip) unless
``random_aug=True`` (random resized crop), which makes 1-vs-2-process equality testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torchvision.transforms as T
from PIL import Image
from torch import Tensor, nn

from fastssl.loss.ntx_ent_loss import NTXentLoss
from fastssl.methods.base import Method, OptimizerDefaults, StepInfo
from fastssl.train.config import PretrainConfig, apply_overrides
from fastssl.transforms.multi_view_transform import MultiViewTransform, ViewTransform
from fastssl.transforms.view_spec import ViewSpec

TINY = "tests.train._tiny:TinyMethod"


def tiny_config(data: Path, out: Path, *overrides: str) -> PretrainConfig:
    """A recipe of :class:`TinyMethod` on ``data`` at 8 px on the CPU (no loader workers, a
    log line every step) writing to ``out``; ``overrides`` (``key=value``) come last."""
    base = [
        f"method={TINY}", f"data.path={data}", "data.input_size=8", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.log_every_n_steps=1", f"trainer.out={out}",
    ]  # fmt: skip
    return apply_overrides(PretrainConfig(), [*base, *overrides])


class TinyMethod(Method):
    """SimCLR in miniature: conv + BN + pooled features, a linear head, NT-Xent."""

    name = "tiny"
    optimizer_defaults = OptimizerDefaults(
        name="sgd", lr=0.2, reference_batch_size=8, weight_decay=1e-4, warmup_epochs=1
    )

    def __init__(
        self,
        backbone: str = "tiny",
        input_size: int = 8,
        random_aug: bool = False,
        nan_at_step: int = -1,
        spec_views: bool = False,
    ) -> None:
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        super().__init__(net, input_size, feature_dim=8)
        self.head = nn.Linear(8, 8)
        self.criterion = NTXentLoss(temperature=0.5, gather_distributed=True)
        self.random_aug = random_aug
        self.nan_at_step = nan_at_step
        self.spec_views = spec_views

    def training_step(self, views: Sequence[Tensor], info: StepInfo = StepInfo()) -> Tensor:  # noqa: B008
        z0, z1 = (self.head(self.backbone(v)) for v in views[:2])
        loss: Tensor = self.criterion(z0, z1)
        if 0 <= self.nan_at_step <= info.step:
            loss = loss * float("nan")
        return loss

    def default_transform(self) -> Any:
        size = self.input_size
        if self.spec_views:  # ViewSpecs: what every engine (DALI too) can run
            spec = ViewSpec(crop_size=size, crop_scale=(0.3, 1.0), cj_prob=0.0, gray_prob=0.0)
            return MultiViewTransform([ViewTransform(spec), ViewTransform(spec)])
        if self.random_aug:
            first: Any = T.Compose([T.RandomResizedCrop(size, scale=(0.3, 1.0)), T.ToTensor()])
        else:
            first = T.Compose([T.Resize((size, size)), T.ToTensor()])
        flipped = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(1.0), T.ToTensor()])
        return MultiViewTransform([first, flipped])


def make_folder(root: Path, n: int = 16, classes: int = 2, size: int = 12, seed: int = 0) -> Path:
    """Writes ``n`` random RGB images into ``classes`` class subfolders of ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels[..., i % 3] = 40 + 100 * (i % classes)  # a class-dependent channel for kNN
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root
