from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from lightly.utils.benchmarking import BenchmarkModule as LightlyBenchmarkModule

from fastssl.utils.benchmarking import BenchmarkModule, MetricCallback, knn_predict

from ._lightning import NUM_CLASSES, backbone, loader, trainer


def _model(base: type, dataloader_kNN: Any, **kwargs: Any) -> Any:
    class Model(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(dataloader_kNN, NUM_CLASSES, **kwargs)
            self.backbone = backbone()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            # A loss that changes the features: pull every feature towards 1.
            return (self.backbone(batch[0]) - 1.0).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Model()


def test_signature_matches_lightly() -> None:
    def parameters(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(BenchmarkModule) == parameters(LightlyBenchmarkModule)


@pytest.mark.parametrize(("knn_k", "knn_t"), [(3, 0.1), (10, 0.5)])
def test_fit_logs_the_same_knn_accuracy_as_lightly(knn_k: int, knn_t: float) -> None:
    bank = loader(24, seed=1, with_names=True)
    # Batches of 4: lightly squeezes the features and fails on a batch of one.
    val = loader(16, seed=2, batch_size=4, with_names=True)
    runs = {}
    for name, base in (("ours", BenchmarkModule), ("theirs", LightlyBenchmarkModule)):
        model = _model(base, bank, knn_k=knn_k, knn_t=knn_t)
        # Validation runs before on_train_epoch_end: train_metrics holds each epoch's value.
        metrics = MetricCallback()
        run = trainer(max_epochs=3, callbacks=[metrics])
        run.fit(model, loader(24, seed=3, with_names=True), val)
        runs[name] = (model, metrics.train_metrics["kNN_accuracy"], set(run.progress_bar_metrics))
    (model, history, bar), (their_model, their_history, their_bar) = runs.values()
    assert len(history) == 3
    assert history == pytest.approx(their_history)
    assert model.max_accuracy == pytest.approx(their_model.max_accuracy)
    assert model.max_accuracy == pytest.approx(max(history) / 100)
    assert "kNN_accuracy" in bar and bar == their_bar

    # The last logged value is the kNN accuracy of the trained backbone.
    model.eval()
    with torch.no_grad():
        x_bank, y_bank, _ = next(iter(loader(24, seed=1, batch_size=24, with_names=True)))
        x_val, y_val, _ = next(iter(loader(16, seed=2, batch_size=16, with_names=True)))
        features = torch.nn.functional.normalize(model.backbone(x_bank).flatten(1), dim=1)
        queries = torch.nn.functional.normalize(model.backbone(x_val).flatten(1), dim=1)
    ranked = knn_predict(queries, features.T, y_bank, NUM_CLASSES, knn_k, knn_t)
    assert history[-1] == pytest.approx(100 * (ranked[:, 0] == y_val).float().mean().item())


def test_validation_step_before_a_bank_does_nothing() -> None:
    model = _model(BenchmarkModule, loader(8, seed=1))
    images, targets = next(iter(loader(4, seed=2)))
    model.validation_step((images, targets), 0)
    assert model._val_predicted_labels == []


def test_a_batch_of_one_works() -> None:
    """lightly 1.6 squeezes the (1, D, 1, 1) features of a single image to (D,) and fails."""
    model = _model(BenchmarkModule, loader(8, seed=1, batch_size=3))
    metrics = MetricCallback()
    trainer(max_epochs=1, callbacks=[metrics]).fit(
        model, loader(8, seed=3), loader(5, seed=2, batch_size=4)
    )
    (accuracy,) = metrics.train_metrics["kNN_accuracy"]
    assert accuracy in {100 * n / 5 for n in range(6)}
