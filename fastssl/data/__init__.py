"""Datasets, collation, shard conversion and readers.

``LightlyDataset`` and ``MultiViewCollate`` keep LightlySSL 1.6's names and behaviour
(``from lightly.data import LightlyDataset`` becomes ``from fastssl.data import ...``).
"""

from fastssl.data.dataset import LightlyDataset, UnreadableImageError
from fastssl.data.multi_view_collate import MultiViewCollate

__all__ = ["LightlyDataset", "MultiViewCollate", "UnreadableImageError"]
