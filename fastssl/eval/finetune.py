"""Fine-tuning: the pretrained backbone and a new linear head trained end to end.

Two recipes, those of LightlySSL's ImageNet benchmarks (``finetune_eval.py``), chosen by
the backbone (``recipe="auto"``) or by name:

- ``simclr`` (ResNets and other CNNs; SimCLR's fine-tuning, Chen et al. 2020, appendix
  B.5): SGD (momentum 0.9, no weight decay) at ``0.05 x batch / 256`` for backbone and head,
  cosine decay without warm-up, 30 epochs, random resized crop + horizontal flip.
- ``mae`` (vision transformers; MAE's fine-tuning, He et al. 2022, the code's settings):
  AdamW (betas 0.9, 0.999) at ``5e-4 x batch / 256``, weight decay 0.05 (none on biases,
  norms, positions and class tokens), layer-wise learning-rate decay 0.65, 5 warm-up epochs,
  100 epochs, mixup 0.8, cutmix 1.0, label smoothing 0.1, drop path 0.1 (rising linearly
  over timm's blocks; constant on torchvision's, as lightly adds it), and timm's
  augmentation: RandAugment ``rand-m9-mstd0.5-inc1``, bicubic random resized crop, flip and
  random erasing 0.25. Needs timm.

Every field of a recipe can be overridden (:class:`FinetuneRecipe`); the validation images
get the evaluation transform (resize 256, centre crop 224, scaled to other sizes) and the
score is that of the last epoch.

Example:
    >>> result = finetune(backbone, 512, train, val, input_size=32, epochs=10)  # doctest: +SKIP
    >>> result.top1  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT
from tqdm import tqdm

from fastssl.eval.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LabeledData,
    ToRGB,
    class_mapping,
    eval_transform,
    make_eval_loader,
    pooled_features,
    train_transform,
)
from fastssl.eval.linear import ProbeResult, cosine_lr, topk_accuracy
from fastssl.models.utils import NORM_LAYERS

OPTIMIZERS = ("sgd", "adamw")
RECIPES = ("auto", "simclr", "mae")


@dataclass(frozen=True)
class FinetuneRecipe:
    """The settings of a fine-tuning run.

    Attributes:
        name: ``"simclr"`` or ``"mae"`` (what the settings come from).
        epochs: Passes over the training data.
        lr: Peak learning rate for a batch of 256; the run uses ``lr x batch_size / 256``.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adamw"`` (betas 0.9, 0.999).
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay of the weights (never of
            biases, norms, positional embeddings and class tokens).
        backbone_lr_scale: The backbone's learning rate is the head's times this.
        layer_decay: Layer-wise learning-rate decay of ViTs: block ``i`` of ``L`` trains at
            ``layer_decay ** (L - i)`` times the rate, the embeddings at
            ``layer_decay ** (L + 1)`` (MAE's ``param_groups_lrd``); 1 switches it off.
        warmup_epochs: Epochs of linear learning-rate warm-up before the cosine decay.
        min_scale: Smallest random-resized-crop area, as a fraction of the image.
        rand_augment: timm's RandAugment policy (e.g. ``"rand-m9-mstd0.5-inc1"``) or None.
        random_erasing: Probability of timm's random erasing (pixel mode).
        mixup: Mixup alpha (0: off).
        cutmix: CutMix alpha (0: off).
        label_smoothing: Label smoothing of the cross-entropy.
        drop_path: Stochastic depth of ViT blocks (0: unchanged).
    """

    name: str
    epochs: int
    lr: float
    optimizer: Literal["sgd", "adamw"]
    weight_decay: float
    backbone_lr_scale: float = 1.0
    layer_decay: float = 1.0
    warmup_epochs: float = 0.0
    min_scale: float = 0.08
    rand_augment: str | None = None
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    drop_path: float = 0.0

    @property
    def needs_timm(self) -> bool:
        """Whether the recipe uses timm's augmentation or mixup."""
        return bool(self.rand_augment or self.random_erasing or self.mixup or self.cutmix)


#: LightlySSL's ``benchmarks/imagenet/resnet50/finetune_eval.py`` (SimCLR's settings).
SIMCLR = FinetuneRecipe(name="simclr", epochs=30, lr=0.05, optimizer="sgd", weight_decay=0.0)
#: LightlySSL's ``benchmarks/imagenet/vitb16/finetune_eval.py`` (MAE's FINETUNE.md code settings).
MAE = FinetuneRecipe(
    name="mae",
    epochs=100,
    lr=5e-4,
    optimizer="adamw",
    weight_decay=0.05,
    layer_decay=0.65,
    warmup_epochs=5.0,
    rand_augment="rand-m9-mstd0.5-inc1",
    random_erasing=0.25,
    mixup=0.8,
    cutmix=1.0,
    label_smoothing=0.1,
    drop_path=0.1,
)


def _timm_vit_class() -> type[nn.Module] | None:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        return None
    return VisionTransformer


def vit_modules(backbone: nn.Module) -> list[nn.Module]:
    """The timm and torchvision ``VisionTransformer`` modules inside ``backbone``."""
    timm_vit = _timm_vit_class()
    kinds: tuple[type[nn.Module], ...] = (TorchvisionViT,) + ((timm_vit,) if timm_vit else ())
    return [module for module in backbone.modules() if isinstance(module, kinds)]


def finetune_recipe(
    recipe: str | FinetuneRecipe, backbone: nn.Module, **overrides: Any
) -> FinetuneRecipe:
    """The recipe named ``recipe`` (``"auto"``: ``mae`` for ViTs, else ``simclr``) with the
    non-None ``overrides`` applied and checked.

    Raises:
        ValueError: For an unknown recipe or field, or a value out of range (named).
    """
    if isinstance(recipe, FinetuneRecipe):
        base = recipe
    elif recipe == "auto":
        base = MAE if vit_modules(backbone) else SIMCLR
    elif recipe in ("simclr", "mae"):
        base = SIMCLR if recipe == "simclr" else MAE
    else:
        raise ValueError(f"fine-tune recipe {recipe!r} is unknown: choose one of {RECIPES}")
    names = {f.name for f in dataclasses.fields(FinetuneRecipe)} - {"name"}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"finetune() got unknown settings {unknown}; settings: {sorted(names)}")
    result = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if result.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={result.optimizer!r} is unknown: choose one of {OPTIMIZERS}")
    if result.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {result.epochs}")
    if result.lr <= 0 or result.backbone_lr_scale < 0:
        raise ValueError(
            f"lr must be > 0 and backbone_lr_scale >= 0, got {result.lr}, "
            f"{result.backbone_lr_scale}"
        )
    if not 0 < result.min_scale <= 1:
        raise ValueError(
            f"min_scale must be in (0, 1] (a fraction of the image), got {result.min_scale}"
        )
    if not 0 < result.layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {result.layer_decay}")
    for name in ("warmup_epochs", "mixup", "cutmix", "weight_decay"):
        if getattr(result, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(result, name)}")
    for name in ("random_erasing", "label_smoothing", "drop_path"):
        if not 0 <= getattr(result, name) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(result, name)}")
    return result


