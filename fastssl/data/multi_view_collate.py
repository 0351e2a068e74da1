"""``MultiViewCollate``: batches (views, target, filename) samples view by view."""

from __future__ import annotations

from collections.abc import Sequence
from warnings import warn

import torch
from torch import Tensor


class MultiViewCollate:
    """Collates ``[(views, target, filename), ...]`` into ``(views, targets, filenames)``.

    Same return structure as lightly 1.6's ``MultiViewCollate``: ``views[i]`` stacks view ``i``
    of every sample, so it has shape (B, C, H_i, W_i) even when views differ in size (DINO,
    SwaV, MSN multi-crop); ``targets`` is a (B,) long tensor; ``filenames`` a list of B str.
    An empty batch gives ``([], tensor([]), [])`` with a warning, as in lightly.

    >>> import torch
    >>> sample = ([torch.zeros(3, 4, 4), torch.zeros(3, 2, 2)], 1, "a.png")
    >>> views, targets, names = MultiViewCollate()([sample, sample])
    >>> [tuple(v.shape) for v in views], targets.tolist(), names
    ([(2, 3, 4, 4), (2, 3, 2, 2)], [1, 1], ['a.png', 'a.png'])
    """

    def __call__(
        self, batch: Sequence[tuple[Sequence[Tensor], int, str]]
    ) -> tuple[list[Tensor], Tensor, list[str]]:
        """Collates a batch.

        Args:
            batch: One ``(views, target, filename)`` tuple per image; every sample must have
                the same number of views, and view ``i`` the same shape in every sample.

        Returns:
            ``(views, targets, filenames)`` as described above.

        Raises:
            ValueError: If samples have different numbers of views, naming the sample.
        """
        filenames = [str(sample[2]) for sample in batch]
        targets = torch.tensor([int(sample[1]) for sample in batch], dtype=torch.long)
        if len(batch) == 0:
            warn("MultiViewCollate received empty batch.", stacklevel=2)
            return [], targets, filenames
        n_views = len(batch[0][0])
        for index, sample in enumerate(batch):
            if len(sample[0]) != n_views:
                raise ValueError(
                    f"MultiViewCollate: sample {index} ({sample[2]!r}) has {len(sample[0])} "
                    f"views but sample 0 has {n_views}; all samples need the same views."
                )
        views = [torch.stack([sample[0][i] for sample in batch]) for i in range(n_views)]
        return views, targets, filenames
