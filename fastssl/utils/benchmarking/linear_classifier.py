"""Linear evaluation and fine-tuning of a pretrained model as LightningModules (LightlySSL's
``lightly.utils.benchmarking.linear_classifier``).

Both follow SimCLR's evaluation protocols (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", https://arxiv.org/abs/2002.05709): a
linear layer on the model's features trained with SGD (momentum 0.9, no weight decay),
learning rate ``lr * batch_size_per_device * world_size / 256`` with per-step cosine decay.
:class:`LinearClassifier` freezes the model, :class:`FinetuneClassifier` trains it too.

Logged metrics: ``train_loss``, ``train_top{k}``, ``val_loss`` and ``val_top{k}``.

Example:
    >>> classifier = LinearClassifier(backbone, batch_size_per_device=256, feature_dim=512,
    ...                               num_classes=10)  # doctest: +SKIP
    >>> Trainer(max_epochs=90).fit(classifier, train_dataloader, val_dataloader)  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from pytorch_lightning import LightningModule
from torch import Tensor
from torch.nn import CrossEntropyLoss, Linear, Module, Parameter, Sequential
from torch.optim import SGD, Optimizer

from fastssl.utils.benchmarking.topk import mean_topk_accuracy
from fastssl.utils.scheduler import CosineWarmupScheduler


class BaseClassifier(LightningModule, ABC):
    """A classification head on the features of ``model``, for linear evaluation or
    fine-tuning; subclasses choose what is trained.

    Batches are ``(images, targets, ...)``. The head is ``Linear(feature_dim,
    num_classes)`` (the ``classification_head`` attribute, which subclasses may replace
    by a ``Sequential``).

    Args:
        model: Maps images (B, 3, H, W) to features (B, feature_dim, ...) (flattened).
        batch_size_per_device: Batch size of each process (scales the learning rate).
        lr: Base learning rate for a total batch size of 256.
        feature_dim: Dimension of the flattened features.
        num_classes: Number of classes C.
        topk: The top-k accuracies to log; each k must be <= C.
    """

    def __init__(
        self,
        model: Module,
        batch_size_per_device: int,
        lr: float,
        feature_dim: int,
        num_classes: int,
        topk: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore="model")
        self.model = model
        self.batch_size_per_device = batch_size_per_device
        self.lr = lr
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.topk = topk
        self.classification_head: Linear | Sequential = Linear(feature_dim, num_classes)
        self.criterion = CrossEntropyLoss()

    @abstractmethod
    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, C) of ``images``."""

    @abstractmethod
    def get_trainable_parameters(self) -> list[Parameter]:
        """The parameters the optimizer updates."""

    def shared_step(
        self, batch: tuple[Tensor, ...], batch_idx: int
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Cross-entropy loss and ``{k: top-k accuracy}`` of a batch."""
        images, targets = batch[0], batch[1]
        logits = self.forward(images)
        loss = self.criterion(logits, targets)
        ranked = logits.topk(max(self.topk)).indices
        return loss, mean_topk_accuracy(ranked, targets, k=self.topk)

    def _log_step(self, stage: str, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss, topk = self.shared_step(batch=batch, batch_idx=batch_idx)
        batch_size = len(batch[1])
        self.log(f"{stage}_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log_dict(
            {f"{stage}_top{k}": acc for k, acc in topk.items()},
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=batch_size,
        )
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Logs ``train_loss`` and ``train_top{k}``; returns the loss."""
        return self._log_step("train", batch, batch_idx)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Logs ``val_loss`` and ``val_top{k}``; returns the loss."""
        return self._log_step("val", batch, batch_idx)

    def get_effective_lr(self) -> float:
        """``lr`` scaled linearly by the total batch size over 256 (SimCLR)."""
        return self.lr * self.batch_size_per_device * self.trainer.world_size / 256

    def configure_optimizers(  # type: ignore[override]
        self,
    ) -> tuple[list[Optimizer], list[dict[str, Any]]]:
        """SGD (momentum 0.9, no weight decay) with cosine decay over all training steps."""
        optimizer = SGD(
            list(self.get_trainable_parameters()),
            lr=self.get_effective_lr(),
            momentum=0.9,
            weight_decay=0.0,
        )
        scheduler = CosineWarmupScheduler(
            optimizer=optimizer,
            warmup_epochs=0,
            max_epochs=int(self.trainer.estimated_stepping_batches),
        )
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


class LinearClassifier(BaseClassifier):
    """Linear evaluation: only the head is trained; ``model`` stays frozen and in eval
    mode (its normalisation statistics do not change).

    Args: as :class:`BaseClassifier`.
    """

    def __init__(
        self,
        model: Module,
        batch_size_per_device: int,
        lr: float = 0.1,
        feature_dim: int = 2048,
        num_classes: int = 1000,
        topk: tuple[int, ...] = (1, 5),
    ) -> None:
        super().__init__(
            model=model,
            batch_size_per_device=batch_size_per_device,
            lr=lr,
            feature_dim=feature_dim,
            num_classes=num_classes,
            topk=topk,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, C) of ``images``; the features carry no gradient."""
        with torch.no_grad():
            features = self.model(images).flatten(start_dim=1)
        logits: Tensor = self.classification_head(features)
        return logits

    def get_trainable_parameters(self) -> list[Parameter]:
        """The head's parameters."""
        return list(self.classification_head.parameters())

    def on_train_epoch_start(self) -> None:
        # Lightning puts the whole module in train mode each epoch; the frozen model goes
        # back to eval mode so that BatchNorm statistics and dropout stay as pretrained.
        self.model.eval()


class FinetuneClassifier(BaseClassifier):
    """Fine-tuning: the head and ``model`` are trained together.

    Args: as :class:`BaseClassifier`.
    """

    def __init__(
        self,
        model: Module,
        batch_size_per_device: int,
        lr: float = 0.05,
        feature_dim: int = 2048,
        num_classes: int = 1000,
        topk: tuple[int, ...] = (1, 5),
    ) -> None:
        super().__init__(
            model=model,
            batch_size_per_device=batch_size_per_device,
            lr=lr,
            feature_dim=feature_dim,
            num_classes=num_classes,
            topk=topk,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, C) of ``images``, differentiable through ``model``."""
        logits: Tensor = self.classification_head(self.model(images).flatten(start_dim=1))
        return logits

    def get_trainable_parameters(self) -> list[Parameter]:
        """The head's and the model's parameters."""
        return [*self.classification_head.parameters(), *self.model.parameters()]
