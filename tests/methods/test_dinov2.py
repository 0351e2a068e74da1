from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss
from lightly.loss import IBOTPatchLoss as LightlyIBOTPatchLoss
from lightly.loss import KoLeoLoss as LightlyKoLeoLoss

from fastssl.methods import dinov2 as dinov2_module
from fastssl.methods.base import StepInfo
from fastssl.methods.dinov2 import DINOv2
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
    tiny_vit,
)

TINY = {"hidden_dim": 32, "bottleneck_dim": 16, "output_dim": 64, "n_local_views": 2}


def make(**kwargs: object) -> DINOv2:
    return DINOv2(backbone=tiny_vit(), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


def random_views(batch: int = 4) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, 32, 32), torch.randn(batch, 3, 32, 32)] + [
        torch.randn(batch, 3, 16, 16) for _ in range(2)
    ]


def test_default_transform_step_trains_the_student_only() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model, batch_size=2)
    # 2 global crops and 2 local crops of 96/224 of 32 px in whole 8 px patches.
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 2
    teacher_before = params_of(model.teacher_backbone) + params_of(model.teacher_head)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10, epoch=1))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert changed(model, before, "backbone.") and changed(model, before, "head.dino.")
    assert changed(model, before, "backbone.mask_token")  # the student saw masked patches
    # The teacher moves only by the EMA, which at step 0 uses the student before the step.
    student_before = [
        before[n] for n, _ in [*model.named_parameters()] if n.startswith(("backbone.", "head."))
    ]
    assert_ema(
        params_of(model.teacher_backbone) + params_of(model.teacher_head),
        teacher_before,
        student_before,
        m=0.992,
    )
    teacher = [*model.teacher_backbone.parameters(), *model.teacher_head.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in teacher)
    assert model.ema_backbone() is model.teacher_backbone and model.eval_network == "ema"
    assert model(views[0]).shape == (2, 32)


@pytest.mark.parametrize("step", [0, 4, 9])
def test_teacher_moves_by_the_cosine_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.6)
    student = params_of(model.backbone) + params_of(model.head)
    teacher = params_of(model.teacher_backbone) + params_of(model.teacher_head)
    model.training_step(random_views(2), StepInfo(step=step, max_steps=10))
    # Reference: m = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2 over the run's steps.
    m = 1 - 0.4 * (math.cos(math.pi * step / 9) + 1) / 2
    after = params_of(model.teacher_backbone) + params_of(model.teacher_head)
    assert_ema(after, teacher, student, m)


def fixed_masks(batch: int, height: int, width: int, *_: object) -> torch.Tensor:
    """Global crop i gets its first i % 4 rows of patches masked (crop 0 none)."""
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    for i in range(batch):
        masks[i, : i % 4] = True
    return masks


@pytest.mark.parametrize("epoch", [0, 7, 40])
def test_loss_is_lightlys_dino_ibot_and_koleo_on_the_same_outputs(
    epoch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dinov2_module, "_block_masks", fixed_masks)
    torch.manual_seed(0)
    model = make()
    views = random_views(3)
    loss = model.training_step(views, StepInfo(step=0, max_steps=10, epoch=epoch))

    masks = fixed_masks(6, 4, 4)
    token_mask = torch.cat([torch.zeros(6, 1, dtype=torch.bool), masks.flatten(1)], dim=1)
    global_views = torch.cat(views[:2])
    with torch.no_grad():  # the teacher after this step's EMA update; the student unchanged
        teacher_tokens = model.teacher_backbone.encode(global_views)
        teacher_cls = model.teacher_head.dino(teacher_tokens[:, 0])
        teacher_patches = model.teacher_head.dino(teacher_tokens[:, 1:][masks.flatten(1)])
        student_tokens = model.backbone.encode(global_views, mask=token_mask)
        student_cls = model.head.dino(student_tokens[:, 0])
        student_patches = model.head.dino(student_tokens[:, 1:][masks.flatten(1)])
        local = [model.head.dino(model.backbone.encode(v)[:, 0]) for v in views[2:]]
    dino = LightlyDINOLoss(
        output_dim=64, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30
    )
    temp = float(dino.teacher_temp_schedule[epoch]) if epoch < 30 else 0.07
    expected = (
        dino(list(teacher_cls.chunk(2)), [*student_cls.chunk(2), *local], epoch=epoch)
        + LightlyIBOTPatchLoss(output_dim=64)(
            teacher_patches, student_patches, masks, teacher_temp=temp
        )
        + 0.1 * sum(LightlyKoLeoLoss()(c) for c in student_tokens[:, 0].chunk(2))
    )
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_without_masks_the_loss_is_dino_and_koleo_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dinov2_module, "_block_masks", fixed_masks)
    views = random_views(3)
    losses, grads = [], []
    for kwargs in ({"mask_probability": 0.0}, {"ibot_loss_weight": 0.0}, {}):
        torch.manual_seed(0)
        model = make(**kwargs)
        loss = model.training_step(views, StepInfo(epoch=1))
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.backbone.mask_token.grad)
    # No iBOT term: the mask token is unused and the two losses agree.
    torch.testing.assert_close(losses[0], losses[1])
    assert grads[0] is None and grads[1] is None
    assert not make(mask_probability=0.0).backbone.mask_token.requires_grad  # unused: frozen
    # With it, the student sees the mask token at the masked patches.
    assert not torch.allclose(losses[2], losses[0])
    assert grads[2] is not None and grads[2].any()


