from __future__ import annotations

import copy
import zlib
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from fastssl.data.ijepa_collate import IJEPAMaskCollator
from fastssl.methods.base import StepInfo
from fastssl.methods.ijepa import IJEPA, IJEPAViewsTransform, PatchEncoder
from fastssl.models.modules.ijepa import IJEPAPredictor
from fastssl.models.modules.ijepa_timm import IJEPAPredictorTIMM
from tests.methods._method_steps import (
    assert_ema,
    changed,
    default_views,
    optimizer_step,
    params_of,
    tiny_vit,
)

# tiny_vit: 32 px, 8 px patches -> a 4 x 4 grid, where the paper's 15-20% target blocks
# would have 2 patches; a quarter of the grid keeps them above min_keep.
TINY = {
    "predictor_embed_dim": 16,
    "predictor_depth": 1,
    "pred_mask_scale": (0.2, 0.3),
    "min_keep": 1,
}
TIMM_VIT = "timm:vit_tiny_patch16_224(patch_size=8, embed_dim=32, depth=2, num_heads=2)"


def make(**kwargs: object) -> IJEPA:
    kwargs = {"backbone": tiny_vit(), "input_size": 32, **TINY, **kwargs}
    return IJEPA(**kwargs)  # type: ignore[arg-type]


def test_default_transform_step_trains_encoder_and_predictor_only() -> None:
    torch.manual_seed(0)
    model = make()
    transform = model.default_transform()
    assert isinstance(transform, IJEPAViewsTransform)
    spec = transform.view_specs[0]
    assert spec.crop_size == 32 and spec.crop_scale == (0.3, 1.0)
    views = default_views(model)
    assert len(views) == 1 and views[0].shape == (4, 3, 32, 32)
    target_before = params_of(model.target_backbone)
    info = StepInfo(step=0, max_steps=10)
    loss, before = optimizer_step(model, views, info)
    assert torch.isfinite(loss)
    assert changed(model, before, "backbone.") and changed(model, before, "predictor.")
    assert isinstance(model.predictor, IJEPAPredictor)  # torchvision ViT: no timm needed
    # The target moves only by the EMA, after backward, with the context encoder before
    # the optimizer step.
    assert_ema(
        params_of(model.target_backbone),
        target_before,
        [before[f"backbone.{n}"] for n, _ in model.backbone.named_parameters()],
        m=0.996,
    )
    assert all(p.grad is None and not p.requires_grad for p in model.target_backbone.parameters())
    trainable = {id(p) for m in model.trainable_modules() for p in m.parameters()}
    assert not trainable & {id(p) for p in model.target_backbone.parameters()}
    # Every trainable parameter gets a gradient (DDP needs it): the unused class and mask
    # tokens of the ViT are frozen.
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    encoder = model.backbone
    assert isinstance(encoder, PatchEncoder)
    vit: Any = encoder.vit
    assert not vit.vit.class_token.requires_grad and not vit.mask_token.requires_grad


def test_features_are_the_mean_of_the_patch_encodings_of_the_target() -> None:
    torch.manual_seed(0)
    model = make().eval()
    images = torch.randn(3, 3, 32, 32)
    encoder = model.backbone
    assert isinstance(encoder, PatchEncoder)
    with torch.no_grad():
        features = model(images)
        tokens = encoder.encode(images)
    assert features.shape == (3, 32) and model.feature_dim == 32 and tokens.shape == (3, 16, 32)
    torch.testing.assert_close(features, tokens.mean(dim=1))
    assert IJEPA.eval_network == "ema" and model.ema_backbone() is model.target_backbone
    assert isinstance(model.target_backbone, PatchEncoder)


