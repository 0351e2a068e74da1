"""``LightlySubset``: the samples of a :class:`~fastssl.data.LightlyDataset` with the given
filenames (LightlySSL's ``lightly.data.lightly_subset``).

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for name in ("a.png", "b.png", "c.png"):
    ...     Image.new("RGB", (4, 4)).save(f"{root}/{name}")
    >>> subset = LightlySubset(LightlyDataset(root), ["c.png", "a.png"])
    >>> len(subset), subset[0][2], subset.get_filenames()
    (2, 'c.png', ['c.png', 'a.png'])
"""

from __future__ import annotations

from typing import Any

from fastssl.data.dataset import LightlyDataset


class LightlySubset(LightlyDataset):
    """The samples of ``base_dataset`` named in ``filenames_subset``, in that order.

    Indexing, ``get_filenames`` and ``dump`` work on the subset; the images, transform
    and unreadable-image handling are the base dataset's (``__getitem__`` returns what the
    base returns for the matching index).

    Args:
        base_dataset: The dataset to take samples from.
        filenames_subset: Filenames (as ``base_dataset.get_filenames()`` gives them) of
            the samples to keep; index 0 of the subset is the first of them.

    Raises:
        KeyError: If a filename is not in ``base_dataset``.
    """

    def __init__(self, base_dataset: LightlyDataset, filenames_subset: list[str]) -> None:
        # LightlyDataset.__init__ is not called: everything is delegated to base_dataset.
        self.base_dataset = base_dataset
        self.filenames_subset = filenames_subset
        index_of = {name: index for index, name in enumerate(base_dataset.get_filenames())}
        missing = [name for name in filenames_subset if name not in index_of]
        if missing:
            raise KeyError(
                f"{len(missing)} filenames are not in the base dataset, e.g. {missing[0]!r}"
            )
        self.mapping_subset_index_to_baseset_index = [index_of[n] for n in filenames_subset]

    def __getitem__(self, index_subset: int) -> tuple[Any, Any, str]:
        """Returns ``(sample, target, filename)`` of subset index ``index_subset``."""
        return self.base_dataset[self.mapping_subset_index_to_baseset_index[index_subset]]

    def __len__(self) -> int:
        return len(self.filenames_subset)

    def get_filenames(self) -> list[str]:
        """The filenames of the subset, in subset order."""
        return self.filenames_subset

    def index_to_filename(self, dataset: Any, index_subset: int) -> str:
        """The filename of subset index ``index_subset`` (``dataset`` is ignored; it is
        there for the base class's ``index_to_filename(dataset, index)`` signature)."""
        return self.filenames_subset[index_subset]

    def dump(
        self,
        output_dir: str,
        filenames: list[str] | None = None,
        format: str | None = None,
    ) -> None:
        """Writes the subset's images (all, or those also in ``filenames``) to
        ``output_dir``, as :meth:`LightlyDataset.dump` does."""
        wanted = self.filenames_subset
        if filenames is not None:
            requested = set(filenames)
            wanted = [name for name in wanted if name in requested]
        self.base_dataset.dump(output_dir, filenames=wanted, format=format)

    @property
    def num_unreadable(self) -> int:
        """Unreadable images met so far by the base dataset."""
        return self.base_dataset.num_unreadable

    @property
    def input_dir(self) -> str:  # type: ignore[override]
        """The base dataset's input folder (as a string)."""
        return str(self.base_dataset.input_dir)

    @property
    def dataset(self) -> Any:
        """The base dataset's underlying dataset (e.g. its image folder index)."""
        return self.base_dataset.dataset
