"""Linear probe: a linear classifier trained on the features of a frozen backbone.

The protocol of LightlySSL's ImageNet benchmarks (``linear_eval.py``, SimCLR's settings,
Chen et al. 2020, appendix B.6): every epoch the training images are augmented (random
resized crop + horizontal flip, :func:`~fastssl.eval.features.train_transform`) and passed
through the frozen backbone in eval mode; only the linear layer trains, with SGD (momentum
0.9, no weight decay), learning rate ``0.1 x batch / 256`` decayed along a cosine to 0.001
of its peak, for 90 epochs. Validation images are resized and centre-cropped
(:func:`~fastssl.eval.features.eval_transform`); the backbone is frozen, so their features
are extracted once and the classifier is scored on them after every epoch: ``top1`` is the
last epoch's accuracy and ``best_top1`` the best over the epochs (the figure lightly's
benchmark prints).

:func:`linear_probe_augmented` runs that protocol; :func:`linear_probe` trains on features
extracted once (no augmentation: much faster, the choice of ``fastssl eval linear
--no-augment``). Both go through one training loop, :func:`train_linear`. As in MAE (He et
al. 2022), a BatchNorm without affine parameters can precede the linear layer
(``batch_norm=True``): it standardises the features, which makes one learning rate work for
backbones whose feature scales differ by orders of magnitude (and for raw pixels).

Example:
    >>> import torch
    >>> x = torch.randn(64, 8); y = (x[:, 0] > 0).long()
    >>> result = linear_probe(x, y, x, y, num_classes=2, epochs=50, lr=1.0)
    >>> result.top1 > 0.9
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm import tqdm

from fastssl.utils.scheduler import cosine_warmup_schedule

if TYPE_CHECKING:
    from fastssl.eval.features import LabeledData

#: Learning-rate factor at the last step of the cosine schedules (LightlySSL's
#: ``CosineWarmupScheduler`` default ``end_value``).
END_FACTOR = 0.001

#: One epoch of ``(features (B, D), labels (B,))`` batches, given the epoch index.
EpochBatches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


@dataclass
class ProbeResult:
    """Accuracy of a trained classifier on the validation set.

    Attributes:
        top1: Fraction of samples whose most probable class is their label, after the
            last epoch.
        top5: Fraction whose label is among the 5 most probable classes (among all
            classes when there are fewer than 5), after the last epoch.
        losses: Mean training loss of every epoch.
        best_top1: Best top-1 over the epochs (the linear probe scores every epoch; the
            figure LightlySSL's benchmarks report). Equals ``top1`` where only the last
            epoch is scored.
        best_top5: Top-5 of the epoch with the best top-1.
        val_top1: Top-1 after every epoch (linear probe), else only the last.
    """

    top1: float
    top5: float
    losses: list[float] = field(default_factory=list)
    best_top1: float = float("nan")
    best_top5: float = float("nan")
    val_top1: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if math.isnan(self.best_top1):
            self.best_top1, self.best_top5 = self.top1, self.top5
        if not self.val_top1:
            self.val_top1 = [self.top1]


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k accuracies of ``logits`` (N, C) against ``labels`` (N,); k is clamped to C.

    >>> topk_accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), (1, 2))
    [0.5, 1.0]
    """
    if len(labels) == 0:
        raise ValueError("labels is empty: nothing to score")
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, k)
    hits = ranked == labels[:, None]
    return [float(hits[:, : min(k, logits.shape[1])].any(dim=1).float().mean()) for k in ks]


def cosine_lr(
    base_lr: float,
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    end_factor: float = END_FACTOR,
) -> float:
    """LightlySSL's ``CosineWarmupScheduler`` per step: a linear warm-up over
    ``warmup_steps`` steps, then a cosine from ``base_lr`` to ``end_factor * base_lr`` at the
    last step (``total_steps - 1``); later steps stay there.

    >>> cosine_lr(0.4, 0, 100), cosine_lr(0.4, 99, 100, end_factor=0.0)
    (0.4, 0.0)
    """
    total = max(total_steps, 1)
    factor = cosine_warmup_schedule(
        step=min(max(step, 0), total - 1),
        max_steps=total,
        start_value=1.0,
        end_value=end_factor,
        warmup_steps=min(max(warmup_steps, 0), total),
        warmup_start_value=0.0,
    )
    return base_lr * factor