#: Parameter names of the patch / position embeddings and prefix tokens (layer 0 of MAE's
#: layer-wise decay); the tokens and positions are not decayed.
_EMBEDDINGS = ("patch_embed", "conv_proj", "pos_embed", "pos_embedding", "cls_token",
               "class_token", "reg_token", "dist_token", "mask_token")  # fmt: skip
_NO_DECAY = ("pos_embed", "pos_embedding", "cls_token", "class_token", "reg_token",
             "dist_token", "mask_token")  # fmt: skip
_BLOCK = re.compile(r"(?:^|\.)(?:blocks\.|encoder_layer_)(\d+)\.")


def layer_scales(names: Iterable[str], layer_decay: float) -> dict[str, float]:
    """Learning-rate factor of every parameter name under layer-wise decay (MAE).

    ViT block ``i`` (``blocks.i.`` in timm, ``encoder_layer_i.`` in torchvision) is layer
    ``i + 1``, embeddings and prefix tokens layer 0, everything else (final norm, head)
    layer ``L + 1`` for ``L`` blocks; layer ``l`` trains at ``layer_decay ** (L + 1 - l)``.

    >>> scales = layer_scales(["cls_token", "blocks.0.w", "blocks.1.w", "head.w"], 0.5)
    >>> [scales[n] for n in ("cls_token", "blocks.0.w", "blocks.1.w", "head.w")]
    [0.125, 0.25, 0.5, 1.0]
    """
    names = list(names)
    blocks = {name: int(m.group(1)) for name in names if (m := _BLOCK.search(name))}
    depth = max(blocks.values()) + 1 if blocks else 0
    scales = {}
    for name in names:
        if name in blocks:
            layer = blocks[name] + 1
        elif any(part in _EMBEDDINGS for part in name.split(".")):
            layer = 0
        else:
            layer = depth + 1
        scales[name] = layer_decay ** (depth + 1 - layer)
    return scales


