"""What the pretrain-time measurement costs: the ``ThroughputMonitor`` callback's overhead.

``fastssl pretrain`` logs ``perf/images_per_s`` and ``perf/data_wait_fraction`` through
:class:`fastssl.train.callbacks.ThroughputMonitor` (and the loader's wait timing in
:class:`fastssl.train.data.ResumableLoader`). :func:`callback_overhead` trains a few
steps with the trainer ``fastssl pretrain`` builds and times the callback's hook around
every call, so its share of the step time is measured directly rather than inferred from
two noisy runs.

Example:
    >>> result = callback_overhead(config, steps=200)  # doctest: +SKIP
    >>> result["overhead_fraction"] < 0.02  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastssl.train.config import PretrainConfig


def _timer_cost_s(samples: int = 10_000) -> float:
    """Seconds one ``time.perf_counter()`` call costs (the loader's wait timing makes two
    per batch)."""
    start = time.perf_counter()
    for _ in range(samples):
        time.perf_counter()
    return (time.perf_counter() - start) / samples


def callback_overhead(config: PretrainConfig, steps: int) -> dict[str, Any]:
    """Trains ``steps`` steps of ``config`` and measures the ThroughputMonitor's cost.

    Checkpoints and outputs go to a temporary folder; online kNN is off.

    Args:
        config: The recipe (with its data).
        steps: Optimizer steps to train.

    Returns:
        ``callback_us_per_step`` (mean, ``_median`` and ``_max``), ``step_ms`` (mean
        training-loop time per step), ``overhead_fraction`` (hook time over loop time),
        ``loader_timing_us_per_step``, ``log_every_n_steps`` and the run's ``steps``.

    Raises:
        ValueError: For ``steps < 2`` or an unusable recipe.
    """
    from fastssl.train.callbacks import ThroughputMonitor
    from fastssl.train.config import KNNConfig
    from fastssl.train.engine import build_module, build_trainer

    if steps < 2:
        raise ValueError(f"--steps {steps}: the callback overhead needs at least 2 steps")
    with tempfile.TemporaryDirectory(prefix="fastssl-overhead-") as folder:
        trainer_config = dataclasses.replace(
            config.trainer,
            max_steps=steps,
            max_epochs=None,
            max_time=None,
            checkpoint_every_n_steps=0,
            out=folder,
        )
        config = dataclasses.replace(config, trainer=trainer_config, knn=KNNConfig())
        module = build_module(config)
        trainer, callbacks = build_trainer(config, Path(folder))
        monitor = next(c for c in callbacks if isinstance(c, ThroughputMonitor))
        hook = monitor.on_train_batch_end
        spent: list[float] = []

        def timed(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            hook(*args, **kwargs)
            spent.append(time.perf_counter() - start)

        monitor.on_train_batch_end = timed  # type: ignore[method-assign]
        try:
            trainer.fit(module)
        finally:
            if module.loader is not None:
                module.loader.close()
        totals = monitor.totals(module)
    train_s = max(totals["train_s"], 1e-12)
    timer = _timer_cost_s()
    count = max(len(spent), 1)
    return {
        "mode": "callback-overhead",
        "method": config.method,
        "steps": len(spent),
        "log_every_n_steps": config.trainer.log_every_n_steps,
        "callback_us_per_step": 1e6 * sum(spent) / count,
        "callback_us_per_step_median": 1e6 * statistics.median(spent or [0.0]),
        "callback_us_per_step_max": 1e6 * max(spent or [0.0]),
        "loader_timing_us_per_step": 1e6 * 2 * timer,
        "step_ms": 1000 * train_s / count,
        "overhead_fraction": (sum(spent) + 2 * timer * len(spent)) / train_s,
        "images_per_s": totals["images_per_s"],
        "data_wait_fraction": totals["data_wait_fraction"],
    }


def format_overhead(result: dict[str, Any]) -> str:
    """The overhead measurement as a short table."""
    rows = [
        ("method / steps", f"{result['method']} / {result['steps']}"),
        ("step (training loop)", f"{result['step_ms']:.2f} ms"),
        (
            "callback per step",
            f"{result['callback_us_per_step']:.1f} us mean, "
            f"{result['callback_us_per_step_median']:.1f} median, "
            f"{result['callback_us_per_step_max']:.1f} max (log every "
            f"{result['log_every_n_steps']} steps)",
        ),
        ("loader wait timing", f"{result['loader_timing_us_per_step']:.2f} us per step"),
        ("overhead", f"{result['overhead_fraction']:.2%} of the step time"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


__all__ = ["callback_overhead", "format_overhead"]
