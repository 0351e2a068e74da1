from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.moco import MoCo, moco_v3_loss
from fastssl.transforms.byol_transform import BYOLTransform
from fastssl.transforms.moco_transform import MoCoV2Transform
from tests._distributed import run_distributed
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16, "memory_bank_size": 64}


def make(**kwargs: object) -> MoCo:
    return MoCo(backbone=tiny_cnn(), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "m"), [("v2", 0.999), ("v3", 0.99)])
def test_default_transform_step_trains_the_query_encoder_only(version: str, m: float) -> None:
    torch.manual_seed(0)
    model = make(version=version)
    pairs = [
        (model.backbone, model.backbone_momentum, "backbone"),
        (model.projection_head, model.projection_head_momentum, "projection_head"),
    ]
    check_default_step(model, pairs, m=m)
    transform = MoCoV2Transform if version == "v2" else BYOLTransform
    assert isinstance(model.default_transform(), transform)
    assert (model.prediction_head is not None) == (version == "v3")


@pytest.mark.parametrize("step", [0, 4, 9, 20])
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_key_encoder_moves_by_the_scheduled_momentum(version: str, step: int) -> None:
    torch.manual_seed(0)
    model = make(version=version, momentum=0.5)
    # v2: constant; v3: cosine 0.5 -> 1 over the steps, clamped at the last one.
    s = min(step, 9)
    m = 0.5 if version == "v2" else 1 - 0.5 * (math.cos(math.pi * s / 9) + 1) / 2
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head, model.projection_head_momentum),
    ]
    check_ema_moves(model, pairs, StepInfo(step=step, max_steps=10), m)


def test_v2_loss_contrasts_with_the_queue_then_enqueues_the_keys() -> None:
    torch.manual_seed(0)
    model = make()
    assert model.criterion is not None
    bank = model.criterion.memory_bank
    queue = bank.bank.clone()
    v0, v1 = two_views()
    loss = model.training_step([v0, v1])
    q = F.normalize(model.projection_head(model.backbone(v0)), dim=1)
    with torch.no_grad():
        k = F.normalize(model.projection_head_momentum(model.backbone_momentum(v1)), dim=1)
    expected = torch.zeros(())
    for i in range(q.shape[0]):  # InfoNCE, one query at a time: positive first, then the queue
        logits = torch.cat([(q[i] @ k[i]).view(1), queue @ q[i]]) / 0.2
        expected = expected - torch.log_softmax(logits, 0)[0]
    torch.testing.assert_close(loss, expected / q.shape[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bank.bank[:6], k)
    torch.testing.assert_close(bank.bank[6:], queue[6:])
    assert int(bank.bank_ptr) == 6


def test_v3_loss_is_symmetric_infonce_with_in_batch_keys() -> None:
    torch.manual_seed(0)
    model = make(version="v3")
    v0, v1 = two_views()
    loss = model.training_step([v0, v1], StepInfo(step=2, max_steps=10))
    assert model.prediction_head is not None
    q0, q1 = (model.prediction_head(model.projection_head(model.backbone(v))) for v in (v0, v1))
    with torch.no_grad():
        k0, k1 = (model.projection_head_momentum(model.backbone_momentum(v)) for v in (v0, v1))

    def ctr(q: torch.Tensor, k: torch.Tensor, t: float = 0.2) -> torch.Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        terms = [-torch.log_softmax(q[i] @ k.T / t, 0)[i] for i in range(q.shape[0])]
        return torch.stack(terms).mean() * 2 * t  # Algorithm 1 of the paper

    torch.testing.assert_close(loss, ctr(q0, k1) + ctr(q1, k0), rtol=1e-4, atol=1e-6)
    loss.backward()
    assert model.prediction_head.layers[0].weight.grad is not None


def test_version_defaults_are_the_papers() -> None:
    v2, v3 = make(hidden_dim=None, output_dim=None), make(version="v3", hidden_dim=None)
    assert (v2.momentum_start, v3.momentum_start, v3.momentum_end) == (0.999, 0.99, 1.0)
    assert v2.projection_head.layers[0].out_features == 2048
    assert v2.projection_head.layers[-1].out_features == 128
    assert v3.projection_head.layers[0].out_features == 4096
    assert v3.projection_head.layers[-2].out_features == 16  # output_dim given, then BN
    assert MoCo(backbone=tiny_cnn(), input_size=16).criterion.memory_bank.size == (65536, 128)  # type: ignore[union-attr]
    assert (v2.optimizer_defaults.name, v2.optimizer_defaults.lr) == ("sgd", 0.03)
    assert v2.optimizer_defaults.weight_decay == 1e-4
    assert (v3.optimizer_defaults.name, v3.optimizer_defaults.lr) == ("lars", 0.3)
    assert v3.optimizer_defaults.weight_decay == 1.5e-6


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_deterministic_under_a_seed(version: str) -> None:
    check_deterministic(lambda: make(version=version))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": "v4"}, r"version.*'v2', 'v3'.*version='v4'"),
        ({"momentum": 1.5}, "momentum_start.*1.5"),
        ({"momentum_end": -0.1}, "momentum_end"),
        ({"memory_bank_size": 0}, "memory_bank_size.*0"),
        ({"temperature": 0.0}, "temperature"),
        ({"hidden_dim": 0}, "hidden_dim"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def _ddp_worker(full: torch.Tensor, keys: torch.Tensor) -> dict[str, torch.Tensor]:
    from fastssl.utils import dist

    rank, half = dist.rank(), full.shape[0] // 2
    torch.manual_seed(0)
    layer = nn.Linear(full.shape[1], 4)
    local = slice(rank * half, (rank + 1) * half)
    moco_v3_loss(layer(full[local]), keys[local], 0.2).backward()
    # Shuffle BN plumbing: with an eval-mode key encoder the shuffled keys come back in order.
    torch.manual_seed(1)
    model = MoCo(backbone=tiny_cnn(), input_size=16, **TINY)  # type: ignore[arg-type]
    model.eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(rank))
    with torch.no_grad():
        plain = model.projection_head_momentum(model.backbone_momentum(images))
    return {"grad": layer.weight.grad, "shuffled": model.key(images), "plain": plain}  # type: ignore[dict-item]


@pytest.mark.dist
def test_v3_loss_and_shuffle_bn_across_two_processes() -> None:
    full = torch.randn(8, 6, generator=torch.Generator().manual_seed(3))
    keys = torch.randn(8, 4, generator=torch.Generator().manual_seed(4))
    out = run_distributed(_ddp_worker, 2, full, keys)
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    moco_v3_loss(layer(full), keys, 0.2).backward()
    assert layer.weight.grad is not None
    mean_grad = (out[0]["grad"] + out[1]["grad"]) / 2  # what DDP's all-reduce does
    torch.testing.assert_close(mean_grad, layer.weight.grad, atol=1e-5, rtol=1e-4)
    for result in out:
        torch.testing.assert_close(result["shuffled"], result["plain"], atol=1e-5, rtol=1e-4)
