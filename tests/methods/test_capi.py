from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import CAPILoss as LightlyCAPILoss

from fastssl.methods import capi as capi_module
from fastssl.methods.base import StepInfo
from fastssl.methods.capi import CAPI
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
    tiny_vit,
)

TINY = {"num_clusters": 64, "predictor_depth": 1, "predictor_num_heads": 2}


def make(**kwargs: object) -> CAPI:
    return CAPI(backbone=tiny_vit(), input_size=32, **{**TINY, **kwargs})  # type: ignore[arg-type]


def fixed_masks(batch: int, sequence_length: int, *_: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Keeps patches 0-5 of image 0 and patches 10-15 of the others (tokens are patch + 1)."""
    keep = torch.tensor([[0, *range(1, 7)]] + [[0, *range(11, 17)]] * (batch - 1))
    mask = torch.tensor([list(range(7, 17))] + [list(range(1, 11))] * (batch - 1))
    assert sequence_length == 17
    return keep, mask


def test_default_transform_step_trains_all_but_the_teacher_backbone() -> None:
    torch.manual_seed(0)
    model = make()
    views = default_views(model)
    assert len(views) == 1 and views[0].shape == (4, 3, 32, 32)
    teacher_before = params_of(model.teacher_backbone)
    loss, before = optimizer_step(model, views, StepInfo(step=0, max_steps=10))
    assert loss.ndim == 0 and torch.isfinite(loss)
    for prefix in ("backbone.", "predictor.", "head.", "clustering_head."):
        assert changed(model, before, prefix), prefix
    # The teacher moves only by the EMA, which at step 0 uses the student before the step.
    student_before = [before[f"backbone.{n}"] for n, _ in model.backbone.named_parameters()]
    assert_ema(params_of(model.teacher_backbone), teacher_before, student_before, m=0.999)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher_backbone.parameters())
    assert not model.backbone.mask_token.requires_grad  # masked patches are dropped, not replaced
    assert model.ema_backbone() is model.teacher_backbone and model.eval_network == "ema"
    assert model(views[0]).shape == (4, 32)


@pytest.mark.parametrize("step", [0, 4, 9])
def test_teacher_moves_by_the_cosine_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.6)
    student, teacher = params_of(model.backbone), params_of(model.teacher_backbone)
    model.training_step([torch.randn(2, 3, 32, 32)], StepInfo(step=step, max_steps=10))
    m = 1 - 0.4 * (math.cos(math.pi * step / 9) + 1) / 2
    assert_ema(params_of(model.teacher_backbone), teacher, student, m)


def test_loss_is_lightlys_capi_loss_on_the_same_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capi_module, "_inverse_block_mask", fixed_masks)
    torch.manual_seed(0)
    model = make(prediction_subsampling=1.0)  # predict every masked patch: no random subset
    images = torch.randn(3, 3, 32, 32)
    loss = model.training_step([images], StepInfo(step=0, max_steps=10))

    keep, mask = fixed_masks(3, 17)
    with torch.no_grad():  # the teacher after this step's EMA update; the student unchanged
        teacher = model.clustering_head(model.teacher_backbone.encode(images)[:, 1:])
        visible = model.backbone.encode(images, idx_keep=keep)[:, 1:]
        student = model.head(model.predictor(visible, keep[:, 1:] - 1, mask - 1))
    criterion = LightlyCAPILoss()
    expected = criterion(teacher, student, teacher_index=mask - 1) + criterion(teacher, teacher)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_student_reads_only_the_visible_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capi_module, "_inverse_block_mask", fixed_masks)
    torch.manual_seed(0)
    model = make(prediction_subsampling=1.0)
    images = torch.randn(2, 3, 32, 32)
    idx_keep, _, predict = model.masks(2, images.device)
    edited = images.clone()
    edited[1, :, :16] = 5.0  # patches 0-7 of image 1, all masked (rows 0 and 1 of the 4 x 4 grid)
    with torch.no_grad():
        before = model.predict(images, idx_keep, predict)
        after = model.predict(edited, idx_keep, predict)
    torch.testing.assert_close(before, after)
    assert not torch.allclose(model.cluster_logits(images), model.cluster_logits(edited))


def test_masks_keep_one_block_and_predict_a_subset() -> None:
    torch.manual_seed(0)
    model = make(prediction_subsampling=0.5)
    idx_keep, idx_mask, predict = model.masks(8, torch.device("cpu"))
    # 16 patches: int(16 * 0.65) = 10 masked, 6 visible after the class token.
    assert idx_keep.shape == (8, 7) and idx_mask.shape == (8, 10) and predict.shape == (8, 5)
    assert bool((idx_keep[:, 0] == 0).all())
    tokens = torch.cat([idx_keep, idx_mask], dim=1).sort(dim=1).values
    assert torch.equal(tokens, torch.arange(17).expand(8, -1))  # a partition of the tokens
    for row in range(8):  # predictions are distinct masked patches (token = patch + 1)
        assert set((predict[row] + 1).tolist()) <= set(idx_mask[row].tolist())
        assert len(set(predict[row].tolist())) == 5
    assert make().num_predictions == 1  # 5% of 10 masked patches: at least one


def test_mask_op_fake_kernel_matches_its_output() -> None:
    torch.library.opcheck(
        capi_module._inverse_block_mask,
        (4, 1 + 16 * 16, 0.65, torch.device("cpu")),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_clustering_loss_trains_the_clustering_head_only() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(4, 3, 32, 32)
    logits = model.cluster_logits(images)
    loss = model.criterion(logits, logits)
    loss.backward()
    assert model.clustering_head.layer.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.head.parameters())


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses.append(model.training_step(default_views(model, seed=1), StepInfo()).item())
    assert losses[0] == losses[1]


def test_training_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = make(prediction_subsampling=1.0)
    images = torch.randn(8, 3, 32, 32)
    params = [p for m in model.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.5)
    losses = []
    for step in range(30):
        optimizer.zero_grad()
        loss = model.training_step([images], StepInfo(step=step, max_steps=30))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


def test_recipe_backbone_pools_the_patches_and_drops_paths_in_the_student() -> None:
    torch.manual_seed(0)
    model = CAPI(
        backbone="timm:vit_tiny_patch16_224(patch_size=14, global_pool=avg, fc_norm=false)",
        input_size=56,
        drop_path_rate=0.2,
        **TINY,  # type: ignore[arg-type]
    )
    student, teacher = model.backbone.vit, model.teacher_backbone.vit
    assert [b.drop_path1.drop_prob for b in student.blocks] == [0.2] * len(student.blocks)
    assert all(b.drop_path2.drop_prob == 0.0 for b in teacher.blocks)
    images = torch.randn(2, 3, 56, 56)
    model.eval()
    with torch.no_grad():  # the loss never reads the class token: eval averages the patches
        torch.testing.assert_close(model(images), model.backbone.encode(images)[:, 1:].mean(1))
    model.train()
    loss, _ = optimizer_step(model, [images], StepInfo())
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clusters": 0}, "num_clusters"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": 0.05}, "mask_ratio"),  # masks no patch of 16
        ({"prediction_subsampling": 0.0}, "prediction_subsampling"),
        ({"prediction_subsampling": 1.5}, "prediction_subsampling"),
        ({"predictor_depth": 0}, "predictor_depth"),
        ({"predictor_num_heads": 3}, "predictor_num_heads"),  # 32 / 3 is no head dimension
        ({"predictor_mlp_ratio": 0.0}, "predictor_mlp_ratio"),
        ({"momentum_end": 1.5}, "momentum_end"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
        ({"teacher_temperature": 0.0}, "teacher_temperature"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_needs_a_vit_and_a_view() -> None:
    with pytest.raises(ValueError, match="not a vision transformer"):
        CAPI(backbone="resnet18", input_size=32, **TINY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one view"):
        make().training_step([])
