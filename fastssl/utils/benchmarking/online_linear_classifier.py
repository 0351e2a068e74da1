"""``OnlineLinearClassifier``: a linear probe trained alongside self-supervised
pretraining (LightlySSL's ``lightly.utils.benchmarking.online_linear_classifier``).

Example:
    >>> import torch
    >>> probe = OnlineLinearClassifier(feature_dim=8, num_classes=3, topk=(1, 2))
    >>> features, targets = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    >>> loss, log_dict = probe.training_step((features, targets), 0)
    >>> sorted(log_dict)
    ['train_online_cls_loss', 'train_online_cls_top1', 'train_online_cls_top2']
"""

from __future__ import annotations

from pytorch_lightning import LightningModule
from torch import Tensor
from torch.nn import CrossEntropyLoss, Linear

from fastssl.utils.benchmarking.topk import mean_topk_accuracy


class OnlineLinearClassifier(LightningModule):
    """Linear classifier on detached features, called by the pretraining module itself.

    The online probe of many SSL codebases (e.g. solo-learn, BYOL's evaluation during
    training): its loss is added to the pretraining loss, but the features are detached,
    so only the probe learns from it and the backbone's training is unchanged. Not run by
    a ``Trainer`` directly: the parent module calls :meth:`training_step` /
    :meth:`validation_step` and logs the returned dict.

    Args:
        feature_dim: Dimension D of the (flattened) features.
        num_classes: Number of classes C.
        topk: The top-k accuracies to report; each k must be <= C.
    """

    def __init__(
        self,
        feature_dim: int = 2048,
        num_classes: int = 1000,
        topk: tuple[int, ...] = (1, 5),
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.topk = topk
        self.classification_head = Linear(feature_dim, num_classes)
        self.criterion = CrossEntropyLoss()

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, C) of features ``x`` (B, D, ...), without gradient to ``x``."""
        logits: Tensor = self.classification_head(x.detach().flatten(start_dim=1))
        return logits

    def shared_step(
        self, batch: tuple[Tensor, ...], batch_idx: int
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Cross-entropy loss and ``{k: top-k accuracy}`` of ``(features, targets, ...)``."""
        features, targets = batch[0], batch[1]
        logits = self.forward(features)
        loss = self.criterion(logits, targets)
        ranked = logits.topk(max(self.topk)).indices
        return loss, mean_topk_accuracy(ranked, targets, k=self.topk)

    def _step(
        self, prefix: str, batch: tuple[Tensor, ...], batch_idx: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss, topk = self.shared_step(batch=batch, batch_idx=batch_idx)
        log_dict = {f"{prefix}_online_cls_loss": loss}
        log_dict.update({f"{prefix}_online_cls_top{k}": acc for k, acc in topk.items()})
        return loss, log_dict

    def training_step(  # type: ignore[override]
        self, batch: tuple[Tensor, ...], batch_idx: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, {"train_online_cls_loss": ..., "train_online_cls_top{k}": ...})``."""
        return self._step("train", batch, batch_idx)

    def validation_step(  # type: ignore[override]
        self, batch: tuple[Tensor, ...], batch_idx: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, {"val_online_cls_loss": ..., "val_online_cls_top{k}": ...})``."""
        return self._step("val", batch, batch_idx)