def naive_ijepa_loss(model: IJEPA, images: torch.Tensor, info: StepInfo) -> torch.Tensor:
    """The paper's loss written block by block, with lightly's predictor on the same weights."""
    lightly_ijepa = pytest.importorskip("lightly.models.modules.ijepa")
    predictor = lightly_ijepa.IJEPAPredictor(
        seq_length=1, num_layers=1, num_heads=2, hidden_dim=16, predictor_embed_dim=16,
        num_patches=16, mlp_dim=32, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    predictor.load_state_dict(model.predictor.state_dict())
    masks_enc, masks_pred = model.sample_masks(images.shape[0], info)
    context: Any = model.backbone.vit
    target: Any = model.target_backbone.vit
    total, count = torch.zeros(()), 0
    for b in range(images.shape[0]):
        image = images[b : b + 1]
        with torch.no_grad():  # target: all patches, layer norm over features, then the block
            h = target.encode(image, idx_keep=torch.arange(1, 17)[None])
            h = F.layer_norm(h, (32,))
        for ctx in masks_enc[:, b]:
            z = context.encode(image, idx_keep=ctx[None] + 1)
            for tgt in masks_pred[:, b]:
                prediction = predictor(z, ctx[None], tgt[None])
                total = total + F.smooth_l1_loss(prediction, h[:, tgt], reduction="sum")
                count += prediction.numel()
    return total / count


@pytest.mark.parametrize("step", [0, 5])
def test_loss_is_smooth_l1_to_layer_normed_targets(step: int) -> None:
    torch.manual_seed(0)
    model = make().eval()
    images = torch.randn(3, 3, 32, 32)
    info = StepInfo(step=step, max_steps=10)
    loss = model.training_step([images], info)
    torch.testing.assert_close(loss, naive_ijepa_loss(model, images, info), rtol=1e-5, atol=1e-6)


def test_masks_are_the_collators_seeded_by_the_step_and_leave_the_rng_alone() -> None:
    torch.manual_seed(0)
    model = make(backbone=_vit64(), input_size=64, pred_mask_scale=(0.15, 0.2), min_keep=4)
    state = torch.get_rng_state()
    enc, pred = model.sample_masks(5, StepInfo(step=7))
    assert torch.equal(torch.get_rng_state(), state)  # fork_rng: training RNG untouched
    assert enc.shape[:2] == (1, 5) and pred.shape[:2] == (4, 5)
    assert enc.dtype == pred.dtype == torch.long
    assert 4 < enc.shape[2] <= 64 and 4 < pred.shape[2] <= 64
    assert int(enc.min()) >= 0 and int(max(enc.max(), pred.max())) < 64
    for b in range(5):  # the context leaves out the targets (the paper's allow_overlap=False)
        assert not set(enc[0, b].tolist()) & set(pred[:, b].flatten().tolist())
    again = model.sample_masks(5, StepInfo(step=7))
    assert torch.equal(again[0], enc) and torch.equal(again[1], pred)
    other = model.sample_masks(5, StepInfo(step=8))
    assert not (other[0].shape == enc.shape and torch.equal(other[0], enc))
    # The same masks as the collator of the paper's code, counter at the step.
    collator = IJEPAMaskCollator(
        input_size=64, patch_size=8, pred_mask_scale=(0.15, 0.2), min_keep=4,
        enc_mask_scale=(0.85, 1.0), aspect_ratio=(0.75, 1.5), nenc=1, npred=4,
    )  # fmt: skip
    collator._itr_counter.value = 6  # the next batch is number 7
    torch.manual_seed(zlib.crc32(f"{model.mask_seed}:7:0".encode()))
    _, enc_ref, pred_ref = collator([0] * 5)
    assert torch.equal(enc, torch.stack(enc_ref)) and torch.equal(pred, torch.stack(pred_ref))


def _vit64() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(64, 8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)


@pytest.mark.parametrize("step", [0, 4, 9])
def test_target_moves_by_the_linear_momentum(step: int) -> None:
    torch.manual_seed(0)
    model = make(momentum_start=0.5)
    model.training_step([torch.randn(2, 3, 32, 32)], StepInfo(step=step, max_steps=10))
    online, target = params_of(model.backbone), params_of(model.target_backbone)
    for p in model.target_backbone.parameters():  # make the two differ
        p.data.add_(0.1)
    target = params_of(model.target_backbone)
    model.before_optimizer_step(StepInfo(step=step, max_steps=10))
    # Paper: m = m0 + k * (m1 - m0) / K over the run's steps.
    assert_ema(params_of(model.target_backbone), target, online, 0.5 + 0.5 * step / 9)


def test_deterministic_under_a_seed() -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        model = make()
        losses.append(model.training_step(default_views(model, seed=1), StepInfo()).item())
    assert losses[0] == losses[1]


def test_short_optimisation_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make()
    images = torch.randn(8, 3, 32, 32)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    info = StepInfo(step=0, max_steps=1000)  # one set of masks: a fixed task
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.training_step([images], info)
        loss.backward()
        model.before_optimizer_step(info)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_timm_backbone_uses_the_timm_predictor() -> None:
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = make(backbone=TIMM_VIT)
    assert isinstance(model.predictor, IJEPAPredictorTIMM) and model.feature_dim == 32
    loss = model.training_step([torch.randn(2, 3, 32, 32)])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    vit: Any = model.backbone.vit
    assert not vit.vit.cls_token.requires_grad


@pytest.mark.compile
def test_compiles_as_one_graph_across_steps_with_new_mask_lengths() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = make()
    eager = copy.deepcopy(model)
    step = torch.compile(model.training_step, fullgraph=True, backend="aot_eager")
    images = torch.randn(4, 3, 32, 32)
    for k in range(3):  # mask lengths change between steps: no graph break, same loss
        info = StepInfo(step=k, max_steps=10)
        torch.testing.assert_close(step([images], info), eager.training_step([images], info))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "resnet18"}, "not a vision transformer"),
        ({"predictor_embed_dim": 15}, "predictor_embed_dim"),
        ({"predictor_depth": 0}, "predictor_depth"),
        ({"enc_mask_scale": (0.9, 0.8)}, "enc_mask_scale"),
        ({"pred_mask_scale": (0.0, 0.2)}, "pred_mask_scale"),
        ({"aspect_ratio": (1.0,)}, "aspect_ratio"),
        ({"num_pred_masks": 0}, "num_pred_masks"),
        ({"min_keep": -1}, "min_keep"),
        ({"momentum_start": 1.5}, "momentum_start"),
        ({"input_size": 36}, "input_size"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_needs_one_view() -> None:
    with pytest.raises(ValueError, match="exactly 1 view"):
        make().training_step([torch.randn(2, 3, 32, 32)] * 2)


def test_blocks_too_small_for_min_keep_are_named() -> None:
    model = make(pred_mask_scale=(0.05, 0.1), min_keep=4)
    with pytest.raises(ValueError, match="pred_mask_scale"):
        model.training_step([torch.randn(2, 3, 32, 32)])
