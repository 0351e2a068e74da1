"""Datasets, collation, shard conversion and readers.

``LightlyDataset``, ``MultiViewCollate`` and ``IJEPAMaskCollator`` keep LightlySSL 1.6's
names and behaviour (``from lightly.data import LightlyDataset`` becomes
``from fastssl.data import ...``); lightly's video errors are left out (no video support).

``make_loader`` is the one entry point of the fast path: folders, shards and ``.beton``
files through the torch, DALI or FFCV backend.
"""

from fastssl.data.dataset import LightlyDataset, UnreadableImageError
from fastssl.data.ijepa_collate import IJEPAMaskCollator
from fastssl.data.loader import Loader, make_loader
from fastssl.data.multi_view_collate import MultiViewCollate

__all__ = [
    "IJEPAMaskCollator",
    "LightlyDataset",
    "Loader",
    "MultiViewCollate",
    "UnreadableImageError",
    "make_loader",
]
