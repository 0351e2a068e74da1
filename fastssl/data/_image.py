"""``DatasetFolder``: the images directly inside one folder (LightlySSL's
``lightly.data._image``).

Unlike torchvision's ``DatasetFolder``, subfolders are not classes: only the files in the
folder itself are listed (sorted by path) and every target is 0. fastssl's
:class:`~fastssl.data.LightlyDataset` reads flat folders and folders with class subfolders;
this class is the plain building block with lightly's interface.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name in ("b.png", "a.png"):
    ...     Image.new("RGB", (4, 4)).save(f"{root}/{name}")
    >>> dataset = DatasetFolder(root, extensions=(".png",))
    >>> len(dataset), [path[-5:] for path, _ in dataset.samples], dataset[0][1]
    (2, ['a.png', 'b.png'], 0)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torchvision.datasets as datasets

from fastssl.data._image_loaders import default_loader

__all__ = ["DatasetFolder", "default_loader"]


class DatasetFolder(datasets.VisionDataset):
    """The files directly inside ``root`` that pass the filters, as ``(sample, 0)``.

    Args:
        root: The folder.
        loader: Reads a file path into a sample (default: :func:`default_loader`).
        extensions: File name endings accepted (case-insensitive), e.g. ``(".jpg",)``.
        transform: Applied to each loaded sample.
        target_transform: Applied to each target.
        is_valid_file: Further filter on the full path; with ``extensions`` both must
            accept a file.

    Attributes:
        samples: ``(path, 0)`` of every file, sorted by path.
        targets: The target of every sample (all 0).

    Raises:
        ValueError: If both ``extensions`` and ``is_valid_file`` are None.
        RuntimeError: If no file in ``root`` passes the filters.
    """

    def __init__(
        self,
        root: str,
        loader: Callable[[str], Any] = default_loader,
        extensions: tuple[str, ...] | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(root, transform=transform, target_transform=target_transform)
        if extensions is None and is_valid_file is None:
            raise ValueError("Both extensions and is_valid_file cannot be None")
        lowered = None if extensions is None else tuple(ext.lower() for ext in extensions)

        def accept(path: str) -> bool:
            if lowered is not None and not path.lower().endswith(lowered):
                return False
            return is_valid_file is None or is_valid_file(path)

        samples = sorted(
            (entry.path, 0)
            for entry in os.scandir(self.root)
            if entry.is_file() and accept(entry.path)
        )
        if not samples:
            message = f"Found 0 files in folder: {self.root}\n"
            if extensions is not None:
                message += f"Supported extensions are: {','.join(extensions)}"
            raise RuntimeError(message)
        self.loader = loader
        self.extensions = extensions
        self.samples: list[tuple[str, int]] = samples
        self.targets = [target for _, target in samples]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Returns ``(transform(loader(path)), target_transform(0))``."""
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __len__(self) -> int:
        return len(self.samples)
