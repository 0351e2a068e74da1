"""``fastssl profile``: measure what bounds a training run, and what would help.

One module per part (a reader can open one file per box):

* :mod:`~fastssl.profile.loader`: the loader's images/s and its per-stage split
  (:func:`measure_loader`, :func:`torch_stages`, :func:`dali_stages`);
* :mod:`~fastssl.profile.compute`: training steps on in-memory batches
  (:class:`ComputeHarness`: forward, loss, backward, optimizer);
* :mod:`~fastssl.profile.pipeline`: the loader feeding the steps (data-wait fraction)
  and the ``torch.profiler`` trace;
* :mod:`~fastssl.profile.report`: verdict, advice with measured gains, table and chart;
* :mod:`~fastssl.profile.profiler`: one session running all of them (:func:`profile_run`);
* :mod:`~fastssl.profile.overhead`: the cost of the pretrain-time throughput callback;
* :mod:`~fastssl.profile.cli`: the ``fastssl profile`` command.

Example:
    >>> from fastssl.profile import ProfileOptions, profile_run
    >>> from fastssl.train.config import load_config
    >>> report = profile_run(load_config("pipelines/simclr.yaml"), ProfileOptions())
    ... # doctest: +SKIP
"""

from __future__ import annotations

from fastssl.profile.loader import LoaderReport, measure_loader, resolve_transform
from fastssl.profile.profiler import ProfileOptions, profile_run
from fastssl.profile.report import Advice, ProfileReport, judge

__all__ = [
    "Advice",
    "LoaderReport",
    "ProfileOptions",
    "ProfileReport",
    "judge",
    "measure_loader",
    "profile_run",
    "resolve_transform",
]
