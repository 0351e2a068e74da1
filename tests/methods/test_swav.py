from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.loss.swav_loss import sinkhorn
from fastssl.methods.base import StepInfo
from fastssl.methods.swav import SwaV
from tests.methods._method_steps import changed, default_views, optimizer_step, tiny_vit

TINY = {"hidden_dim": 32, "output_dim": 16, "n_prototypes": 8, "n_local_views": 2}


def make(backbone: object = None, **kwargs: object) -> SwaV:
    net = tiny_vit() if backbone is None else backbone
    return SwaV(backbone=net, input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("backbone", ["vit", "resnet18"])
def test_default_transform_step(backbone: str) -> None:
    torch.manual_seed(0)
    model = make(None if backbone == "vit" else backbone, n_steps_frozen_prototypes=0)
    views = default_views(model, batch_size=2)
    assert len(views) == 4 and views[0].shape[-1] == 32
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.shape == () and torch.isfinite(loss)
    for prefix in ("backbone.", "projection_head.", "prototypes."):
        assert changed(model, before, prefix)
    assert all(layer.bias is None for layer in model.prototypes.heads)


@pytest.mark.parametrize(("step", "frozen"), [(0, True), (2, True), (3, False)])
def test_prototypes_frozen_for_the_first_steps(step: int, frozen: bool) -> None:
    torch.manual_seed(0)
    model = make(n_steps_frozen_prototypes=3)
    views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)]
    _, before = optimizer_step(model, views, StepInfo(step=step, max_steps=10))
    weight = model.prototypes.heads[0].weight
    normalized = F.normalize(before["prototypes.heads.0.weight"], dim=1)
    # The step normalises the prototypes; the optimizer moves them only once unfrozen.
    assert torch.allclose(weight, normalized, atol=1e-6) == frozen
    assert changed(model, before, "backbone.")


def test_loss_is_swapped_prediction_of_sinkhorn_codes() -> None:
    torch.manual_seed(0)
    model = make(sinkhorn_gather_distributed=False)
    high = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    low = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    loss = model.training_step(high + low, StepInfo())
    with torch.no_grad():
        weight = model.prototypes.heads[0].weight  # normalised by the step
        scores = []
        for group in (torch.cat(high), torch.cat(low)):  # the head's batch norm sees groups
            z = F.normalize(model.projection_head(model.backbone(group)), dim=1)
            scores.extend((z @ weight.T).chunk(2))
    expected = torch.zeros(())
    for i in range(2):
        codes = sinkhorn(scores[i], iterations=3, epsilon=0.05)
        for v in range(4):
            if v != i:
                log_p = F.log_softmax(scores[v] / 0.1, dim=1)
                expected = expected - (codes * log_p).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected / (2 * 3), rtol=1e-4, atol=1e-6)


def test_queue_used_from_start_epoch() -> None:
    views = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)]
    losses = {}
    for name, kwargs in {
        "plain": {},
        "queue": {"queue_length": 8, "start_queue_at_epoch": 1},
    }.items():
        torch.manual_seed(0)
        model = make(**kwargs)
        losses[name] = [model.training_step(views, StepInfo(epoch=e)).item() for e in (0, 1)]
    assert losses["queue"][0] == pytest.approx(losses["plain"][0], rel=1e-6)
    assert losses["queue"][1] != pytest.approx(losses["plain"][1], rel=1e-3)
    assert len(model.queues) == 2 and model.queues[0].bank.shape == (8, 16)


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(5)
        model = make()
        losses.append(model.training_step(default_views(model, seed=2), StepInfo()).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps_frozen_prototypes": -1}, "n_steps_frozen_prototypes"),
        ({"queue_length": -8}, "queue_length"),
        ({"n_high_res_views": 0}, "n_high_res_views"),
        ({"n_high_res_views": 1, "n_local_views": 0}, "at least 2 crops"),
        ({"local_crop_size": 20}, "local_crop_size"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_trainable_modules_hold_every_parameter() -> None:
    model = make()
    trainable = {id(p) for m in model.trainable_modules() for p in m.parameters()}
    assert trainable == {id(p) for p in model.parameters()}
    assert isinstance(model.trainable_modules()[0], nn.Module)