class Classifier(nn.Module):
    """A backbone (B, 3, H, W) -> (B, D) followed by a linear head (B, D) -> (B, C)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        # A small head start (as MAE's fine-tuning head) keeps the first logits near uniform.
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(pooled_features(self.backbone(images)))


def param_groups(model: Classifier, recipe: FinetuneRecipe) -> list[dict[str, Any]]:
    """Optimizer groups of ``model``, each with its ``lr_scale`` and ``weight_decay``.

    ``lr_scale`` is the layer-wise decay factor (:func:`layer_scales`) times
    ``backbone_lr_scale`` for backbone parameters; biases, 1-D parameters, normalisation
    layers, positional embeddings and prefix tokens get no weight decay.
    """
    plain: set[int] = set()
    for module in model.modules():
        if isinstance(module, NORM_LAYERS):
            plain.update(id(p) for p in module.parameters(recurse=False))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = layer_scales((n for n, _ in named), recipe.layer_decay)
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in named:
        scale = scales[name] * (recipe.backbone_lr_scale if name.startswith("backbone.") else 1.0)
        decay = not (
            id(param) in plain
            or param.ndim <= 1
            or name.endswith(".bias")
            or name.rsplit(".", 1)[-1] in _NO_DECAY
        )
        weight_decay = recipe.weight_decay if decay else 0.0
        group = groups.setdefault(
            (scale, decay), {"params": [], "lr_scale": scale, "weight_decay": weight_decay}
        )
        group["params"].append(param)
    return list(groups.values())


def _add_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth ``rate`` on every ViT block of ``backbone`` (see the module doc)."""
    from fastssl.models.utils import add_stochastic_depth_to_blocks, update_drop_path_rate

    vits = vit_modules(backbone)
    if not vits:
        raise ValueError(
            f"drop_path={rate} needs a vision transformer backbone; this one has none: "
            "set drop_path to 0 (--drop-path 0)"
        )
    for vit in vits:
        if isinstance(vit, TorchvisionViT):
            add_stochastic_depth_to_blocks(vit, prob=rate)
        else:
            update_drop_path_rate(vit, rate, mode="linear")  # type: ignore[arg-type]


