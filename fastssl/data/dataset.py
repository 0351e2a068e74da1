"""``LightlyDataset``: image folders (flat or one subfolder per class) and torch datasets
behind lightly 1.6's interface, returning ``(sample, target, filename)``.

Unreadable images. A file that cannot be decoded (truncated, not an image, ...) is found when
it is loaded, not when the folder is indexed: opening every file up front would make creating
a dataset of a million images take minutes. By default such a sample is *skipped*: a warning
names the file and the dataset returns the next readable sample (index + 1, + 2, ...,
wrapping around), so the substitute is deterministic and the same in every worker and epoch;
the filename returned is the substitute's, so (sample, target, filename) always belong
together. A file found unreadable is remembered (per process) and warned about once. With
``strict=True`` an ``UnreadableImageError`` naming the file is raised instead; a DataLoader
worker re-raises it in the main process with the file name in the message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from fastssl.data import images

# The one list of image extensions (fastssl.data.images), with dots: torchvision's
# ImageFolder and lightly 1.6 list these too, plus gif and pnm, which shards also hold.
IMG_EXTENSIONS = tuple(f".{ext}" for ext in images.IMAGE_EXTENSIONS)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mpg", ".hevc", ".m4v", ".webm", ".mpeg")

_DECODE_ERRORS = images.DECODE_ERRORS
_PIXEL_ERRORS = images.PIXEL_ERRORS


class UnreadableImageError(RuntimeError):
    """An image file of a ``LightlyDataset`` could not be read or decoded.

    Attributes:
        path: Full path of the file.
    """

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(
            f"Cannot read image {path!r}: {type(cause).__name__}: {cause}. Remove or replace "
            "the file, or create the dataset with strict=False to skip unreadable images."
        )
        self.path = path


def pil_loader(path: str) -> Image.Image:
    """Loads an image file as an RGB PIL image, raising ``UnreadableImageError`` on failure.

    EXIF orientation is applied and 16-bit data scaled to 8 bits, as everywhere in fastssl
    (:func:`fastssl.data.images.load_rgb`).

    Args:
        path: Path to the image file.

    Returns:
        The decoded, upright RGB image (fully loaded, file closed).
    """
    try:
        return images.load_rgb(path)
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(path, error) from error


def open_image(path: str) -> Image.Image:
    """Opens an image file without decoding it (header read, pixels not yet decoded).

    For transforms that decode by themselves (``decodes_lazily``), e.g. at a reduced JPEG
    scale. The file's bytes are read into memory, so no file handle stays open. An image
    with an EXIF orientation or 16-bit data is decoded here, upright and 8-bit
    (:func:`fastssl.data.images.open_bytes`), so lazy decoding gives the same pixels.

    Args:
        path: Path to the image file.

    Returns:
        The opened PIL image (undecoded unless it needed turning or rescaling).

    Raises:
        UnreadableImageError: When the file cannot be read or is not an image.
    """
    try:
        with open(path, "rb") as file:
            return images.open_bytes(file.read())
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(path, error) from error


class ImageFolderIndex:
    """The files of an image folder, with torchvision ``ImageFolder``'s attributes.

    Flat folder: every image file directly in ``root``, sorted by path, target 0 (as lightly's
    ``DatasetFolder``). Folder with subfolders: one class per subfolder (sorted names, files
    found recursively, as torchvision's ``ImageFolder``); files directly in ``root`` are ignored.

    Attributes:
        root: The folder.
        samples: List of (full path, target), also available as ``imgs``.
        targets: Target of every sample.
        classes: Class names (subfolder names; ``[]`` for a flat folder).
        class_to_idx: Class name to target.
        transform: Applied to the PIL image in ``__getitem__``. A transform whose
            ``decodes_lazily`` attribute is True gets the opened, undecoded image and
            decodes it itself; its decoding errors are reported like the loader's.
    """

    def __init__(
        self,
        root: str,
        transform: Callable[[Any], Any] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
    ) -> None:
        self.root = root
        self.transform = transform
        self.target_transform: Callable[[Any], Any] | None = None
        self.loader = pil_loader
        subdirs = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        # lightly ignores its own output folder when deciding whether root has classes.
        has_classes = any("lightly_outputs" not in name for name in subdirs)

        def accept(path: str) -> bool:
            if not path.lower().endswith(IMG_EXTENSIONS):
                return False
            return is_valid_file is None or is_valid_file(path)

        samples: list[tuple[str, int]] = []
        if has_classes:
            self.classes = subdirs
            self.class_to_idx = {name: index for index, name in enumerate(subdirs)}
            for name in subdirs:
                class_dir = os.path.join(root, name)
                found = [
                    (os.path.join(folder, fname), self.class_to_idx[name])
                    for folder, _, fnames in sorted(os.walk(class_dir, followlinks=True))
                    for fname in sorted(fnames)
                    if accept(os.path.join(folder, fname))
                ]
                if not found:
                    raise FileNotFoundError(
                        f"Found no valid image file in class folder {class_dir!r}; supported "
                        f"extensions are {', '.join(IMG_EXTENSIONS)}."
                    )
                samples.extend(found)
        else:
            self.classes = []
            self.class_to_idx = {}
            samples = sorted(
                (entry.path, 0)
                for entry in os.scandir(root)
                if entry.is_file() and accept(entry.path)
            )
            if not samples:
                raise RuntimeError(
                    f"Found 0 files in folder: {root}\n"
                    f"Supported extensions are: {','.join(IMG_EXTENSIONS)}"
                )
        self.samples = samples
        self.imgs = samples
        self.targets = [target for _, target in samples]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Returns ``(transform(image), target)``; raises ``UnreadableImageError``."""
        path, target = self.samples[index]
        sample: Any
        if getattr(self.transform, "decodes_lazily", False):
            assert self.transform is not None
            image = open_image(path)
            try:
                sample = self.transform(image)
            except _PIXEL_ERRORS as error:
                raise UnreadableImageError(path, error) from error
        else:
            sample = self.loader(path)
            if self.transform is not None:
                sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __len__(self) -> int:
        return len(self.samples)

    def filename(self, index: int) -> str:
        """Path of sample ``index`` relative to ``root``."""
        return os.path.relpath(self.samples[index][0], self.root)


def _get_filename_by_index(dataset: Any, index: int) -> str:
    """Default ``index_to_filename``: path relative to the root, or ``str(index)``."""
    samples = getattr(dataset, "samples", None)
    root = getattr(dataset, "root", None)
    if isinstance(samples, list) and isinstance(root, (str, os.PathLike)):
        return os.path.relpath(samples[index][0], root)
    return str(index)


class LightlyDataset:
    """A dataset of an image folder (or a torch dataset) returning (sample, target, filename).

    Same arguments and behaviour as lightly 1.6's ``LightlyDataset`` for image folders:
    a flat folder gives target 0 for every image; a folder of subfolders gives one target per
    subfolder (sorted by name); filenames are paths relative to ``input_dir``. Unreadable
    images are skipped with a warning naming the file, or raise ``UnreadableImageError`` with
    ``strict=True`` (see the module docstring). Video folders are not supported.

    Args:
        input_dir: Folder of images, or None for an empty dataset (see ``from_torch_dataset``).
        transform: Applied to each PIL image (e.g. a ``fastssl.transforms`` transform).
        index_to_filename: ``f(dataset, index) -> str``; defaults to the relative path.
        filenames: If given, only these files (paths relative to ``input_dir``) are used.
        tqdm_args: Accepted for compatibility (lightly uses it for videos only).
        num_workers_video_frame_counting: Accepted for compatibility (videos only).
        strict: Raise on an unreadable image instead of skipping it.

    >>> import tempfile, PIL.Image
    >>> root = tempfile.mkdtemp()
    >>> PIL.Image.new("RGB", (4, 4)).save(f"{root}/a.png")
    >>> sample, target, filename = LightlyDataset(root)[0]
    >>> sample.size, target, filename
    ((4, 4), 0, 'a.png')
    """

    def __init__(
        self,
        input_dir: str | None,
        transform: Callable[[Any], Any] | None = None,
        index_to_filename: Callable[[Any, int], str] | None = None,
        filenames: Sequence[str] | None = None,
        tqdm_args: dict[str, Any] | None = None,
        num_workers_video_frame_counting: int = 0,
        *,
        strict: bool = False,
    ) -> None:
        self.input_dir = input_dir
        self.strict = strict
        self._unreadable: set[int] = set()
        # One flag per sample in shared memory: loader workers mark what they meet, and
        # num_unreadable counts it in the main process.
        self._unreadable_flags: torch.Tensor | None = None
        self.dataset: Any = None
        if input_dir is not None:
            if not os.path.exists(input_dir):
                raise ValueError(f"The input directory {input_dir} does not exist!")
            video = _find_video(input_dir)
            if video is not None:
                raise NotImplementedError(
                    f"{input_dir!r} contains videos (e.g. {video!r}); fastssl's LightlyDataset "
                    "reads image folders only. Extract frames to image files first."
                )
            is_valid_file = None
            if filenames is not None:
                wanted = {os.path.normpath(os.path.join(input_dir, name)) for name in filenames}

                def is_valid_file(path: str) -> bool:
                    return os.path.normpath(path) in wanted

            self.dataset = ImageFolderIndex(input_dir, transform, is_valid_file)
        elif transform is not None:
            raise ValueError(f"transform must be None when input_dir is None but is {transform}")
        self.index_to_filename = index_to_filename or _get_filename_by_index
        self._flags()  # allocated before any loader worker starts, so that all share it

    @classmethod
    def from_torch_dataset(
        cls,
        dataset: Any,
        transform: Callable[[Any], Any] | None = None,
        index_to_filename: Callable[[Any, int], str] | None = None,
    ) -> LightlyDataset:
        """Wraps a torch/torchvision dataset returning (sample, target).

        Args:
            dataset: The dataset; its ``transform`` is replaced when ``transform`` is given.
            transform: New transform of ``dataset``.
            index_to_filename: ``f(dataset, index) -> str``; defaults to ``str(index)``.

        Returns:
            A LightlyDataset whose filenames are ``index_to_filename(dataset, index)``.
        """
        wrapper = cls(None, index_to_filename=index_to_filename)
        if transform is not None:
            dataset.transform = transform
            # torchvision's VisionDataset applies `transforms`, built from `transform`.
            from torchvision.datasets.vision import StandardTransform, VisionDataset

            if isinstance(dataset, VisionDataset):
                dataset.transforms = StandardTransform(transform, dataset.target_transform)
        wrapper.dataset = dataset
        return wrapper

    def __getitem__(self, index: int) -> tuple[Any, Any, str]:
        """Returns ``(sample, target, filename)`` of ``index`` (or of its substitute when the
        image is unreadable and ``strict`` is False)."""
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for a dataset of {size} samples.")
        index %= size
        for offset in range(size):
            candidate = (index + offset) % size
            if candidate in self._unreadable:
                continue
            try:
                sample, target = self.dataset[candidate]
            except UnreadableImageError as error:
                if self.strict:
                    raise
                self._unreadable.add(candidate)
                self._flags()[candidate] = 1
                warnings.warn(
                    f"LightlyDataset: skipping unreadable image {error.path!r} "
                    f"({error.__cause__}); the next readable sample is used instead.",
                    stacklevel=2,
                )
                continue
            return sample, target, self.index_to_filename(self.dataset, candidate)
        raise RuntimeError(
            f"LightlyDataset: none of the {size} images in {self.input_dir!r} could be read."
        )

    def __len__(self) -> int:
        return 0 if self.dataset is None else len(self.dataset)

    def _flags(self) -> torch.Tensor:
        if self._unreadable_flags is None or self._unreadable_flags.numel() != len(self):
            self._unreadable_flags = torch.zeros(len(self), dtype=torch.uint8).share_memory_()
        return self._unreadable_flags

    @property
    def num_unreadable(self) -> int:
        """Distinct images found unreadable so far (each replaced by a readable one), by
        every process reading this dataset, DataLoader workers included."""
        return int(self._flags().sum())

    def __add__(self, other: Any) -> Any:
        raise NotImplementedError()

    def get_filenames(self) -> list[str]:
        """Returns the filename of every sample, in index order."""
        if hasattr(self.dataset, "get_filenames"):
            names: list[str] = self.dataset.get_filenames()
            return names
        return [self.index_to_filename(self.dataset, index) for index in range(len(self))]

    def dump(
        self,
        output_dir: str,
        filenames: list[str] | None = None,
        format: str | None = None,
    ) -> None:
        """Writes the images (all, or those in ``filenames``) to ``output_dir``.

        Files of an image folder are copied byte for byte; samples of a torch dataset are
        saved with PIL in ``format`` (from the file name when None, PNG as a fallback).
        """
        if self.transform is not None:
            raise RuntimeError("Cannot dump dataset which applies transforms!")
        os.makedirs(output_dir, exist_ok=True)
        all_names = self.get_filenames()
        wanted = None if filenames is None else set(filenames)
        for index, name in enumerate(all_names):
            if wanted is not None and name not in wanted:
                continue
            target = os.path.join(output_dir, name)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            if isinstance(self.dataset, ImageFolderIndex):
                shutil.copyfile(self.dataset.samples[index][0], target)
                continue
            image, _ = self.dataset[index]
            try:
                image.save(target, format=format)
            except ValueError:  # no format from the file name
                image.save(target, format="png")

    def get_filepath_from_filename(self, filename: str, image: Image.Image | None = None) -> str:
        """Returns the path of ``filename`` in ``input_dir``, or saves ``image`` to a
        temporary ``.jpg`` and returns that path when the file does not exist there."""
        if isinstance(self.input_dir, str):
            path = os.path.join(self.input_dir, filename)
            if os.path.isfile(path):
                return path
        if image is None:
            raise ValueError(
                "The parameter image must not be None for VideoDatasets and TorchDatasets"
            )
        path = os.path.join(tempfile.mkdtemp(), filename) + ".jpg"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path)
        return path

    @property
    def transform(self) -> Callable[[Any], Any] | None:
        """The transform applied to every image."""
        transform: Callable[[Any], Any] | None = self.dataset.transform
        return transform

    @transform.setter
    def transform(self, transform: Callable[[Any], Any] | None) -> None:
        self.dataset.transform = transform


def _find_video(root: str) -> str | None:
    for folder, _, fnames in os.walk(root):
        for fname in fnames:
            if fname.lower().endswith(VIDEO_EXTENSIONS):
                return os.path.join(folder, fname)
    return None
