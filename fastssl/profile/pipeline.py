"""The full pipeline of ``fastssl profile``: the loader feeding training steps.

:func:`measure_pipeline` runs the loop of a training process (wait for the next batch,
copy it to the device, step) and measures images/s and the fraction of each step spent
waiting for data, the quantity the :class:`fastssl.train.callbacks.ThroughputMonitor`
logs during ``fastssl pretrain``. :func:`write_trace` records a few iterations of any
such loop with ``torch.profiler`` for Chrome (``chrome://tracing``) or Perfetto
(https://ui.perfetto.dev), with the phases labelled ``fastssl/...``.

Example:
    >>> result = measure_pipeline(loader, harness, steps=20, warmup=3)  # doctest: +SKIP
    >>> result.data_wait_fraction  # doctest: +SKIP
    0.62
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile, record_function

from fastssl.profile.compute import ComputeHarness, synchronize


@dataclass
class PipelineResult:
    """Training steps fed by the loader."""

    images_per_s: float
    data_wait_fraction: float  # share of the step time spent in the loader's next()
    copy_fraction: float  # share spent copying the batch to the device
    steps: int
    step_ms_median: float
    wait_ms_median: float
    copy_ms_median: float
    seconds: float


def endless(loader: Any) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (``set_epoch`` before each)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batch: use a smaller --batch-size or more data")
        epoch += 1


def to_device(
    views: list[Tensor],
    device: torch.device,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """The batch's views on ``device`` (NHWC when ``channels_last``), copy finished."""
    with record_function("fastssl/copy_to_device"):
        moved = [view.to(device, dtype=dtype, non_blocking=True) for view in views]
        if channels_last:
            moved = [view.contiguous(memory_format=torch.channels_last) for view in moved]
        synchronize(device)
    return moved


def measure_pipeline(
    loader: Any, harness: ComputeHarness, steps: int, warmup: int
) -> PipelineResult:
    """Times ``steps`` loader-fed training steps after ``warmup``.

    Args:
        loader: A :class:`fastssl.data.loader.Loader` (``set_epoch``, batches of views).
        harness: The method, optimizer and device.
        steps: Measured steps.
        warmup: Steps run first (workers start, the first batches are prefetched).
    """
    batches = endless(loader)
    waits, copies, totals, images = [], [], [], 0
    for index in range(warmup + steps):
        start = time.perf_counter()
        with record_function("fastssl/wait_for_data"):
            views, _, _ = next(batches)
        fetched = time.perf_counter()
        moved = to_device(list(views), harness.device, harness.channels_last, harness.input_dtype)
        copied = time.perf_counter()
        harness.step(moved)
        end = time.perf_counter()
        if index >= warmup:
            waits.append(fetched - start)
            copies.append(copied - fetched)
            totals.append(end - start)
            images += int(views[0].shape[0])
    seconds = max(sum(totals), 1e-12)
    return PipelineResult(
        images_per_s=images / seconds,
        data_wait_fraction=min(sum(waits) / seconds, 1.0),
        copy_fraction=min(sum(copies) / seconds, 1.0),
        steps=len(totals),
        step_ms_median=1000 * statistics.median(totals),
        wait_ms_median=1000 * statistics.median(waits),
        copy_ms_median=1000 * statistics.median(copies),
        seconds=seconds,
    )


def write_trace(
    path: str | Path, iteration: Callable[[], None], steps: int, device: torch.device
) -> Path:
    """Records ``steps`` calls of ``iteration`` with torch.profiler as a Chrome trace.

    Args:
        path: The ``trace.json`` to write.
        iteration: One loop iteration (e.g. wait for a batch, copy it, step).
        steps: Iterations recorded (a few: traces grow fast).
        device: Adds the CUDA activity when it is a GPU.

    Example:
        >>> write_trace("trace.json", lambda: None, steps=2, device=torch.device("cpu"))
        ... # doctest: +SKIP
    """
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with _without_kineto_chatter(), profile(activities=activities) as recorded:
        for index in range(steps):
            with record_function(f"fastssl/iteration {index}"):
                iteration()
    path = Path(path)
    recorded.export_chrome_trace(str(path))
    return path


# Status lines the C++ profiler (Kineto) writes straight to stderr at every start and stop,
# and its CUDA probe's error on a machine without a GPU: noise, not a problem of the run.
_KINETO_CHATTER = re.compile(
    r"^(USDT|STAGE|INFO):\S+ \S+ \S+ \S+\.cpp:\d+\]"
    r"|^ERROR:.* DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed"
)


@contextlib.contextmanager
def _without_kineto_chatter() -> Iterator[None]:
    """Captures file descriptor 2 while the profiler runs and passes on every line but
    Kineto's status chatter (so real errors still reach the terminal, after the block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if not _KINETO_CHATTER.search(line):
                    print(line, file=sys.stderr)


__all__ = ["PipelineResult", "endless", "measure_pipeline", "to_device", "write_trace"]
