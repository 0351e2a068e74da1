"""The data engines, side by side: each turns ViewSpecs plus a source into
``(views, targets, keys)`` batches (a :class:`~fastssl.data.engines.base.Loader`).

* :mod:`~fastssl.data.engines.batched`: the batched torch engine (DataLoader workers decode
  and crop per sample, color and blur run on whole batches); image folders and any
  WebDataset tars, local or remote.
* :mod:`~fastssl.data.engines.dali`: the ViewSpecs compiled into one NVIDIA DALI pipeline
  (CPU, or decoding on the GPU); image folders and local ``fastssl shards`` folders.
* :mod:`~fastssl.data.engines.ffcv`: one FFCV loader over a ``.beton``; each image is decoded
  once and all its views are made in FFCV's numba-compiled decoder.

The random parameters of every augmentation are drawn as the ViewSpec
(:mod:`fastssl.transforms.view_spec`) says, so the engines give statistically equal
batches; :func:`fastssl.data.make_loader` picks the engine.
"""
