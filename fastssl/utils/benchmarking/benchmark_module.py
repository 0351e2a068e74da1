"""``BenchmarkModule``: a LightningModule that monitors its backbone with a kNN classifier
during validation (LightlySSL's ``lightly.utils.benchmarking.benchmark_module``).

The protocol of InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", https://arxiv.org/abs/1805.01978): at the start of
every validation epoch the backbone embeds ``dataloader_kNN`` into a feature bank; each
validation image is classified by the weighted vote of its ``knn_k`` most cosine-similar
bank samples (:func:`~fastssl.utils.benchmarking.knn_predict`), and the epoch's top-1
accuracy is logged as ``kNN_accuracy`` (in percent).

Example:
    >>> class SimSiamModel(BenchmarkModule):  # doctest: +SKIP
    ...     def __init__(self, dataloader_kNN, num_classes):
    ...         super().__init__(dataloader_kNN, num_classes)
    ...         self.backbone = nn.Sequential(*list(resnet18().children())[:-1])
    ...         ...  # heads, criterion; training_step and configure_optimizers as usual
    >>> model = SimSiamModel(dataloader_train_kNN, num_classes=10)  # doctest: +SKIP
    >>> Trainer(max_epochs=10).fit(model, dataloader_train_ssl, dataloader_test)  # doctest: +SKIP
    >>> model.max_accuracy  # best top-1 kNN accuracy, in [0, 1]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fastssl.utils import dist
from fastssl.utils.benchmarking.knn import knn_predict


class BenchmarkModule(LightningModule):
    """LightningModule base class with kNN accuracy of ``self.backbone`` at validation.

    Subclasses set ``self.backbone`` (images (B, 3, H, W) -> features (B, D, ...), flattened
    here) and implement ``training_step`` and ``configure_optimizers``. Validation batches
    and batches of ``dataloader_kNN`` are ``(images, targets, ...)``. With several
    processes the predictions of all processes are gathered, so every process logs the
    accuracy on the whole validation set (each process builds the full bank from
    ``dataloader_kNN``).

    Args:
        dataloader_kNN: Labeled data embedded into the kNN feature bank before every
            validation epoch.
        num_classes: Number of classes C.
        knn_k: Number of neighbours that vote.
        knn_t: Temperature of the vote weights ``exp(similarity / knn_t)``.

    Attributes:
        backbone: The network evaluated; an empty ``nn.Module`` until a subclass sets it.
        max_accuracy: Best top-1 kNN accuracy so far, in [0, 1].
    """

    def __init__(
        self,
        dataloader_kNN: DataLoader[Any],
        num_classes: int,
        knn_k: int = 200,
        knn_t: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone: nn.Module = nn.Module()
        self.max_accuracy = 0.0
        self.dataloader_kNN = dataloader_kNN
        self.num_classes = num_classes
        self.knn_k = knn_k
        self.knn_t = knn_t
        self._train_features: Tensor | None = None  # (D, N), L2-normalised columns
        self._train_targets: Tensor | None = None  # (N,)
        self._val_predicted_labels: list[Tensor] = []
        self._val_targets: list[Tensor] = []

    def _embed(self, images: Tensor) -> Tensor:
        """L2-normalised backbone features of shape (B, D)."""
        return F.normalize(self.backbone(images).flatten(start_dim=1), dim=1)

    def on_validation_epoch_start(self) -> None:
        """Embeds ``dataloader_kNN`` into the feature bank."""
        features, targets = [], []
        with torch.no_grad():
            for batch in self.dataloader_kNN:
                features.append(self._embed(batch[0].to(self.device)))
                targets.append(batch[1].to(self.device))
        self._train_features = torch.cat(features).t().contiguous()
        self._train_targets = torch.cat(targets)

    def validation_step(self, batch: tuple[Any, ...], batch_idx: int) -> None:
        """Ranks the classes of the batch's images by kNN vote and stores them."""
        if self._train_features is None or self._train_targets is None:
            return  # no bank yet: nothing to predict with
        images, targets = batch[0], batch[1]
        predicted = knn_predict(
            self._embed(images),
            self._train_features,
            self._train_targets,
            self.num_classes,
            self.knn_k,
            self.knn_t,
        )
        # gather_cat is the identity without a process group.
        self._val_predicted_labels.append(dist.gather_cat(predicted).cpu())
        self._val_targets.append(dist.gather_cat(targets).cpu())

    def on_validation_epoch_end(self) -> None:
        """Logs ``kNN_accuracy`` (percent) and updates ``max_accuracy``."""
        if self._val_predicted_labels and self._val_targets:
            predicted = torch.cat(self._val_predicted_labels)
            targets = torch.cat(self._val_targets)
            accuracy = (predicted[:, 0] == targets).float().mean()
            self.max_accuracy = max(self.max_accuracy, float(accuracy))
            self.log("kNN_accuracy", accuracy * 100.0, prog_bar=True)
        self._val_predicted_labels.clear()
        self._val_targets.clear()
