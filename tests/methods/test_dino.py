from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastssl.methods.base import StepInfo
from fastssl.methods.dino import DINO
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
    tiny_vit,
)

TINY = {"hidden_dim": 32, "bottleneck_dim": 16, "output_dim": 64, "n_local_views": 2}


def make(backbone: str = "vit", **kwargs: object) -> DINO:
    net = tiny_vit() if backbone == "vit" else backbone
    return DINO(backbone=net, input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("backbone", ["vit", "resnet18"])
def test_default_transform_step_trains_the_student_only(backbone: str) -> None:
    torch.manual_seed(0)
    model = make(backbone)
    views = default_views(model, batch_size=2)
    local = 16 if backbone == "vit" else 14  # 96/224 of 32 px, in whole 8 px patches for ViTs
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(local, local)] * 2
    teacher_before = params_of(model.teacher_backbone)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10, epoch=1))
    assert torch.isfinite(loss)
    assert changed(model, before, "backbone.") and changed(model, before, "head.")
    # The teacher moves only by the EMA, which at step 0 uses the student before the step.
    assert_ema(
        params_of(model.teacher_backbone),
        teacher_before,
        [before[f"backbone.{n}"] for n, _ in model.backbone.named_parameters()],
        m=0.996,
    )
    assert all(p.grad is None and not p.requires_grad for p in model.teacher_head.parameters())
    trainable = {id(p) for m in model.trainable_modules() for p in m.parameters()}
    teacher = {
        id(p) for p in [*model.teacher_backbone.parameters(), *model.teacher_head.parameters()]
    }
    assert trainable and not trainable & teacher


@pytest.mark.parametrize("step", [0, 3, 9])
def test_teacher_moves_by_the_cosine_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.5)
    views = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)]
    student = params_of(model.backbone) + params_of(model.head)
    teacher = params_of(model.teacher_backbone) + params_of(model.teacher_head)
    model.training_step(views, StepInfo(step=step, max_steps=10))
    # Paper: m = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2, over the run's steps.
    m = 1 - 0.5 * (math.cos(math.pi * step / 9) + 1) / 2
    after = params_of(model.teacher_backbone) + params_of(model.teacher_head)
    assert_ema(after, teacher, student, m)


def naive_dino_loss(
    teacher: list[torch.Tensor], student: list[torch.Tensor], temp: float
) -> torch.Tensor:
    total, pairs = torch.zeros(()), 0
    for t_index, t in enumerate(teacher):
        p = F.softmax(t / temp, dim=-1)  # the center is still 0 at the first call
        for s_index, s in enumerate(student):
            if s_index != t_index:
                total = total - (p * F.log_softmax(s / 0.1, dim=-1)).sum(-1).mean()
                pairs += 1
    return total / pairs


@pytest.mark.parametrize("epoch", [0, 2, 40])
def test_loss_is_dino_cross_entropy_with_warmed_up_teacher_temperature(epoch: int) -> None:
    torch.manual_seed(0)
    model = make()
    views = [torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32), torch.randn(3, 3, 16, 16)]
    loss = model.training_step(views, StepInfo(step=0, max_steps=10, epoch=epoch))
    with torch.no_grad():  # the teacher after this step's EMA update; the student unchanged
        teacher = [model.teacher_head(model.teacher_backbone(v)) for v in views[:2]]
        student = [model.head(model.backbone(v)) for v in views]
    temp = 0.04 + (0.07 - 0.04) * epoch / 29 if epoch < 30 else 0.07
    torch.testing.assert_close(
        loss.detach(), naive_dino_loss(teacher, student, temp), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(("epoch", "cancelled"), [(0, True), (1, False)])
def test_last_layer_gradient_cancelled_in_first_epoch_only(epoch: int, cancelled: bool) -> None:
    torch.manual_seed(0)
    model = make()
    views = [torch.randn(2, 3, 32, 32)] * 2
    model.training_step(views, StepInfo(epoch=epoch)).backward()
    info = StepInfo(epoch=epoch)
    model.before_optimizer_step(info)
    grad = model.head.last_layer.weight_v.grad
    assert (grad is None) == cancelled
    assert model.head.layers[0].weight.grad is not None


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses.append(model.training_step(default_views(model, seed=1), StepInfo()).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"momentum_start": 1.5}, "momentum_start"),
        ({"momentum_end": -0.1}, "momentum_end"),
        ({"n_local_views": -1}, "n_local_views"),
        ({"local_crop_size": 12}, "local_crop_size"),  # not a multiple of the 8 px patches
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_needs_two_views() -> None:
    with pytest.raises(ValueError, match="at least 2 views"):
        make().training_step([torch.randn(2, 3, 32, 32)])


def test_timm_student_has_drop_path_the_evaluated_teacher_none() -> None:
    # DINO's --drop_path_rate 0.1 is the student's; the teacher (what DINO evaluates:
    # --checkpoint_key teacher) runs without stochastic depth.
    pytest.importorskip("timm")
    torch.manual_seed(0)
    name = (
        "timm:vit_tiny_patch16_224(patch_size=8, embed_dim=32, depth=2, num_heads=2, "
        "drop_path_rate=0.1)"
    )
    model = make(name)
    student_rates = [
        m.drop_prob for m in model.backbone.modules() if type(m).__name__ == "DropPath"
    ]
    assert student_rates and max(student_rates) == pytest.approx(0.1)
    teacher = model.teacher_backbone.modules()
    assert all(m.drop_prob == 0 for m in teacher if type(m).__name__ == "DropPath")
    assert DINO.eval_network == "ema" and model.ema_backbone() is model.teacher_backbone
    images = torch.randn(64, 3, 32, 32)  # each image drops the last block's branches at 0.1
    model.train()
    with torch.no_grad():  # train mode: the student is stochastic, the teacher is not
        assert not torch.equal(model.backbone(images), model.backbone(images))
        assert torch.equal(model.teacher_backbone(images), model.teacher_backbone(images))
