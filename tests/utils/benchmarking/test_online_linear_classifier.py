from __future__ import annotations

import pytest
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier as LightlyOnlineLinearClassifier

from fastssl.utils.benchmarking import OnlineLinearClassifier


def _pair(
    feature_dim: int, num_classes: int, topk: tuple[int, ...]
) -> tuple[OnlineLinearClassifier, LightlyOnlineLinearClassifier]:
    torch.manual_seed(0)
    ours = OnlineLinearClassifier(feature_dim, num_classes, topk)
    theirs = LightlyOnlineLinearClassifier(feature_dim, num_classes, topk)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def test_defaults_match_lightly() -> None:
    ours, theirs = OnlineLinearClassifier(), LightlyOnlineLinearClassifier()
    assert (ours.feature_dim, ours.num_classes, ours.topk) == (2048, 1000, (1, 5))
    assert ours.classification_head.weight.shape == theirs.classification_head.weight.shape


@pytest.mark.parametrize(
    ("shape", "num_classes", "topk"),
    [((6, 8), 5, (1, 5)), ((4, 2, 2, 2), 3, (1, 2)), ((16, 4), 10, (1, 3, 10))],
)
@pytest.mark.parametrize("stage", ["train", "val"])
def test_steps_match_lightly(
    shape: tuple[int, ...], num_classes: int, topk: tuple[int, ...], stage: str
) -> None:
    feature_dim = int(torch.tensor(shape[1:]).prod())
    ours, theirs = _pair(feature_dim, num_classes, topk)
    g = torch.Generator().manual_seed(1)
    features = torch.randn(shape, generator=g)
    targets = torch.randint(0, num_classes, (shape[0],), generator=g)
    results = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        x = features.clone().requires_grad_()
        step = model.training_step if stage == "train" else model.validation_step
        loss, log_dict = step((x, targets), 0)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        results[name] = (loss, log_dict, grads, x.grad)
    (loss, log_dict, grads, x_grad), (t_loss, t_log, t_grads, t_x_grad) = results.values()
    torch.testing.assert_close(loss, t_loss)
    assert list(log_dict) == list(t_log)
    assert list(log_dict) == [f"{stage}_online_cls_loss"] + [
        f"{stage}_online_cls_top{k}" for k in topk
    ]
    for key in log_dict:
        torch.testing.assert_close(log_dict[key], t_log[key])
    for grad, t_grad in zip(grads, t_grads, strict=True):
        torch.testing.assert_close(grad, t_grad)
    assert x_grad is None and t_x_grad is None  # the features are detached


def test_forward_flattens_and_detaches() -> None:
    probe = OnlineLinearClassifier(feature_dim=12, num_classes=4)
    x = torch.randn(3, 3, 2, 2, requires_grad=True)
    logits = probe(x)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(logits, probe.classification_head(x.detach().flatten(1)))
