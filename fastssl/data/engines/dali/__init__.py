"""DALI graphs compiled from ViewSpecs (NVIDIA DALI, https://github.com/NVIDIA/DALI).

:func:`build_pipeline` turns a list of ViewSpecs into one DALI pipeline over an image
folder or ``fastssl shards`` WebDataset shards; :class:`DaliBatches` reads it as
``(views, targets, keys)`` batches. ``fastssl.data.make_loader(backend="dali")`` uses
both. DALI itself is imported only when a pipeline is built.
"""

from __future__ import annotations

from fastssl.data.engines.dali.iterator import DaliBatches
from fastssl.data.engines.dali.pipeline import (
    ReaderSpec,
    build_pipeline,
    dali_available,
    folder_reader,
    webdataset_reader,
)

__all__ = [
    "DaliBatches",
    "ReaderSpec",
    "build_pipeline",
    "dali_available",
    "folder_reader",
    "webdataset_reader",
]
