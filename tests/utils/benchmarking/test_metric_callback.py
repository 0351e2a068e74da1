from __future__ import annotations

import types

import pytest
import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import MetricCallback as LightlyMetricCallback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastssl.utils.benchmarking import MetricCallback
from fastssl.utils.benchmarking.metric_callback import MetricValue


class _Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.validated = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_epoch", float(self.current_epoch), on_epoch=True, on_step=False)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_epoch", float(self.current_epoch) + 10)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback: pl.Callback, epochs: int) -> None:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(_Model(), data, data)


@pytest.mark.parametrize("epochs", [1, 3])
def test_collects_like_lightly(epochs: int) -> None:
    ours, theirs = MetricCallback(), LightlyMetricCallback()
    _fit(ours, epochs)
    _fit(theirs, epochs)
    assert ours.train_metrics == theirs.train_metrics
    assert ours.val_metrics == theirs.val_metrics
    # One value per epoch; the sanity check is not recorded.
    assert ours.val_metrics["val_epoch"] == [10.0 + e for e in range(epochs)]
    assert ours.train_metrics["train_epoch"] == [float(e) for e in range(epochs)]
    assert len(ours.train_metrics["train_loss"]) == epochs
    assert all(isinstance(v, float) for vs in ours.val_metrics.values() for v in vs)


@pytest.mark.parametrize("sanity_checking", [False, True])
def test_skips_non_scalars_and_sanity_checks(sanity_checking: bool) -> None:
    metrics = {"a": torch.tensor(1.5), "vector": torch.ones(2), "b": 2.0, "c": torch.tensor([3])}
    trainer = types.SimpleNamespace(sanity_checking=sanity_checking, callback_metrics=metrics)
    ours, theirs = MetricCallback(), LightlyMetricCallback()
    for callback in (ours, theirs):
        callback.on_validation_epoch_end(trainer, None)  # type: ignore[arg-type]
        callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
        callback.on_validation_epoch_end(trainer, None)  # type: ignore[arg-type]
    expected = {} if sanity_checking else {"a": [1.5, 1.5], "b": [2.0, 2.0], "c": [3.0, 3.0]}
    assert ours.val_metrics == theirs.val_metrics == expected
    assert ours.train_metrics == theirs.train_metrics
    assert ours.train_metrics == ({} if sanity_checking else {"a": [1.5], "b": [2.0], "c": [3.0]})


def test_metric_value_alias() -> None:
    assert MetricValue == torch.Tensor | float
