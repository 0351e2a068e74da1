from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from fastssl.eval.features import open_labeled
from fastssl.eval.finetune import (
    MAE,
    SIMCLR,
    Classifier,
    FinetuneRecipe,
    finetune,
    finetune_recipe,
    finetune_transform,
    layer_scales,
    param_groups,
)
from tests.eval.conftest import TinyMethod, make_folder

pytest.importorskip("timm")


def tiny_timm_vit(img_size: int = 16) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=0
    )


def tiny_torchvision_vit() -> nn.Module:
    import torchvision

    vit = torchvision.models.VisionTransformer(16, 8, num_layers=2, num_heads=2, hidden_dim=16,
                                               mlp_dim=32)  # fmt: skip
    vit.heads = nn.Identity()
    return vit


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return make_folder(tmp_path / "train", 6), make_folder(tmp_path / "val", 2, seed=1)


def test_one_epoch_changes_the_backbone_and_scores(folders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    backbone = TinyMethod().backbone
    before = copy.deepcopy(backbone.state_dict())
    result = finetune(
        backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), input_size=16,
        epochs=1, lr=0.1, batch_size=4,
    )  # fmt: skip
    after = backbone.state_dict()
    assert not torch.equal(before["0.weight"], after["0.weight"])  # weights trained
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])  # BN stats
    assert len(result.losses) == 1 and result.losses[0] > 0
    assert 0.0 <= result.top1 <= result.top5 == 1.0  # 3 classes: top-5 holds all


def test_backbone_lr_scale_zero_freezes_the_weights(folders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    backbone = TinyMethod().backbone
    before = backbone.state_dict()["0.weight"].clone()
    finetune(
        backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), 16, epochs=1,
        backbone_lr_scale=0.0, weight_decay=0.0, optimizer="adamw", batch_size=6,
    )  # fmt: skip
    assert torch.equal(before, backbone.state_dict()["0.weight"])


def test_deterministic_under_seed(folders: tuple[Path, Path]) -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        backbone = TinyMethod().backbone
        result = finetune(
            backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), 16, epochs=2,
            batch_size=5, seed=3,
        )  # fmt: skip
        losses.append(result.losses)
    assert losses[0] == losses[1]


def test_augmentation_output() -> None:
    torch.manual_seed(0)
    out = finetune_transform(12)(Image.new("L", (30, 20)))
    assert out.shape == (3, 12, 12)
    crop = finetune_transform(12, min_scale=0.2).transforms[1]
    assert crop.scale == (0.2, 1.0)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4, 5)), 5, 2)
    assert model(torch.randn(3, 3, 2, 2)).shape == (3, 2)


def test_bad_arguments(folders: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = open_labeled(folders[0]), open_labeled(folders[1])
    backbone = TinyMethod().backbone
    with pytest.raises(ValueError, match="optimizer='lamb' is unknown"):
        finetune(backbone, 8, train, val, 16, optimizer="lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        finetune(backbone, 8, train, val, 16, epochs=0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"min_scale must be in \(0, 1\] .*got {bad}"):
            finetune(backbone, 8, train, val, 16, min_scale=bad)
    with pytest.raises(ValueError, match="the backbone has no parameters"):
        finetune(nn.Flatten(), 768, train, val, 16)
    other = open_labeled(make_folder(tmp_path / "other", 1, classes=("red",)))
    with pytest.raises(ValueError, match="training set does not have"):
        finetune(backbone, 8, other, val, 16)


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        # lightly's benchmarks/imagenet/resnet50/finetune_eval.py: SGD(lr=0.05 x B/256,
        # momentum=0.9, weight_decay=0.0), CosineWarmupScheduler(warmup_epochs=0),
        # max_epochs=30, T.RandomResizedCrop(224) + T.RandomHorizontalFlip().
        (SIMCLR, {"epochs": 30, "lr": 0.05, "optimizer": "sgd", "weight_decay": 0.0,
                  "backbone_lr_scale": 1.0, "layer_decay": 1.0, "warmup_epochs": 0.0,
                  "min_scale": 0.08, "mixup": 0.0, "cutmix": 0.0, "drop_path": 0.0}),
        # lightly's benchmarks/imagenet/vitb16/finetune_eval.py (MAE's code settings):
        # AdamW(5e-4 x B/256), weight decay 0.05, layer-wise decay 0.65, 5 warm-up epochs,
        # 100 epochs, Mixup(0.8, cutmix 1.0, label smoothing 0.1), drop path 0.1,
        # create_transform(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25).
        (MAE, {"epochs": 100, "lr": 5e-4, "optimizer": "adamw", "weight_decay": 0.05,
               "backbone_lr_scale": 1.0, "layer_decay": 0.65, "warmup_epochs": 5.0,
               "min_scale": 0.08, "rand_augment": "rand-m9-mstd0.5-inc1",
               "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
               "drop_path": 0.1}),
    ],
)  # fmt: skip
def test_recipes_hold_lightlys_settings(recipe: FinetuneRecipe, expected: dict) -> None:
    assert {k: getattr(recipe, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("make", "name"),
    [(lambda: TinyMethod().backbone, "simclr"), (tiny_timm_vit, "mae"),
     (tiny_torchvision_vit, "mae")],
)  # fmt: skip
def test_auto_recipe_is_mae_for_vits_and_simclr_otherwise(make, name: str) -> None:  # type: ignore[no-untyped-def]
    assert finetune_recipe("auto", make()).name == name
    assert finetune_recipe("simclr", make()).name == "simclr"
    tuned = finetune_recipe("auto", make(), epochs=3, lr=None)  # None keeps the recipe's
    assert tuned.epochs == 3 and tuned.lr == (MAE.lr if name == "mae" else SIMCLR.lr)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"recipe": "beit"}, "fine-tune recipe 'beit' is unknown"),
        ({"epoch": 3}, r"unknown settings \['epoch'\]"),
        ({"layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]"),
        ({"drop_path": 1.0}, r"drop_path must be in \[0, 1\)"),
        ({"mixup": -0.1}, "mixup must be >= 0, got -0.1"),
    ],
)
def test_bad_recipe_settings(overrides: dict, match: str) -> None:
    recipe = overrides.pop("recipe", "simclr")
    with pytest.raises(ValueError, match=match):
        finetune_recipe(recipe, nn.Linear(1, 1), **overrides)