class LinearClassifier(nn.Module):
    """Optional non-affine BatchNorm (MAE) followed by a linear layer: (B, D) -> (B, C).

    The layer starts at zero weights as in MAE's probe (any start works for a convex
    problem; zeros make the run independent of the initialisation RNG).
    """

    def __init__(self, feature_dim: int, num_classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.norm: nn.Module = (
            nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6) if batch_norm else nn.Identity()
        )
        self.linear = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.norm(features))


def _check_features(
    train_dim: int, val_features: Tensor, val_labels: Tensor, epochs: int, lr: float
) -> None:
    if val_features.ndim != 2:
        raise ValueError(f"features must be (N, D); got val {tuple(val_features.shape)}")
    if train_dim != val_features.shape[1]:
        raise ValueError(
            f"train features have D={train_dim} but val features D={val_features.shape[1]}"
        )
    if len(val_features) != len(val_labels):
        raise ValueError("every feature row needs exactly one label")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")


@torch.no_grad()
def _logits(model: nn.Module, features: Tensor, device: torch.device) -> Tensor:
    model.eval()
    return torch.cat(
        [
            model(features[start : start + 4096].float().to(device)).cpu()
            for start in range(0, len(features), 4096)
        ]
    )


def train_linear(
    epoch_batches: EpochBatches,
    steps_per_epoch: int,
    val_features: Tensor,
    val_labels: Tensor,
    num_classes: int,
    epochs: int = 90,
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    batch_norm: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ProbeResult:
    """The one training loop of the linear probe: SGD on batches of features, a per-step
    cosine learning rate, and the validation score after every epoch.

    Args:
        epoch_batches: Gives the ``(features (B, D), labels (B,))`` batches of an epoch.
        steps_per_epoch: Batches per epoch, for the cosine schedule.
        val_features: (M, D) validation features (any device; scored in chunks).
        val_labels: (M,) class indices.
        num_classes: Number of classes C.
        epochs: Passes over the training data.
        lr: Peak learning rate (the run's: already scaled to the batch).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (LightlySSL's protocol: plain momentum).
        weight_decay: L2 penalty on the linear layer.
        batch_norm: Standardise features with a non-affine BatchNorm first (MAE).
        device: Where to train.
        progress: Show a progress bar over epochs.

    Returns:
        A :class:`ProbeResult`: last and best validation accuracy, loss of every epoch.

    Raises:
        ValueError: For inconsistent shapes or non-positive epochs or lr.
    """
    _check_features(val_features.shape[-1], val_features, val_labels, epochs, lr)
    device = torch.device(device)
    model = LinearClassifier(val_features.shape[1], num_classes, batch_norm).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
        weight_decay=weight_decay,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    total_steps = epochs * max(steps_per_epoch, 1)
    labels = val_labels.long().cpu()
    losses: list[float] = []
    scores: list[tuple[float, float]] = []
    step = 0
    for epoch in tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False):
        model.train()
        total, count = 0.0, 0
        for features, targets in epoch_batches(epoch):
            if batch_norm and len(targets) < 2:
                continue  # a lone sample would break BatchNorm's batch statistics
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, step, total_steps)
            loss = loss_fn(model(features.float().to(device)), targets.long().to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(targets)
            count += len(targets)
        losses.append(total / max(count, 1))
        top1, top5 = topk_accuracy(_logits(model, val_features, device), labels)
        scores.append((top1, top5))
    best = max(range(len(scores)), key=lambda i: scores[i][0])
    return ProbeResult(
        top1=scores[-1][0],
        top5=scores[-1][1],
        losses=losses,
        best_top1=scores[best][0],
        best_top5=scores[best][1],
        val_top1=[score[0] for score in scores],
    )


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    num_classes: int,
    epochs: int = 90,
    lr: float = 0.1,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_norm: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    nesterov: bool = False,
) -> ProbeResult:
    """Trains a linear classifier on features extracted once (no augmentation).

    Args:
        train_features: (N, D) training features.
        train_labels: (N,) class indices in ``[0, num_classes)``.
        val_features: (M, D) validation features.
        val_labels: (M,) class indices.
        num_classes: Number of classes C.
        epochs: Passes over the training features.
        lr: Peak learning rate (cosine-decayed to 0.001 of it over all steps).
        batch_size: Features per SGD step.
        momentum: SGD momentum.
        weight_decay: L2 penalty on the linear layer.
        batch_norm: Standardise features with a non-affine BatchNorm first (MAE).
        seed: Seeds the order of the training samples.
        device: Where to train.
        progress: Show a progress bar over epochs.
        nesterov: Nesterov momentum.

    Returns:
        A :class:`ProbeResult` with validation top-1 / top-5 and the loss of every epoch.

    Raises:
        ValueError: For inconsistent shapes or non-positive epochs, lr or batch_size.
    """
    if train_features.ndim != 2 or val_features.ndim != 2:
        raise ValueError(
            f"features must be (N, D); got train {tuple(train_features.shape)} and val "
            f"{tuple(val_features.shape)}"
        )
    if len(train_features) != len(train_labels):
        raise ValueError("every feature row needs exactly one label")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_features(train_features.shape[1], val_features, val_labels, epochs, lr)
    device = torch.device(device)
    x_train = train_features.float().to(device)
    y_train = train_labels.long().to(device)
    generator = torch.Generator().manual_seed(seed)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield x_train[index], y_train[index]

    return train_linear(
        batches, math.ceil(len(x_train) / batch_size), val_features, val_labels, num_classes,
        epochs=epochs, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        batch_norm=batch_norm, device=device, progress=progress,
    )  # fmt: skip