def test_masks_are_dinov2s_blocks() -> None:
    torch.manual_seed(0)
    model = make()
    masks = model.masks(16, 14, 14, torch.device("cpu"))
    assert masks.shape == (16, 14, 14) and masks.dtype == torch.bool
    ratios = masks.flatten(1).float().mean(dim=1)
    assert int((ratios > 0).sum()) == 8  # mask_probability 0.5 of the crops
    assert float(ratios.max()) <= 0.5  # max_mask_ratio
    # Crops of a 2 x 2 grid (a 32 px crop of 16 px patches) still get masks.
    small = model.masks(64, 2, 2, torch.device("cpu"))
    assert small.any() and not small.all(dim=(1, 2)).any()


def test_mask_op_fake_kernel_matches_its_output() -> None:
    torch.library.opcheck(
        dinov2_module._block_masks,
        (8, 6, 6, 0.5, 0.1, 0.5, torch.device("cpu")),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_separate_ibot_head_trains_and_follows_its_teacher() -> None:
    torch.manual_seed(0)
    model = make(ibot_separate_head=True)
    assert model.head.ibot is not None and model.head.patch_head() is model.head.ibot
    assert model.teacher_head.ibot is not None
    teacher_before = params_of(model.teacher_head.ibot)
    views = random_views(4)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10, epoch=1))
    assert torch.isfinite(loss) and changed(model, before, "head.ibot.")
    student_before = [before[f"head.ibot.{n}"] for n, _ in model.head.ibot.named_parameters()]
    assert_ema(params_of(model.teacher_head.ibot), teacher_before, student_before, m=0.992)


@pytest.mark.parametrize(("epoch", "cancelled"), [(0, True), (1, False)])
def test_last_layers_are_frozen_in_the_first_epoch(epoch: int, cancelled: bool) -> None:
    torch.manual_seed(0)
    model = make(ibot_separate_head=True)
    model.training_step(random_views(4), StepInfo(epoch=epoch)).backward()
    model.before_optimizer_step(StepInfo(epoch=epoch))
    for head in (model.head.dino, model.head.patch_head()):
        assert (head.last_layer.weight_v.grad is None) == cancelled
        assert head.layers[0].weight.grad is not None


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses.append(model.training_step(default_views(model, seed=1), StepInfo()).item())
    assert losses[0] == losses[1]


def test_training_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = make(momentum_start=1.0)  # a fixed teacher: the student's targets stay put
    views = random_views(8)
    params = [p for m in model.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05)
    losses = []
    for step in range(40):
        info = StepInfo(step=step, max_steps=40, epoch=1)
        optimizer.zero_grad()
        loss = model.training_step(views, info)
        loss.backward()
        model.before_optimizer_step(info)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


def test_timm_backbone_gets_uniform_drop_path_in_the_student_only() -> None:
    torch.manual_seed(0)
    model = DINOv2(
        backbone="timm:vit_tiny_patch16_224(init_values=1.0e-05)",
        input_size=32,
        drop_path_rate=0.3,
        **TINY,  # type: ignore[arg-type]
    )
    student, teacher = model.backbone.vit, model.teacher_backbone.vit
    assert [b.drop_path1.drop_prob for b in student.blocks] == [0.3] * len(student.blocks)
    assert all(b.drop_path2.drop_prob == 0.0 for b in teacher.blocks)
    assert model.local_crop_size == 16 and model.feature_dim == 192
    loss, _ = optimizer_step(model, random_views(2), StepInfo(epoch=1))
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"momentum_start": 1.5}, "momentum_start"),
        ({"n_local_views": -1}, "n_local_views"),
        ({"output_dim": 0}, "output_dim"),
        ({"mask_probability": 1.5}, "mask_probability"),
        ({"min_mask_ratio": 0.6}, "min_mask_ratio"),
        ({"koleo_loss_weight": -1.0}, "koleo_loss_weight"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"freeze_last_layer": -1}, "freeze_last_layer"),
        ({"teacher_temp": 0.0}, "teacher_temp"),
        ({"local_crop_size": 12}, "local_crop_size"),  # not a multiple of the 8 px patches
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_needs_a_vit_and_two_global_views() -> None:
    with pytest.raises(ValueError, match="not a vision transformer"):
        DINOv2(backbone="resnet18", input_size=32, **TINY)  # type: ignore[arg-type]
    model = make()
    with pytest.raises(ValueError, match="at least 2 views"):
        model.training_step([torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError, match="2 global crops"):
        model.training_step([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)])