@pytest.mark.parametrize(
    ("names", "depth"),
    [
        (["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.{i}.attn.qkv.weight",
          "norm.weight", "head.weight"], 3),  # timm
        (["vit.class_token", "vit.encoder.pos_embedding", "vit.conv_proj.weight",
          "vit.encoder.layers.encoder_layer_{i}.mlp.0.weight", "vit.encoder.ln.weight",
          "head.bias"], 3),  # torchvision (in fastssl's wrapper)
    ],
)  # fmt: skip
def test_layer_scales_follow_maes_layer_decay(names: list[str], depth: int) -> None:
    # MAE's param_groups_lrd: layer_id 0 for the embeddings, i + 1 for block i, depth + 1
    # for the rest; scale = decay ** (depth + 1 - layer_id).
    block = next(n for n in names if "{i}" in n)
    named = [n for n in names if n != block] + [block.format(i=i) for i in range(depth)]
    scales = layer_scales(named, 0.5)
    for name in names[:3]:
        assert scales[name] == 0.5 ** (depth + 1)
    for i in range(depth):
        assert scales[block.format(i=i)] == 0.5 ** (depth - i)
    assert scales[names[4]] == scales[names[5]] == 1.0


def test_vit_param_groups_decay_weights_only_with_layer_decay() -> None:
    model = Classifier(tiny_timm_vit(), 16, 3)
    groups = param_groups(model, MAE)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    vit = model.backbone
    assert scale_of[id(vit.blocks[1].attn.qkv.weight)] == pytest.approx(0.65)
    assert scale_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.65**2)
    assert scale_of[id(vit.patch_embed.proj.weight)] == pytest.approx(0.65**3)
    assert scale_of[id(model.head.weight)] == scale_of[id(vit.norm.weight)] == 1.0
    assert decay_of[id(vit.blocks[0].attn.qkv.weight)] == decay_of[id(model.head.weight)] == 0.05
    for param in (vit.cls_token, vit.pos_embed, vit.blocks[0].norm1.weight, model.head.bias):
        assert decay_of[id(param)] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("make", [tiny_timm_vit, tiny_torchvision_vit])
def test_vit_finetune_runs_maes_recipe_on_a_tiny_folder(
    make, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:  # fmt: skip
    import timm.data

    mixed: list[int] = []
    real_mixup = timm.data.Mixup

    class SpyMixup(real_mixup):  # type: ignore[misc,valid-type]
        def __call__(self, x, target):  # type: ignore[no-untyped-def]
            mixed.append(len(x))
            return super().__call__(x, target)

    monkeypatch.setattr(timm.data, "Mixup", SpyMixup)
    torch.manual_seed(0)
    backbone = make()
    train = open_labeled(folders[0])
    result = finetune(
        backbone, 16, train, open_labeled(folders[1]), input_size=16, epochs=2, batch_size=5,
        warmup_epochs=1,
    )  # fmt: skip
    assert len(result.losses) == 2 and all(loss > 0 for loss in result.losses)
    assert 0.0 <= result.top1 <= result.top5 == 1.0
    # 18 images in batches of 5 (last dropped), odd batches cut to 4 for mixup's pairs.
    assert mixed == [4, 4, 4] * 2
    names = repr(train.dataset.transform)
    assert "RandAugment" in names and "RandomErasing" in names and "bicubic" in names.lower()
    drop = [m for m in backbone.modules() if type(m).__name__ in ("DropPath", "StochasticDepth")]
    assert drop  # stochastic depth on the blocks
    rates = [getattr(m, "drop_prob", getattr(m, "p", None)) for m in drop]
    assert max(rates) == pytest.approx(0.1)


def test_drop_path_needs_a_vit(folders: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match=r"drop_path=0\.1 needs a vision transformer"):
        finetune(
            TinyMethod().backbone, 8, open_labeled(folders[0]), open_labeled(folders[1]), 16,
            epochs=1, drop_path=0.1,
        )  # fmt: skip
