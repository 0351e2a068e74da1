"""Linear probe: a linear classifier trained on frozen features.

The protocol of SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", appendix B.6) scaled to a CPU: the backbone is frozen, so its
features are extracted once (no augmentation) and only the linear layer is trained, with
SGD (momentum 0.9, Nesterov, no weight decay by default), a cosine learning-rate schedule
and batch 256. As in MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners"), a BatchNorm without affine parameters can precede the linear layer: it
standardises the features, which makes one learning rate work for backbones whose feature
scales differ by orders of magnitude (and for raw pixels).

Example:
    >>> import torch
    >>> x = torch.randn(64, 8); y = (x[:, 0] > 0).long()
    >>> result = linear_probe(x, y, x, y, num_classes=2, epochs=20)
    >>> result.top1 > 0.9
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm


@dataclass
class ProbeResult:
    """Accuracy of a trained classifier on the validation set.

    Attributes:
        top1: Fraction of samples whose most probable class is their label.
        top5: Fraction whose label is among the 5 most probable classes (among all
            classes when there are fewer than 5).
        losses: Mean training loss of every epoch.
    """

    top1: float
    top5: float
    losses: list[float] = field(default_factory=list)


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


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 at ``total_steps``."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


class LinearClassifier(nn.Module):
    """Optional non-affine BatchNorm (MAE) followed by a linear layer: (B, D) -> (B, C).

    The layer starts at zero weights as in MAE's probe (any start works for a convex
    problem; zeros make the run independent of the initialisation RNG).
    """

    def __init__(self, feature_dim: int, num_classes: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module = (
            nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6) if batch_norm else nn.Identity()
        )
        self.linear = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.norm(features))


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
    batch_norm: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ProbeResult:
    """Trains a linear classifier on frozen features and scores it on validation features.

    Args:
        train_features: (N, D) training features.
        train_labels: (N,) class indices in ``[0, num_classes)``.
        val_features: (M, D) validation features.
        val_labels: (M,) class indices.
        num_classes: Number of classes C.
        epochs: Passes over the training features.
        lr: Peak learning rate (cosine-decayed to 0 over all steps).
        batch_size: Features per SGD step.
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 penalty on the linear layer.
        batch_norm: Standardise features with a non-affine BatchNorm first (MAE).
        seed: Seeds the order of the training samples.
        device: Where to train.
        progress: Show a progress bar over epochs.

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
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(
            f"train features have D={train_features.shape[1]} but val features "
            f"D={val_features.shape[1]}"
        )
    if len(train_features) != len(train_labels) or len(val_features) != len(val_labels):
        raise ValueError("every feature row needs exactly one label")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    device = torch.device(device)
    x_train = train_features.float().to(device)
    y_train = train_labels.long().to(device)
    model = LinearClassifier(x_train.shape[1], num_classes, batch_norm).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
        weight_decay=weight_decay,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    # A lone last sample would break BatchNorm's batch statistics: drop it (and only it).
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total_steps = epochs * steps_per_epoch
    losses: list[float] = []
    step = 0
    for _ in tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if batch_norm and len(index) < 2:
                continue
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, step, total_steps)
            loss = loss_fn(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(index)
            count += len(index)
        losses.append(total / max(count, 1))
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model(val_features[start : start + 4096].float().to(device)).cpu()
                for start in range(0, len(val_features), 4096)
            ]
        )
    top1, top5 = topk_accuracy(logits, val_labels.long().cpu())
    return ProbeResult(top1, top5, losses)
