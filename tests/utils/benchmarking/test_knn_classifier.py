from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from lightly.utils.benchmarking import KNNClassifier as LightlyKNNClassifier
from torch.utils.data import DataLoader, TensorDataset

from fastssl.utils.benchmarking import KNNClassifier, knn_predict

from ._lightning import FEATURE_DIM, NUM_CLASSES, backbone, loader, trainer


def test_signature_matches_lightly() -> None:
    def parameters(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(KNNClassifier) == parameters(LightlyKNNClassifier)


def _validate(cls: type, model: torch.nn.Module | None, loaders: list, **kwargs: Any) -> tuple:
    classifier = cls(
        model, num_classes=NUM_CLASSES, train_dataloader_idx=0, val_dataloader_idx=1, **kwargs
    )
    results = trainer().validate(classifier, dataloaders=loaders, verbose=False)
    return classifier, results


@torch.no_grad()
def _features_loader(model: torch.nn.Module, images: DataLoader) -> DataLoader:
    """The same batches with the model's features in place of the images."""
    features = torch.cat([model(x).flatten(1) for x, _ in images])
    targets = torch.cat([y for _, y in images])
    return DataLoader(TensorDataset(features, targets), batch_size=images.batch_size)


@pytest.mark.parametrize("with_model", [True, False])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(knn_k=3, knn_t=0.1),
        dict(knn_k=10, knn_t=0.5, topk=(1, 2, 3)),
        dict(knn_k=5, knn_t=0.07, normalize=False),
        dict(knn_k=5, knn_t=0.1, feature_dtype=torch.float64),
    ],
)
def test_validate_matches_lightly(with_model: bool, kwargs: dict[str, Any]) -> None:
    train, val = loader(24, seed=1), loader(16, seed=2, batch_size=5)
    model: torch.nn.Module | None = backbone().eval()
    if not with_model:  # the dataloaders deliver features
        assert model is not None
        train, val = _features_loader(model, train), _features_loader(model, val)
        model = None
    ours, results = _validate(KNNClassifier, model, [train, val], **kwargs)
    theirs, their_results = _validate(LightlyKNNClassifier, model, [train, val], **kwargs)
    topk = kwargs.get("topk", (1, 5))
    assert set(results[1]) == {f"val_knn_top{k}/dataloader_idx_1" for k in topk}
    assert results[0] == their_results[0] == {}
    assert results[1] == pytest.approx(their_results[1])
    assert dict(ours.hparams) == dict(theirs.hparams)
    assert ours._train_features_tensor is not None
    assert ours._train_features_tensor.shape == (FEATURE_DIM, 24)
    assert ours._train_features_tensor.dtype == kwargs.get("feature_dtype", torch.float32)


def test_accuracy_equals_knn_predict_on_the_whole_set() -> None:
    model = backbone().eval()
    train, val = loader(24, seed=1), loader(16, seed=2, batch_size=16)
    _, results = _validate(KNNClassifier, model, [train, val], knn_k=4, knn_t=0.2, topk=(1, 2))
    with torch.no_grad():
        (x_train, y_train), (x_val, y_val) = [
            next(iter(loader(n, seed=s, batch_size=n))) for n, s in ((24, 1), (16, 2))
        ]
        bank = torch.nn.functional.normalize(model(x_train).flatten(1), dim=1)
        queries = torch.nn.functional.normalize(model(x_val).flatten(1), dim=1)
    ranked = knn_predict(queries, bank.T, y_train, NUM_CLASSES, knn_k=4, knn_t=0.2)
    top1 = (ranked[:, 0] == y_val).float().mean().item()
    top2 = (ranked[:, :2] == y_val[:, None]).any(dim=1).float().mean().item()
    assert results[1] == pytest.approx(
        {"val_knn_top1/dataloader_idx_1": top1, "val_knn_top2/dataloader_idx_1": top2}
    )


def test_second_validation_rebuilds_the_bank() -> None:
    model = backbone().eval()
    classifier = KNNClassifier(model, NUM_CLASSES, 3, 0.1, 0, 1)
    run = trainer()
    loaders = [loader(24, seed=1), loader(16, seed=2)]
    first = run.validate(classifier, dataloaders=loaders, verbose=False)
    second = run.validate(classifier, dataloaders=loaders, verbose=False)
    assert first == second
    assert classifier._train_features_tensor is not None
    assert classifier._train_features_tensor.shape[1] == 24  # not 48


def test_validation_step_without_trainer_returns_the_log_dict() -> None:
    model = backbone().eval()
    classifier = KNNClassifier(model, NUM_CLASSES, 3, 0.1, 0, 1, topk=(1,))
    images, targets = next(iter(loader(8, seed=1)))
    assert classifier.validation_step((images, targets), 0, dataloader_idx=0) is None
    log_dict = classifier.validation_step((images, targets), 0, dataloader_idx=1)
    assert log_dict is not None and list(log_dict) == ["val_knn_top1"]
    # The bank holds the same images: each one's nearest neighbour is itself.
    assert log_dict["val_knn_top1"].item() >= 0.5
    assert classifier.training_step((images, targets), 0) is None
    assert classifier.configure_optimizers() is None


def test_forward_without_model_raises() -> None:
    with pytest.raises(ValueError, match="needs a model"):
        KNNClassifier(None, NUM_CLASSES, 3, 0.1, 0, 1)(torch.randn(2, 3, 6, 6))
