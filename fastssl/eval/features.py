"""Labeled evaluation data and frozen-backbone feature extraction.

A labeled source is an image folder with one subfolder per class (torchvision
``ImageFolder`` layout) or a ``fastssl shards`` WebDataset output (classes from its
manifest). Images go through the evaluation transform of :func:`eval_transform`
(deterministic: resize to 256 + center crop 224, scaled to other sizes, ImageNet
normalisation) and through the backbone without gradients; features and labels are
gathered on the CPU. :func:`train_transform` is the augmentation of the linear probe and
fine-tuning (random resized crop + flip).

Validation labels are mapped onto the training classes *by name* (:func:`class_mapping`),
so a validation folder that lacks some training classes still scores correctly, and one
with a class the training set does not have is an error instead of silently wrong labels.

Example:
    >>> train = open_labeled("train/", eval_transform(32))  # doctest: +SKIP
    >>> feats = extract_features(backbone, train, batch_size=256)  # doctest: +SKIP
    >>> feats.features.shape, feats.labels.shape  # doctest: +SKIP
    (torch.Size([5000, 512]), torch.Size([5000]))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from fastssl.data.dataset import LightlyDataset
from fastssl.data.loader import detect_source
from fastssl.data.webdataset_source import WebDatasetSource
from fastssl.models.backbones import SMALL_INPUT_SIZE

#: ImageNet channel statistics, as used by torchvision and every SSL evaluation protocol.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteFeaturesError(ValueError):
    """A backbone gave NaN or infinite features: its weights or BatchNorm statistics are
    not finite, and any accuracy computed from them would be meaningless."""


class ToRGB:
    """Converts a PIL image of any mode (grayscale, palette, RGBA) to RGB.

    A class rather than a lambda so that DataLoader workers can pickle the transform.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")


#: Fraction of the resized short side kept by the centre crop of the evaluation transform:
#: 224 / 256, the ImageNet protocol of LightlySSL's benchmarks (and of SimCLR, MoCo, DINO).
CENTER_CROP_RATIO = 224 / 256


def eval_resize(input_size: int, resize: int | None = None) -> int | None:
    """Short side the evaluation transform resizes to before its centre crop.

    Args:
        input_size: Side of the centre crop in pixels.
        resize: An explicit short side (``--resize``), >= ``input_size``.

    Returns:
        ``resize`` when given; above 64 px ``round(input_size / 0.875)`` (the ImageNet
        protocol scaled to the size: 256 at 224, 146 at 128, 110 at 96); at 64 px or less
        None, meaning the whole image is resized to a square (small datasets such as
        CIFAR or STL at 64 are stored at their size, and LightlySSL's CIFAR-10 benchmark
        evaluates the whole image).

    Raises:
        ValueError: For a non-positive ``input_size`` or a ``resize`` below it.

    >>> eval_resize(224), eval_resize(128), eval_resize(32), eval_resize(224, 224)
    (256, 146, None, 224)
    """
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if resize is not None:
        if resize < input_size:
            raise ValueError(
                f"resize={resize} is below input_size={input_size}: the center crop needs a "
                f"short side of at least {input_size} (e.g. resize 256 for 224)"
            )
        return resize
    if input_size <= SMALL_INPUT_SIZE:
        return None
    return round(input_size / CENTER_CROP_RATIO)


