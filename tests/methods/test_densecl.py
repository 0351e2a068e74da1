from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.methods.base import StepInfo
from fastssl.methods.densecl import DenseCL
from tests.methods._two_view_steps import (
    check_default_step,
    check_deterministic,
    check_ema_moves,
    tiny_cnn,
    two_views,
)

TINY = {"hidden_dim": 32, "output_dim": 16, "memory_bank_size": 64}


def make(**kwargs: object) -> DenseCL:
    return DenseCL(backbone=tiny_cnn(maps=True), input_size=16, **{**TINY, **kwargs})  # type: ignore[arg-type]


def test_resnet_default_transform_step_trains_the_query_encoder_only() -> None:
    torch.manual_seed(0)
    model = DenseCL(backbone="resnet18", input_size=32, **TINY)  # type: ignore[arg-type]
    assert model.feature_dim == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    pairs = [
        (getattr(model, name), getattr(model, f"{name}_momentum"), name)
        for name in ("backbone", "projection_head_global", "projection_head_local")
    ]
    check_default_step(model, pairs, m=0.999)


def test_momentum_encoder_moves_by_the_scheduled_momentum() -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.6, momentum_end=1.0)
    pairs: list[tuple[nn.Module, nn.Module]] = [
        (model.backbone, model.backbone_momentum),
        (model.projection_head_global, model.projection_head_global_momentum),
        (model.projection_head_local, model.projection_head_local_momentum),
    ]
    check_ema_moves(model, pairs, StepInfo(step=9, max_steps=10), 1.0)
    check_ema_moves(model, pairs, StepInfo(step=0, max_steps=10), 0.6)


def infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    terms = [
        -torch.log_softmax(torch.cat([(q[i] @ k[i]).view(1), queue @ q[i]]) / 0.2, 0)[0]
        for i in range(q.shape[0])
    ]
    return torch.stack(terms).mean()


def test_loss_is_global_plus_dense_infonce_with_backbone_matching() -> None:
    torch.manual_seed(0)
    model = make(lambda_=0.3)
    queue_g = model.memory_bank_global.bank.clone()
    queue_l = model.memory_bank_local.bank.clone()
    v0, v1 = two_views(batch_size=3)
    loss = model.training_step([v0, v1])
    f_q = model.backbone(v0).flatten(2).transpose(1, 2)  # (B, hw, C)
    q_g = model.projection_head_global(f_q.mean(1))
    q_l = model.projection_head_local(f_q)
    with torch.no_grad():
        f_k = model.backbone_momentum(v1).flatten(2).transpose(1, 2)
        k_g = model.projection_head_global_momentum(f_k.mean(1))
        k_l = model.projection_head_local_momentum(f_k)
    matched = torch.empty_like(q_l)
    for b in range(f_q.shape[0]):
        for i in range(f_q.shape[1]):
            sims = F.cosine_similarity(f_q[b, i].unsqueeze(0), f_k[b], dim=1)
            matched[b, i] = k_l[b, int(sims.argmax())]
    expected = 0.7 * infonce(q_g, k_g, queue_g) + 0.3 * infonce(
        q_l.flatten(end_dim=1), matched.flatten(end_dim=1), queue_l
    )
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    # Queues: the global keys, and one mean dense key per image (the reference code's).
    torch.testing.assert_close(model.memory_bank_global.bank[:3], F.normalize(k_g, dim=1))
    torch.testing.assert_close(model.memory_bank_local.bank[:3], F.normalize(k_l.mean(1), dim=1))
    torch.testing.assert_close(model.memory_bank_local.bank[3:], queue_l[3:])


def test_defaults_are_the_papers() -> None:
    model = DenseCL(backbone=tiny_cnn(maps=True), input_size=16)
    assert model.memory_bank_global.size == model.memory_bank_local.size == (65536, 128)
    assert (model.temperature, model.lambda_, model.momentum_start) == (0.2, 0.5, 0.999)
    opt = DenseCL.optimizer_defaults
    assert (opt.name, opt.lr, opt.weight_decay) == ("sgd", 0.03, 1e-4)


def test_deterministic_under_a_seed() -> None:
    check_deterministic(make)


@pytest.mark.parametrize(
    ("backbone", "match"),
    [
        ("vit_b_16", "backbone='vit_b_16'.*vision transformer"),
        (tiny_cnn(), r"backbone='Sequential'.*\(2, 8\), not \(B, C, h, w\)"),
    ],
)
def test_backbones_without_a_feature_map_are_refused(backbone: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseCL(backbone=backbone, input_size=16, **TINY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lambda_": 1.5}, "lambda_.*1.5"),
        ({"memory_bank_size": 0}, "memory_bank_size.*0"),
        ({"momentum_end": 1.2}, "momentum_end"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
