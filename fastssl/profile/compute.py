"""The compute side of ``fastssl profile``: training steps on in-memory batches.

:class:`ComputeHarness` builds the method and the optimizer exactly as ``fastssl
pretrain`` does (:func:`fastssl.train.engine.build_module`), feeds it random views of the
shapes the loader produces, already on the device, and times each part of a step:
forward, loss, backward and the optimizer step. The loss is timed by hooks on the
method's ``criterion`` module (forward is the rest of ``training_step``); a method without
one reports its loss inside forward. On a GPU every boundary synchronizes, so the parts
add up to the step.

Variants are measured on the same harness (channels_last, bf16 autocast, a bigger
batch) or on a second one (``torch.compile``), so the advice can quote measured gains.

Example:
    >>> from fastssl.train.config import apply_overrides, PretrainConfig
    >>> config = apply_overrides(PretrainConfig(), ["method_kwargs.backbone=resnet18"])
    >>> harness = ComputeHarness(config, torch.device("cpu"), [(3, 32, 32)] * 2)  # doctest: +SKIP
    >>> harness.measure(batch_size=8, steps=5, warmup=1).images_per_s  # doctest: +SKIP
    41.2
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from fastssl.methods.base import StepInfo
from fastssl.train.config import PretrainConfig
from fastssl.train.engine import PRECISIONS

#: The parts of a training step, in order.
STEP_STAGES: tuple[str, ...] = ("forward", "loss", "backward", "optimizer")


def resolve_device(accelerator: str) -> torch.device:
    """The device ``trainer.accelerator`` trains on in one process.

    Raises:
        ValueError: When a GPU is asked for and torch sees none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"trainer.accelerator={accelerator!r} but torch sees no CUDA device: "
                "pass --accelerator cpu"
            )
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator == "mps":
        return torch.device("mps")
    if accelerator == "auto" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ComputeResult:
    """Training steps on in-memory batches: throughput and the split of a step."""

    variant: str  # "current", "compile", "channels_last", "bf16-mixed", "batch x2"
    images_per_s: float  # images (not views) per second over the measured steps
    batch_size: int
    steps: int
    step_ms_median: float
    stages_ms: dict[str, float]  # median ms of forward, loss, backward, optimizer
    first_step_s: float  # the first warm-up step (compilation included)
    loss_timing: str  # how the loss was told apart from the forward
    settings: dict[str, Any] = field(default_factory=dict)


