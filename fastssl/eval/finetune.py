"""Fine-tuning: the pretrained backbone and a new linear head trained end to end.

The protocol of SimCLR's fine-tuning (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", appendix B.5) with the light augmentation
it uses (random resized crop and horizontal flip only) and a cosine learning-rate schedule.
Since the head starts from scratch while the backbone already holds useful features, the
backbone learns at ``backbone_lr_scale`` times the head's rate (layer-wise decay in its
simplest form, as in BEiT and MAE), so the first noisy head gradients do not wash out the
pretrained weights. SGD (momentum 0.9) or AdamW.

Example:
    >>> result = finetune(backbone, 512, train, val, epochs=10)  # doctest: +SKIP
    >>> result.top1  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T
from tqdm import tqdm

from fastssl.eval.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LabeledData,
    ToRGB,
    class_mapping,
    eval_transform,
    make_eval_loader,
)
from fastssl.eval.linear import ProbeResult, cosine_lr, topk_accuracy

OPTIMIZERS = ("sgd", "adamw")


def finetune_transform(input_size: int, min_scale: float = 0.2) -> Callable[[Image.Image], Tensor]:
    """The light training augmentation: random resized crop, horizontal flip, normalise.

    Args:
        input_size: Side of the output crop in pixels.
        min_scale: Smallest crop area as a fraction of the image (0.08 in the ImageNet
            recipe; larger keeps more of small images).

    Returns:
        A callable mapping a PIL image to a float tensor (3, input_size, input_size).
    """
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(input_size, scale=(min_scale, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


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
        return self.head(self.backbone(images).flatten(start_dim=1))


def finetune(
    backbone: nn.Module,
    feature_dim: int,
    train: LabeledData,
    val: LabeledData,
    input_size: int,
    epochs: int = 30,
    lr: float = 0.05,
    backbone_lr_scale: float = 0.1,
    optimizer: Literal["sgd", "adamw"] = "sgd",
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    num_workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    resize: int | None = None,
    min_scale: float = 0.2,
) -> ProbeResult:
    """Fine-tunes ``backbone`` (in place) with a new linear head and scores it on ``val``.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, D); trained in place.
        feature_dim: D.
        train: Labeled training data (its transform is replaced by the augmentation).
        val: Labeled validation data (its transform is replaced by the evaluation one);
            its classes are matched to ``train``'s by name.
        input_size: Image side in pixels.
        epochs: Passes over ``train``.
        lr: Peak learning rate of the head (cosine-decayed to 0).
        backbone_lr_scale: The backbone's learning rate is ``lr * backbone_lr_scale``.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adamw"``.
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        batch_size: Images per step.
        num_workers: DataLoader worker processes.
        seed: Seeds the head, the data order and the augmentation.
        device: Where to train.
        progress: Show progress bars.
        resize: Short side of the validation images before their center crop (see
            :func:`~fastssl.eval.features.eval_transform`).
        min_scale: Smallest random-resized-crop area of the training images, as a
            fraction of the image (0.08: the ImageNet protocol).

    Returns:
        A :class:`~fastssl.eval.linear.ProbeResult`: validation top-1 / top-5 and the mean
        training loss of every epoch.

    Raises:
        ValueError: For an unknown optimizer, non-positive epochs / lr, a ``min_scale``
            outside (0, 1], or validation classes the training set lacks.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is unknown: choose one of {OPTIMIZERS}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0 or backbone_lr_scale < 0:
        raise ValueError(
            f"lr must be > 0 and backbone_lr_scale >= 0, got {lr}, {backbone_lr_scale}"
        )
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1] (a fraction of the image), got {min_scale}")
    if not any(p.requires_grad for p in backbone.parameters()):
        raise ValueError("the backbone has no trainable parameters: nothing to fine-tune")
    target_map = class_mapping(train.classes, val)
    device = torch.device(device)
    torch.manual_seed(seed)  # the head's initialisation and, without workers, the augmentation
    model = Classifier(backbone, feature_dim, len(train.classes)).to(device)
    groups = [
        {"params": list(model.head.parameters()), "lr_scale": 1.0},
        {"params": list(model.backbone.parameters()), "lr_scale": backbone_lr_scale},
    ]
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    train.set_transform(finetune_transform(input_size, min_scale))
    val.set_transform(eval_transform(input_size, resize))
    pin = device.type == "cuda"
    # drop_last only when it keeps a batch: BatchNorm backbones cannot train on 1 sample.
    drop_last = len(train) > batch_size
    loader = make_eval_loader(
        train, batch_size, num_workers, shuffle=True, seed=seed, drop_last=drop_last,
        pin_memory=pin,
    )  # fmt: skip
    total_steps = epochs * max(len(loader), 1)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    step = 0
    for epoch in tqdm(range(epochs), desc="fine-tune", disable=not progress, leave=False):
        if hasattr(train.dataset, "set_epoch"):
            train.dataset.set_epoch(epoch)  # shards reshuffle themselves per epoch
        model.train()
        total, count = 0.0, 0
        for images, targets, _ in loader:
            if len(targets) < 2:
                continue  # BatchNorm needs two samples
            for group in opt.param_groups:
                group["lr"] = cosine_lr(lr, step, total_steps) * group["lr_scale"]
            logits = model(images.to(device, non_blocking=True))
            loss = loss_fn(logits, torch.as_tensor(targets, dtype=torch.long).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(targets)
            count += len(targets)
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