def eval_transform(input_size: int, resize: int | None = None) -> Callable[[Image.Image], Tensor]:
    """The deterministic evaluation transform: PIL image -> (3, input_size, input_size).

    The short side is resized to :func:`eval_resize` (``resize`` or, by default, 256 at 224:
    LightlySSL's kNN, linear and fine-tune protocol) and the central ``input_size`` square
    is kept; at 64 px or less, without ``resize``, the image is resized to a square instead.
    Then ImageNet normalisation.

    Args:
        input_size: Side of the output in pixels.
        resize: Short side before the center crop, >= ``input_size`` (None: the default above).

    Returns:
        A callable mapping a PIL image to a normalised float tensor (3, input_size, input_size).

    >>> eval_transform(32)(Image.new("L", (40, 50))).shape
    torch.Size([3, 32, 32])
    """
    short_side = eval_resize(input_size, resize)
    steps: list[Any]
    if short_side is None:
        steps = [T.Resize((input_size, input_size))]
    else:
        steps = [T.Resize(short_side), T.CenterCrop(input_size)]
    return T.Compose(
        [ToRGB(), *steps, T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    )


def train_transform(input_size: int, min_scale: float = 0.08) -> Callable[[Image.Image], Tensor]:
    """The training augmentation of the linear probe and of fine-tuning (ResNets).

    Random resized crop (area ``min_scale``-1 of the image, aspect 3/4-4/3), horizontal flip
    and ImageNet normalisation: ``T.RandomResizedCrop(224)`` and ``T.RandomHorizontalFlip()``
    of LightlySSL's linear and fine-tune benchmarks at ``min_scale=0.08``.

    Args:
        input_size: Side of the output crop in pixels.
        min_scale: Smallest crop area as a fraction of the image, in (0, 1].

    Returns:
        A callable mapping a PIL image to a float tensor (3, input_size, input_size).

    Raises:
        ValueError: For ``min_scale`` outside (0, 1].
    """
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1] (a fraction of the image), got {min_scale}")
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(input_size, scale=(min_scale, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


@dataclass
class LabeledData:
    """A labeled image source ready for a DataLoader.

    Attributes:
        source: The folder it was opened from.
        kind: ``"folder"`` or ``"webdataset"``.
        dataset: Map-style (folder) or iterable (shards) dataset yielding
            ``(transform(image), target, key)``.
        classes: Class names; ``target`` indexes this list.
    """

    source: str
    kind: str
    dataset: Any
    classes: list[str]

    def __len__(self) -> int:
        return len(self.dataset)

    def set_transform(self, transform: Callable[[Image.Image], Any]) -> None:
        """Replaces the transform applied to every image."""
        self.dataset.transform = transform


def open_labeled(
    source: str | os.PathLike[str],
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> LabeledData:
    """Opens a labeled image folder (one subfolder per class) or WebDataset shards.

    Args:
        source: Image folder with class subfolders, or a ``fastssl shards`` output folder.
        transform: Applied to each PIL image.
        shuffle: For shards only: shuffle shards and samples (seeded by ``seed`` and the
            epoch set with ``dataset.set_epoch``); folders are shuffled by the DataLoader.
        seed: Seed of the shard shuffle.

    Returns:
        The :class:`LabeledData`.

    Raises:
        FileNotFoundError: If ``source`` does not exist or a class folder has no image.
        ValueError: If ``source`` is empty, has no class subfolders, is FFCV, or holds
            unlabeled shards; the message names ``source``.
    """
    path = os.fspath(source)
    kind = detect_source(path)  # raises for a missing path or an empty folder
    if kind == "ffcv":
        raise ValueError(
            f"{path!r} is an FFCV .beton; evaluation reads an image folder with class "
            "subfolders or `fastssl shards --format webdataset` output"
        )
    if kind == "webdataset":
        shards = WebDatasetSource(
            path, transform=transform, shuffle=shuffle, seed=seed, rank=0, world_size=1
        )
        if shards.classes in ([], ["."]):
            raise ValueError(
                f"shards {path!r} were converted from a folder without class subfolders; "
                "evaluation needs labels: convert a folder with one subfolder per class"
            )
        return LabeledData(path, kind, shards, list(shards.classes))
    dataset = LightlyDataset(path, transform)
    classes = list(dataset.dataset.classes)
    if not classes:
        raise ValueError(
            f"image folder {path!r} has no class subfolders; evaluation needs labels: put "
            "the images of each class in their own subfolder (torchvision ImageFolder layout)"
        )
    return LabeledData(path, kind, dataset, classes)


def class_mapping(train_classes: list[str], data: LabeledData) -> Tensor:
    """Maps ``data``'s targets onto the indices of ``train_classes`` by class name.

    Returns:
        A long tensor ``m`` of shape (len(data.classes),): ``m[target]`` is the index of
        that class in ``train_classes``.

    Raises:
        ValueError: If ``data`` has classes that ``train_classes`` lacks (named in the
            message with the source).
    """
    index = {name: i for i, name in enumerate(train_classes)}
    unknown = [name for name in data.classes if name not in index]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:10])
        raise ValueError(
            f"{data.source!r} has {len(unknown)} classes that the training set does not have "
            f"({shown}{', ...' if len(unknown) > 10 else ''}); train classes are "
            f"{', '.join(repr(n) for n in train_classes[:10])}"
            f"{', ...' if len(train_classes) > 10 else ''}"
        )
    return torch.tensor([index[name] for name in data.classes], dtype=torch.long)


def make_eval_loader(
    data: LabeledData,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader of ``(images (B, 3, H, W), targets (B,), keys)`` over ``data``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    iterable = data.kind == "webdataset"
    return DataLoader(
        cast(Dataset[Any], data.dataset),
        batch_size=batch_size,
        shuffle=shuffle and not iterable,  # shards shuffle themselves
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


@dataclass
class Features:
    """Features of a labeled source.

    Attributes:
        features: Float tensor (N, D) on the CPU.
        labels: Long tensor (N,) of class indices.
        keys: The N sample names (file paths relative to the folder, or shard keys).
    """

    features: Tensor
    labels: Tensor
    keys: list[str]


class PixelFeatures(nn.Module):
    """The raw-pixel baseline: an image (B, 3, H, W) becomes its flattened pixels (B, 3HW)."""

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(start_dim=1)


def pooled_features(out: Tensor) -> Tensor:
    """A backbone's output as (B, D) features: (B, D) and (B, D, 1, 1) are flattened,
    feature maps (B, C, h, w) of dense methods (DenseCL, VICRegL, DetCon, whose trunks
    keep their maps) are averaged over h and w, as the methods' own ``forward`` does.

    >>> pooled_features(torch.ones(2, 8, 3, 3)).shape
    torch.Size([2, 8])
    """
    if out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
        return out.mean(dim=(2, 3))
    return out.flatten(start_dim=1)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    data: LabeledData,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    target_map: Tensor | None = None,
    progress: bool = False,
    origin: str = "the backbone",
) -> Features:
    """Runs a frozen backbone over every sample of ``data`` once.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, D), (B, D, 1, 1) or feature maps
            (see :func:`pooled_features`); run in eval mode (its previous mode is restored
            afterwards).
        data: The labeled source, with its evaluation transform set.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes.
        device: Where the backbone runs; features come back on the CPU.
        target_map: Optional (C_data,) tensor mapping ``data``'s targets to other class
            indices (see :func:`class_mapping`).
        progress: Show a progress bar.
        origin: What the backbone is, for error messages (e.g. ``"checkpoint 'a.ckpt'"``).

    Returns:
        :class:`Features` with N = len(data) rows.

    Raises:
        ValueError: If ``data`` yields no sample.
        NonFiniteFeaturesError: If a feature is NaN or infinite (names ``origin``).
    """
    was_training = backbone.training
    backbone.eval()
    device = torch.device(device)
    loader = make_eval_loader(data, batch_size, num_workers, pin_memory=device.type == "cuda")
    chunks: list[Tensor] = []
    labels: list[Tensor] = []
    keys: list[str] = []
    try:
        for images, targets, names in tqdm(
            loader, desc=f"features {data.source}", disable=not progress, leave=False
        ):
            out = pooled_features(backbone(images.to(device, non_blocking=True)))
            chunks.append(out.float().cpu())
            labels.append(torch.as_tensor(targets, dtype=torch.long))
            keys.extend(names)
    finally:
        backbone.train(was_training)
    if not chunks:
        raise ValueError(f"{data.source!r} yielded no images to extract features from")
    features = torch.cat(chunks)
    bad = int((~torch.isfinite(features)).any(dim=1).sum())
    if bad:
        raise NonFiniteFeaturesError(
            f"{origin} gives NaN or infinite features for {bad} of {len(features)} images of "
            f"{data.source!r}: its weights or BatchNorm statistics are not finite (a diverged "
            "run), so no accuracy can be computed from it; evaluate an earlier checkpoint or "
            "train again with a lower learning rate"
        )
    label_tensor = torch.cat(labels)
    if target_map is not None:
        label_tensor = target_map[label_tensor]
    return Features(features, label_tensor, keys)
