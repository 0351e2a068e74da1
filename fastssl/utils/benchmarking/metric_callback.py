"""``MetricCallback``: keeps the metrics logged in every epoch (LightlySSL's
``lightly.utils.benchmarking.metric_callback``).

Example:
    >>> callback = MetricCallback()
    >>> trainer = Trainer(callbacks=[callback], max_epochs=10)  # doctest: +SKIP
    >>> trainer.fit(model, train_dataloader, val_dataloader)  # doctest: +SKIP
    >>> max(callback.val_metrics["val_top1"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Union

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import Callback
from torch import Tensor

#: A logged value: a scalar tensor or a float.
MetricValue = Union[Tensor, float]  # noqa: UP007  (a runtime alias, as in LightlySSL)


class MetricCallback(Callback):
    """Appends the trainer's scalar ``callback_metrics`` after every train and validation
    epoch (sanity-check runs excluded).

    Attributes:
        train_metrics: ``{name: [value after train epoch 0, 1, ...]}``.
        val_metrics: ``{name: [value after validation epoch 0, 1, ...]}``.

    Both hold every metric known at that moment (e.g. ``val_metrics`` also has the last
    training metrics), as floats; non-scalar tensors are left out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train_metrics: dict[str, list[float]] = {}
        self.val_metrics: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._append_metrics(metrics_dict=self.train_metrics, trainer=trainer)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._append_metrics(metrics_dict=self.val_metrics, trainer=trainer)

    def _append_metrics(self, metrics_dict: dict[str, list[float]], trainer: Trainer) -> None:
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, Tensor) and value.numel() != 1:
                continue
            metrics_dict.setdefault(name, []).append(float(value))
