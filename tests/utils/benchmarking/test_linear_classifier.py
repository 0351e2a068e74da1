from __future__ import annotations

import copy
import inspect

import pytest
import torch
from lightly.utils.benchmarking import FinetuneClassifier as LightlyFinetuneClassifier
from lightly.utils.benchmarking import LinearClassifier as LightlyLinearClassifier

from fastssl.utils.benchmarking import FinetuneClassifier, LinearClassifier
from fastssl.utils.benchmarking.linear_classifier import BaseClassifier

from ._lightning import FEATURE_DIM, NUM_CLASSES, backbone, loader, trainer

PAIRS = [
    (LinearClassifier, LightlyLinearClassifier),
    (FinetuneClassifier, LightlyFinetuneClassifier),
]


def _parameters(cls: type) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_signature_matches_lightly(ours: type, theirs: type) -> None:
    assert _parameters(ours) == _parameters(theirs)


def test_base_classifier_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        BaseClassifier(backbone(), 8, 0.1, FEATURE_DIM, NUM_CLASSES, (1,))  # type: ignore[abstract]


def _fit(cls: type, model: torch.nn.Module, head_state: dict, topk: tuple[int, ...]) -> tuple:
    classifier = cls(
        model, batch_size_per_device=8, feature_dim=FEATURE_DIM, num_classes=NUM_CLASSES, topk=topk
    )
    classifier.classification_head.load_state_dict(head_state)
    run = trainer(max_epochs=2)
    run.fit(classifier, loader(24, seed=1), loader(16, seed=2))
    metrics = {k: float(v) for k, v in run.callback_metrics.items()}
    return classifier, metrics, run


@pytest.mark.parametrize(("ours_cls", "theirs_cls"), PAIRS)
@pytest.mark.parametrize("topk", [(1, 5), (1, 2, 3)])
def test_fit_matches_lightly(ours_cls: type, theirs_cls: type, topk: tuple[int, ...]) -> None:
    model = backbone()
    head = torch.nn.Linear(FEATURE_DIM, NUM_CLASSES).state_dict()
    ours, metrics, run = _fit(ours_cls, copy.deepcopy(model), head, topk)
    theirs, their_metrics, their_run = _fit(theirs_cls, copy.deepcopy(model), head, topk)

    expected = {"train_loss", "val_loss"} | {f"{s}_top{k}" for s in ("train", "val") for k in topk}
    assert set(metrics) == set(their_metrics) == expected
    assert metrics == pytest.approx(their_metrics, rel=1e-5, abs=1e-6)
    assert set(run.progress_bar_metrics) == set(their_run.progress_bar_metrics)
    assert dict(ours.hparams) == dict(theirs.hparams)
    for (name, p), q in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    assert ours.get_effective_lr() == theirs.get_effective_lr() == ours.lr * 8 / 256
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        their_run.optimizers[0].param_groups[0]["lr"]
    )

    # What is trained: the head always; the backbone (and its BatchNorm statistics) only
    # when fine-tuning.
    assert not torch.equal(ours.classification_head.weight, head["weight"])
    frozen = ours_cls is LinearClassifier
    for (name, before), after in zip(
        model.state_dict().items(), ours.model.state_dict().values(), strict=True
    ):
        # A bias before BatchNorm gets no gradient (BatchNorm removes constants).
        if name.endswith("num_batches_tracked") or name == "0.bias":
            continue
        assert torch.equal(before, after) is frozen, name


def test_linear_classifier_features_have_no_gradient() -> None:
    classifier = LinearClassifier(
        backbone(), batch_size_per_device=4, feature_dim=FEATURE_DIM, num_classes=NUM_CLASSES
    )
    images, _ = next(iter(loader(4, seed=3)))
    classifier(images).sum().backward()
    assert all(p.grad is None for p in classifier.model.parameters())
    assert classifier.get_trainable_parameters() == list(
        classifier.classification_head.parameters()
    )


def test_finetune_classifier_trains_everything() -> None:
    classifier = FinetuneClassifier(
        backbone(), batch_size_per_device=4, feature_dim=FEATURE_DIM, num_classes=NUM_CLASSES
    )
    assert len(classifier.get_trainable_parameters()) == len(list(classifier.parameters()))
    images, _ = next(iter(loader(4, seed=3)))
    classifier(images).sum().backward()
    assert all(p.grad is not None for p in classifier.model.parameters())