class ComputeHarness:
    """One method with its optimizer, stepped on random views of fixed shapes.

    Args:
        config: The recipe (method, optimizer, precision, channels_last, compile).
        device: Where the steps run.
        shapes: ``(3, h, w)`` of every view (may be set later, before measuring).
        compile: Overrides ``trainer.compile`` (None: the recipe's, on for GPUs).
    """

    def __init__(
        self,
        config: PretrainConfig,
        device: torch.device,
        shapes: Sequence[Sequence[int]] = (),
        compile: bool | None = None,
    ) -> None:
        from fastssl.train.engine import build_module, resolve_precision

        if config.trainer.precision not in PRECISIONS:
            raise ValueError(
                f"trainer.precision={config.trainer.precision!r} cannot be profiled: "
                f"choose one of {', '.join(PRECISIONS)}"
            )
        if compile is not None:
            trainer = dataclasses.replace(config.trainer, compile=compile)
            config = dataclasses.replace(config, trainer=trainer)
        self.config, self.device = config, device
        self.shapes: list[tuple[int, ...]] = [tuple(int(s) for s in shape) for shape in shapes]
        # A real batch to step on instead of random views, for transforms whose batches
        # carry more than images (VICRegL's grids, DetCon's masks: random values there
        # would be meaningless or out of range); set by the profiler from one loader batch.
        self.template: list[Tensor] | None = None
        module = build_module(config)
        self.compiled = bool(config.trainer.compile) or (
            config.trainer.compile is None and device.type == "cuda"
        )
        self.method = module.method
        # What pretrain would train in: a half precision this CPU lacks becomes 32-true.
        precision = resolve_precision(config.trainer.precision, device.type)
        weights = PRECISIONS[precision][1]
        self.method.to(device=device, dtype=weights)
        self.input_dtype = weights  # None: the loader's float32
        self.optimizer: torch.optim.Optimizer = module.configure_optimizers()["optimizer"]
        self.channels_last = config.trainer.channels_last
        self.precision = precision
        self._loss_s = 0.0
        self._loss_start = 0.0
        criterion = getattr(self.method, "criterion", None)
        self.loss_timing = "unavailable: the method has no criterion module (in forward)"
        if isinstance(criterion, nn.Module):
            criterion.register_forward_pre_hook(self._loss_begins)
            criterion.register_forward_hook(self._loss_ends)
            self.loss_timing = "hooks on the method's criterion"
        self.step_index = 0

    # ----- loss timing hooks ---------------------------------------------------------------

    def _loss_begins(self, module: nn.Module, args: Any) -> None:
        synchronize(self.device)
        self._loss_start = time.perf_counter()

    def _loss_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        synchronize(self.device)
        self._loss_s += time.perf_counter() - self._loss_start

    # ----- steps ---------------------------------------------------------------------------

    def views(self, batch_size: int, channels_last: bool | None = None) -> list[Tensor]:
        """Random normalized views of the harness's shapes, on its device; or, with a
        :attr:`template`, its tensors repeated to ``batch_size`` rows."""
        dtype = self.input_dtype or torch.float32
        if self.template is not None:
            rows = torch.arange(batch_size) % len(self.template[0])
            views = [
                t[rows].to(self.device, dtype=dtype if t.is_floating_point() else t.dtype)
                for t in self.template
            ]
        elif not self.shapes:
            raise ValueError("ComputeHarness.shapes is empty: set the (3, h, w) of every view")
        else:
            views = [
                torch.randn(batch_size, *shape, device=self.device, dtype=dtype)
                for shape in self.shapes
            ]
        if self.channels_last if channels_last is None else channels_last:
            views = [
                v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                for v in views
            ]
        return views

    def _autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        dtype = PRECISIONS[precision][0]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def step(self, views: Sequence[Tensor], precision: str | None = None) -> dict[str, float]:
        """One training step; returns the seconds of forward, loss, backward, optimizer."""
        info = StepInfo(step=self.step_index, max_steps=1_000_000)
        self.step_index += 1
        self._loss_s = 0.0
        synchronize(self.device)
        start = time.perf_counter()
        with record_function("fastssl/forward+loss"), self._autocast(precision or self.precision):
            loss = self.method.training_step(views, info)
        synchronize(self.device)
        forward_end = time.perf_counter()
        with record_function("fastssl/backward"):
            loss.backward()
        synchronize(self.device)
        backward_end = time.perf_counter()
        with record_function("fastssl/optimizer"):
            self.method.before_optimizer_step(info)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        end = time.perf_counter()
        return {
            "forward": forward_end - start - self._loss_s,
            "loss": self._loss_s,
            "backward": backward_end - forward_end,
            "optimizer": end - backward_end,
        }

    @contextlib.contextmanager
    def memory_format(self, channels_last: bool) -> Iterator[None]:
        """Runs the block with the weights in NHWC (``channels_last``) or NCHW."""
        if channels_last == self.channels_last:
            yield
            return
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.method.to(memory_format=layout)
        try:
            yield
        finally:
            restore = torch.channels_last if self.channels_last else torch.contiguous_format
            self.method.to(memory_format=restore)

    def measure(
        self,
        batch_size: int,
        steps: int,
        warmup: int,
        *,
        variant: str = "current",
        precision: str | None = None,
        channels_last: bool | None = None,
    ) -> ComputeResult:
        """Times ``steps`` steps after ``warmup`` (at least one, which may compile).

        Args:
            batch_size: Images per step.
            steps: Measured steps.
            warmup: Steps run first (compilation, allocator, cuDNN autotuning).
            variant: Name of what is measured.
            precision: Autocast precision (None: the recipe's).
            channels_last: NHWC weights and views (None: the recipe's).
        """
        layout = self.channels_last if channels_last is None else channels_last
        chosen = precision or self.precision
        with self.memory_format(layout):
            views = self.views(batch_size, layout)
            start = time.perf_counter()
            self.step(views, chosen)
            first = time.perf_counter() - start
            for _ in range(max(warmup - 1, 0)):
                self.step(views, chosen)
            parts = [self.step(views, chosen) for _ in range(steps)]
        totals = [sum(p.values()) for p in parts]
        stages = {name: 1000 * statistics.median(p[name] for p in parts) for name in STEP_STAGES}
        return ComputeResult(
            variant=variant,
            images_per_s=batch_size * len(parts) / max(sum(totals), 1e-12),
            batch_size=batch_size,
            steps=len(parts),
            step_ms_median=1000 * statistics.median(totals),
            stages_ms=stages,
            first_step_s=first,
            loss_timing=self.loss_timing,
            settings={
                "precision": chosen,
                "channels_last": layout,
                "compile": self.compiled,
                "device": str(self.device),
            },
        )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device out-of-memory error."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


__all__ = [
    "PRECISIONS",
    "STEP_STAGES",
    "ComputeHarness",
    "ComputeResult",
    "is_out_of_memory",
    "resolve_device",
    "synchronize",
]
