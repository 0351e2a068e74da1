"""``KNNClassifier``: kNN evaluation of a frozen model as a LightningModule (LightlySSL's
``lightly.utils.benchmarking.knn_classifier``).

Example:
    >>> classifier = KNNClassifier(backbone, num_classes=10, knn_k=200, knn_t=0.1,
    ...                            train_dataloader_idx=0, val_dataloader_idx=1)  # doctest: +SKIP
    >>> Trainer(max_epochs=1).validate(
    ...     classifier, dataloaders=[train_dataloader, val_dataloader]
    ... )  # doctest: +SKIP
    [{'val_knn_top1': ..., 'val_knn_top5': ...}]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import Tensor
from torch.nn import Module

from fastssl.utils.benchmarking.knn import knn_predict
from fastssl.utils.benchmarking.topk import mean_topk_accuracy


class KNNClassifier(LightningModule):
    """Weighted kNN classifier on the features of a frozen model, run by
    ``Trainer.validate``.

    The protocol of InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", https://arxiv.org/abs/1805.01978), as in
    MoCo's code: the validation dataloader ``train_dataloader_idx`` fills the feature bank,
    then every batch of ``val_dataloader_idx`` is classified by the vote of its ``knn_k``
    most similar bank samples weighted by ``exp(similarity / knn_t)``. Logged (and returned
    by the validation step) as ``val_knn_top{k}`` for every ``k`` in ``topk``. Batches are
    ``(images, targets, ...)``, or ``(features, targets)`` when ``model`` is None. With
    several processes the bank holds the features of all processes.

    Args:
        model: Maps images (B, 3, H, W) to features (B, D, ...) (flattened here); None when
            the dataloaders deliver features.
        num_classes: Number of classes C.
        knn_k: Number of neighbours that vote.
        knn_t: Temperature of the vote weights.
        train_dataloader_idx: Index of the dataloader that fills the bank (it must come
            first in the ``dataloaders`` list).
        val_dataloader_idx: Index of the dataloader that is evaluated.
        topk: The top-k accuracies to log.
        feature_dtype: dtype of the stored features; float16 halves the bank's memory.
        normalize: L2-normalise the features (cosine similarity).
    """

    def __init__(
        self,
        model: Module | None,
        num_classes: int,
        knn_k: int,
        knn_t: float,
        train_dataloader_idx: int,
        val_dataloader_idx: int,
        topk: tuple[int, ...] = (1, 5),
        feature_dtype: torch.dtype = torch.float32,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "knn_k": knn_k,
                "knn_t": knn_t,
                "topk": topk,
                "feature_dtype": str(feature_dtype),
            }
        )
        self.train_dataloader_idx = train_dataloader_idx
        self.val_dataloader_idx = val_dataloader_idx
        self.model = model
        self.num_classes = num_classes
        self.knn_k = knn_k
        self.knn_t = knn_t
        self.topk = topk
        self.feature_dtype = feature_dtype
        self.normalize = normalize
        # Bank being filled (CPU, one tensor per batch) and the finished bank (device).
        self._train_features: list[Tensor] = []
        self._train_targets: list[Tensor] = []
        self._train_features_tensor: Tensor | None = None  # (D, N)
        self._train_targets_tensor: Tensor | None = None  # (N,)

    def _prepare_features(self, features: Tensor) -> Tensor:
        """Normalises (if ``normalize``) and casts to ``feature_dtype``."""
        if self.normalize:
            features = F.normalize(features, dim=1)
        return features.to(self.feature_dtype)

    def forward(self, images: Tensor) -> Tensor:
        """Prepared features (B, D) of ``images``; needs a ``model``."""
        if self.model is None:
            raise ValueError("KNNClassifier.forward needs a model; it was created with None")
        return self._prepare_features(self.model(images).flatten(start_dim=1))

    def append_train_features(self, features: Tensor, targets: Tensor) -> None:
        """Adds a batch to the bank being filled (kept on the CPU)."""
        self._train_features.append(features.cpu())
        self._train_targets.append(targets.cpu())

    def _all_gather(self, tensor: Tensor) -> Tensor:
        """``tensor`` of every process, stacked along a new first dimension when several
        processes run; ``tensor`` itself without a Trainer (direct calls: one process)."""
        if self._trainer is None:
            return tensor
        gathered = self.all_gather(tensor)
        assert isinstance(gathered, Tensor)
        return gathered

    def concat_train_features(self) -> None:
        """Turns the collected batches of all processes into the bank on this device."""
        if not (self._train_features and self._train_targets):
            return
        features = self._all_gather(torch.cat(self._train_features))  # ([W,] N, D)
        targets = self._all_gather(torch.cat(self._train_targets))  # ([W,] N)
        self._train_features, self._train_targets = [], []
        self._train_features_tensor = features.flatten(end_dim=-2).t().contiguous().to(self.device)
        self._train_targets_tensor = targets.flatten().to(self.device)

    def reset_storage(self) -> None:
        """Empties the bank for a new validation epoch."""
        self._train_features, self._train_targets = [], []
        self._train_features_tensor = self._train_targets_tensor = None

    @torch.no_grad()
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        """Nothing to train."""

    def validation_step(
        self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int
    ) -> dict[str, Tensor] | None:
        """Adds a bank batch, or scores a validation batch.

        Returns:
            ``{"val_knn_top{k}": accuracy}`` for a batch of ``val_dataloader_idx``, None for
            a bank batch.
        """
        if self.model is None:
            features, targets = batch[0], batch[1]
            features = self._prepare_features(features)
        else:
            targets = batch[1]
            features = self(batch[0])
        if dataloader_idx == self.train_dataloader_idx:
            if batch_idx == 0:
                self.reset_storage()
            self.append_train_features(features=features, targets=targets)
            return None
        if dataloader_idx != self.val_dataloader_idx:
            return None
        if batch_idx == 0:
            self.concat_train_features()
        if self._train_features_tensor is None or self._train_targets_tensor is None:
            raise RuntimeError(
                f"KNNClassifier: the bank is empty; dataloader {self.train_dataloader_idx} "
                f"(train) must come before dataloader {self.val_dataloader_idx} (val)"
            )
        predicted = knn_predict(
            feature=features,
            feature_bank=self._train_features_tensor,
            feature_labels=self._train_targets_tensor,
            num_classes=self.num_classes,
            knn_k=self.knn_k,
            knn_t=self.knn_t,
        )
        accuracy = mean_topk_accuracy(predicted, targets, k=self.topk)
        log_dict = {f"val_knn_top{k}": value for k, value in accuracy.items()}
        if self._trainer is not None:
            self.log_dict(log_dict, prog_bar=True, sync_dist=True, batch_size=len(targets))
        return log_dict

    def configure_optimizers(self) -> None:
        """No optimizer: Lightning then runs no optimisation."""
