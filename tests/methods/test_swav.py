from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.loss.swav_loss import sinkhorn
from fastssl.methods._common import forward_views
from fastssl.methods.base import StepInfo
from fastssl.methods.swav import SwaV
from tests._distributed import run_distributed
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
    assert model.queue.shape == (2, 8, 16) and model.queue_size() == 8


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _views(seed: int, batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(batch, 3, 8, 8, generator=g)
    ]


def _make_cnn(**kwargs: object) -> SwaV:
    torch.manual_seed(0)
    settings = {**TINY, "n_local_views": 1, "local_crop_size": 8, **kwargs}
    return SwaV(backbone=_tiny_cnn(), input_size=16, feature_dim=8, **settings)  # type: ignore[arg-type]


@torch.no_grad()
def _projections(model: SwaV, views: list[torch.Tensor]) -> torch.Tensor:
    """The normalised projections of the global crops, as the step computes them."""
    return torch.stack(forward_views(model._project, views[:2]))


def test_queue_is_first_in_first_out_newest_first() -> None:
    model = _make_cnn(queue_length=6)
    steps = [_views(seed) for seed in range(3)]
    for views in steps:
        model.training_step(views, StepInfo(epoch=0))
    newest, previous = _projections(model, steps[2]), _projections(model, steps[1])
    torch.testing.assert_close(model.queue[:, :4], newest)
    torch.testing.assert_close(model.queue[:, 4:6], previous[:, :2])


def test_queue_follows_the_module_and_is_not_saved() -> None:
    model = _make_cnn(queue_length=8).to(torch.float64)
    assert model.queue.dtype == torch.float64
    assert not any("queue" in key for key in model.state_dict())
    model.training_step([v.double() for v in _views(0)], StepInfo())  # the queue's dtype
    assert model.queue.dtype == torch.float64


class _StepModule(nn.Module):
    """``forward`` runs the method's training step, as Lightning's DDP wrapper does."""

    def __init__(self, method: SwaV) -> None:
        super().__init__()
        self.method = method

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return self.method.training_step(views, StepInfo(epoch=0))


def _ddp_queue_worker() -> dict[str, torch.Tensor | int]:
    import torch.distributed as torch_dist

    rank = torch_dist.get_rank()
    model = _make_cnn(queue_length=16, sinkhorn_gather_distributed=True)
    ddp = nn.parallel.DistributedDataParallel(_StepModule(model))
    steps = [_views(100 * rank + step) for step in range(2)]
    for views in steps:  # DDP broadcasts rank 0's buffers before every forward
        ddp(views).backward()
    return {
        "size": model.queue_size(),
        "queue": model.queue[:, :8].clone(),
        "expected": torch.cat([_projections(model, steps[1]), _projections(model, steps[0])], 1),
    }


@pytest.mark.dist
def test_each_process_queues_its_own_share_of_queue_length() -> None:
    # queue_length counts all processes (SwaV's --queue_length 3840): 16 over 2 processes
    # keeps 8 per process, and each keeps its own projections (a buffer would be replaced by
    # rank 0's before every forward pass under DDP).
    results = run_distributed(_ddp_queue_worker, 2)
    for result in results:
        assert result["size"] == 8
        torch.testing.assert_close(result["queue"], result["expected"])
    assert not torch.allclose(results[0]["queue"], results[1]["queue"])


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
