"""The FFCV engine: ``(views, targets, keys)`` batches from a ``.beton``.

FFCV (https://github.com/libffcv/ffcv) decodes with a random resized crop (only the crop's
region is resized), flips and normalizes in numba-compiled stages. This engine runs the
ViewSpecs FFCV can express (:func:`ffcv_unsupported` names what it cannot) and is picked
by ``backend="auto"`` for a ``.beton``. FFCV is imported only when a loader is made.

Example:
    >>> from fastssl.transforms.view_spec import ViewSpec
    >>> views = FFCVViews("shards/", [ViewSpec(crop_size=64)] * 2, batch_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from fastssl.data.engines.base import Batch
from fastssl.transforms.view_spec import ViewSpec


def ffcv_unsupported(spec: ViewSpec) -> str | None:
    """Why FFCV cannot express ``spec`` (naming the field), or None when it can.

    FFCV (0.0.x) decodes with a random resized crop (area-preserving resize), flips
    horizontally and normalizes; it has no vertical flip, rotation, random-order color
    jitter with hue, grayscale, Gaussian blur or solarization.
    """
    missing = {
        "vf_prob": "vertical flip",
        "rr_prob": "rotation",
        "cj_prob": "ColorJitter (brightness, contrast, saturation and hue in random order)",
        "gray_prob": "random grayscale",
        "blur_prob": "Gaussian blur",
        "solarize_prob": "solarization",
    }
    for name, op in missing.items():
        value = getattr(spec, name)
        if value > 0 and not (name == "cj_prob" and not _has_jitter(spec)):
            return f"ViewSpec field {name}={value}: FFCV has no {op} op"
    if spec.crop_size is None:
        return "ViewSpec field crop_size=None: FFCV batches need one image size per view"
    if spec.interpolation != "bilinear":
        return (
            f"ViewSpec field interpolation={spec.interpolation!r}: FFCV resizes with its own "
            f"filter only (use 'bilinear')"
        )
    return None


def _has_jitter(spec: ViewSpec) -> bool:
    return any(j > 0 for j in (spec.cj_bright, spec.cj_contrast, spec.cj_sat, spec.cj_hue))


class FFCVViews:
    """``(views, targets, keys)`` batches from a ``.beton``: one FFCV loader per view.

    FFCV 0.0.x maps each pipeline to one field, so each view has its own loader over the
    same file; all use the same order seed, so batch i of every loader holds the same
    samples. Keys are the samples' positions in the file (``fastssl shards`` keys).

    Args:
        source: ``.beton`` file or a ``fastssl shards --format ffcv`` folder.
        specs: One ViewSpec per view (see :func:`ffcv_unsupported`).
        batch_size: Samples per batch.
        num_workers: FFCV threads.
        shuffle: Random order (seeded with ``seed + epoch``) or the file's order.
        drop_last: Drop the last incomplete batch.
        seed: Order seed.
        rank: This process's rank; it reads a contiguous 1/world_size of the samples.
        world_size: Number of processes.
        dtype: float32, float16 or bfloat16 views.

    Raises:
        ValueError: When a ViewSpec uses what FFCV cannot express, naming the field.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        specs: Sequence[ViewSpec],
        *,
        batch_size: int,
        num_workers: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for index, spec in enumerate(specs):
            reason = ffcv_unsupported(spec)
            if reason is not None:
                raise ValueError(f"view {index}: {reason}; use backend='dali' or 'torch'")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype={dtype} is not supported: use float32, float16 or bfloat16")
        from fastssl.data.ffcv_source import _import_ffcv, beton_path

        _import_ffcv()
        import numpy as np
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader as FFCVLoader
        from ffcv.loader import OrderOption
        from ffcv.reader import Reader
        from ffcv.transforms import (
            NormalizeImage,
            RandomHorizontalFlip,
            Squeeze,
            ToTensor,
            ToTorchImage,
        )

        path = beton_path(source)
        total = int(Reader(path).num_samples)
        start, stop = (total * rank) // world_size, (total * (rank + 1)) // world_size
        self.batch_size, self.dtype = batch_size, dtype
        self.loaders = []
        for spec in specs:
            size = spec.crop_size
            assert size is not None
            height, width = (size, size) if isinstance(size, int) else size
            mean = spec.normalize_mean or (0.0, 0.0, 0.0)
            std = spec.normalize_std or (1.0, 1.0, 1.0)
            image: list[Any] = [
                RandomResizedCropRGBImageDecoder(
                    (height, width), scale=spec.crop_scale, ratio=spec.crop_ratio
                )
            ]
            if spec.hf_prob > 0:
                image.append(RandomHorizontalFlip(flip_prob=spec.hf_prob))
            # Normalize on the HWC uint8 array (FFCV's jitted CPU op), then hand over to
            # torch: one jitted stage then one plain stage. A jitted op after the torch
            # ops would make a third stage, which FFCV 1.0.2's graph grouping never leaves.
            image += [
                NormalizeImage(
                    np.array(mean) * 255.0,
                    np.array(std) * 255.0,
                    np.float16 if dtype == torch.float16 else np.float32,
                ),
                ToTensor(),
                ToTorchImage(),
            ]
            self.loaders.append(
                FFCVLoader(
                    path,
                    batch_size=batch_size,
                    num_workers=num_workers,
                    order=OrderOption.RANDOM if shuffle else OrderOption.SEQUENTIAL,
                    seed=seed,
                    drop_last=drop_last,
                    indices=list(range(start, stop)),
                    pipelines={
                        "image": image,
                        "label": [IntDecoder(), ToTensor(), Squeeze()],
                    },
                )
            )

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch: its order is drawn with ``seed + epoch``."""
        for loader in self.loaders:
            loader.next_epoch = epoch

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[Batch]:
        from fastssl.data.shards import key

        # The loaders draw the order of their coming epoch from (seed, epoch) alone.
        order = list(self.loaders[0].next_traversal_order())
        for index, batches in enumerate(zip(*self.loaders, strict=True)):
            views = [images.contiguous() for images, _ in batches]
            if self.dtype == torch.bfloat16:
                views = [view.to(torch.bfloat16) for view in views]
            targets = batches[0][1].reshape(-1).long()
            chosen = order[index * self.batch_size : index * self.batch_size + len(targets)]
            yield views, targets, [key(int(i)) for i in chosen]