def linear_probe_augmented(
    backbone: nn.Module,
    train: LabeledData,
    val_features: Tensor,
    val_labels: Tensor,
    num_classes: int,
    input_size: int,
    epochs: int = 90,
    lr: float = 0.1,
    batch_size: int = 256,
    min_scale: float = 0.08,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_norm: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    origin: str = "the backbone",
) -> ProbeResult:
    """LightlySSL's linear evaluation: augmented training images through the frozen backbone.

    Every epoch reads ``train`` with :func:`~fastssl.eval.features.train_transform`
    (random resized crop from ``min_scale``, horizontal flip), computes the features of
    the backbone in eval mode without gradients and trains the linear layer on them
    (:func:`train_linear`); batches are shuffled and the last incomplete one dropped.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, D); not changed (its mode is
            restored afterwards).
        train: Labeled training data (its transform is replaced by the augmentation).
        val_features: (M, D) features of the validation images (evaluation transform),
            labels mapped to ``train``'s classes.
        val_labels: (M,) class indices.
        num_classes: Number of classes C (``len(train.classes)``).
        input_size: Side of the training crops.
        epochs: Passes over ``train``.
        lr: Peak learning rate (the run's).
        batch_size: Images per step.
        min_scale: Smallest random-resized-crop area, as a fraction of the image.
        momentum: SGD momentum.
        weight_decay: L2 penalty on the linear layer.
        batch_norm: A non-affine BatchNorm before the linear layer (MAE).
        num_workers: DataLoader worker processes.
        seed: Seeds the data order and the augmentation.
        device: Where the backbone and the classifier run.
        progress: Show a progress bar over epochs.
        origin: What the backbone is, for error messages.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        ValueError: As :func:`train_linear`, or for a non-positive ``batch_size``.
        NonFiniteFeaturesError: If the backbone gives NaN or infinite features.
    """
    from fastssl.eval.features import (
        NonFiniteFeaturesError,
        make_eval_loader,
        pooled_features,
        train_transform,
    )

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    torch.manual_seed(seed)  # the augmentation, without workers
    train.set_transform(train_transform(input_size, min_scale))
    loader = make_eval_loader(
        train, batch_size, num_workers, shuffle=True, seed=seed,
        drop_last=len(train) > batch_size, pin_memory=device.type == "cuda",
    )  # fmt: skip

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        if hasattr(train.dataset, "set_epoch"):
            train.dataset.set_epoch(epoch)  # shards reshuffle themselves per epoch
        for images, targets, _ in loader:
            with torch.no_grad():
                features = pooled_features(backbone(images.to(device, non_blocking=True)))
            if not bool(torch.isfinite(features).all()):
                raise NonFiniteFeaturesError(
                    f"{origin} gives NaN or infinite features on augmented images of "
                    f"{train.source!r}: its weights or BatchNorm statistics are not finite"
                )
            yield features.float(), torch.as_tensor(targets, dtype=torch.long)

    was_training = backbone.training
    backbone.eval()  # BatchNorm statistics and dropout as pretrained
    try:
        return train_linear(
            batches, max(len(loader), 1), val_features, val_labels, num_classes,
            epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
            batch_norm=batch_norm, device=device, progress=progress,
        )  # fmt: skip
    finally:
        backbone.train(was_training)