def _train_images(recipe: FinetuneRecipe, input_size: int) -> Callable[[Image.Image], Tensor]:
    """The training augmentation: :func:`train_transform`, or timm's with RandAugment and
    random erasing (as lightly's ViT fine-tuning builds it)."""
    if not (recipe.rand_augment or recipe.random_erasing):
        return train_transform(input_size, recipe.min_scale)
    from timm.data import create_transform

    timm_transform = create_transform(
        input_size=input_size,
        is_training=True,
        scale=(recipe.min_scale, 1.0),
        auto_augment=recipe.rand_augment,
        interpolation="bicubic",
        re_prob=recipe.random_erasing,
        re_mode="pixel",
        re_count=1,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return T.Compose([ToRGB(), timm_transform])


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft targets (B, C) (mixed and smoothed labels)."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def finetune(
    backbone: nn.Module,
    feature_dim: int,
    train: LabeledData,
    val: LabeledData,
    input_size: int,
    recipe: str | FinetuneRecipe = "auto",
    batch_size: int = 256,
    num_workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    resize: int | None = None,
    **overrides: Any,
) -> ProbeResult:
    """Fine-tunes ``backbone`` (in place) with a new linear head and scores it on ``val``.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, D); trained in place, every
            parameter (a frozen EMA copy is unfrozen; ViT recipes also set its drop path).
        feature_dim: D.
        train: Labeled training data (its transform is replaced by the augmentation).
        val: Labeled validation data (its transform is replaced by the evaluation one);
            its classes are matched to ``train``'s by name.
        input_size: Image side in pixels.
        recipe: ``"auto"`` (``mae`` for ViTs, ``simclr`` otherwise), ``"simclr"``,
            ``"mae"`` or a :class:`FinetuneRecipe`.
        batch_size: Images per step (the learning rate scales with it).
        num_workers: DataLoader worker processes.
        seed: Seeds the head, the data order, the augmentation and mixup.
        device: Where to train.
        progress: Show progress bars.
        resize: Short side of the validation images before their center crop (see
            :func:`~fastssl.eval.features.eval_transform`).
        **overrides: Fields of :class:`FinetuneRecipe` that replace the recipe's
            (``epochs``, ``lr``, ``optimizer``, ``weight_decay``, ``backbone_lr_scale``,
            ``layer_decay``, ``warmup_epochs``, ``min_scale``, ``mixup``, ...); None keeps
            the recipe's.

    Returns:
        A :class:`~fastssl.eval.linear.ProbeResult`: validation top-1 / top-5 after the
        last epoch and the mean training loss of every epoch.

    Raises:
        ValueError: For an unknown recipe or setting, a value out of range, a backbone
            without parameters, or validation classes the training set lacks.
        ImportError: For a recipe with timm's augmentation or mixup without timm.
    """
    settings = finetune_recipe(recipe, backbone, **overrides)
    if not any(True for _ in backbone.parameters()):
        raise ValueError("the backbone has no parameters: nothing to fine-tune")
    # Every parameter trains, those of a frozen EMA copy (DINO's teacher) included.
    backbone.requires_grad_(True)
    if settings.needs_timm:
        try:
            import timm  # noqa: F401
        except ImportError as error:
            raise ImportError(
                f"the {settings.name!r} fine-tune recipe (RandAugment, random erasing, mixup) "
                "needs timm: pip install timm, or use --finetune-recipe simclr"
            ) from error
    target_map = class_mapping(train.classes, val)
    device = torch.device(device)
    num_classes = len(train.classes)
    torch.manual_seed(seed)  # the head's initialisation and, without workers, the augmentation
    if settings.drop_path > 0:
        _add_drop_path(backbone, settings.drop_path)
    model = Classifier(backbone, feature_dim, num_classes).to(device)
    groups = param_groups(model, settings)
    peak_lr = settings.lr * batch_size / 256
    opt: torch.optim.Optimizer
    if settings.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=peak_lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.999))
    train.set_transform(_train_images(settings, input_size))
    val.set_transform(eval_transform(input_size, resize))
    pin = device.type == "cuda"
    # drop_last only when it keeps a batch: BatchNorm backbones cannot train on 1 sample.
    drop_last = len(train) > batch_size
    loader = make_eval_loader(
        train, batch_size, num_workers, shuffle=True, seed=seed, drop_last=drop_last,
        pin_memory=pin,
    )  # fmt: skip
    steps_per_epoch = max(len(loader), 1)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = min(round(settings.warmup_epochs * steps_per_epoch), total_steps)
    if settings.warmup_epochs >= settings.epochs:
        warnings.warn(
            f"fine-tune: the {settings.warmup_epochs:g} warm-up epochs cover the whole run of "
            f"{settings.epochs} epochs, so the learning rate never decays: set --warmup-epochs "
            "below --epochs",
            stacklevel=2,
        )
    mixup: Any = None
    if settings.mixup > 0 or settings.cutmix > 0:
        from timm.data import Mixup

        mixup = Mixup(
            mixup_alpha=settings.mixup, cutmix_alpha=settings.cutmix,
            label_smoothing=settings.label_smoothing, num_classes=num_classes,
        )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    losses: list[float] = []
    step = 0
    for epoch in tqdm(range(settings.epochs), desc="fine-tune", disable=not progress, leave=False):
        if hasattr(train.dataset, "set_epoch"):
            train.dataset.set_epoch(epoch)  # shards reshuffle themselves per epoch
        model.train()
        total, count = 0.0, 0
        for images, targets in ((b[0], b[1]) for b in loader):
            labels = torch.as_tensor(targets, dtype=torch.long)
            if mixup is not None and len(labels) % 2:
                images, labels = images[:-1], labels[:-1]  # mixup pairs the batch's halves
            if len(labels) < 2:
                continue  # BatchNorm needs two samples
            lr = cosine_lr(peak_lr, step, total_steps, warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            images, labels = images.to(device, non_blocking=True), labels.to(device)
            if mixup is not None:
                images, soft = mixup(images, labels)
                loss = _soft_cross_entropy(model(images), soft)
            else:
                loss = loss_fn(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(labels)
            count += len(labels)
        losses.append(total / max(count, 1))
    model.eval()
    all_logits: list[Tensor] = []
    all_labels: list[Tensor] = []
    with torch.no_grad():
        for images, targets, _ in make_eval_loader(val, batch_size, num_workers, pin_memory=pin):
            all_logits.append(model(images.to(device, non_blocking=True)).float().cpu())
            all_labels.append(target_map[torch.as_tensor(targets, dtype=torch.long)])
    if not all_logits:
        raise ValueError(f"{val.source!r} yielded no images to evaluate")
    top1, top5 = topk_accuracy(torch.cat(all_logits), torch.cat(all_labels))
    return ProbeResult(top1, top5, losses)


#: The augmentation of the ``simclr`` recipe (kept under its former name).
finetune_transform = train_transform
