"""The Lightning module that trains any ready method, and its optimizer recipe.

:class:`PretrainModule` wraps a :class:`fastssl.methods.Method`. It builds the optimizer
of the method's paper (SGD, LARS or AdamW; every field overridable), scales the learning
rate with the effective batch, the global batch times ``accumulate_grad_batches`` (Goyal
et al. 2017, "Accurate, Large Minibatch SGD": linear; or square root, as LightlySSL's
ImageNet benchmarks do for LARS / AdamW methods), warms it up linearly and decays it with
a cosine, per optimizer step. Biases and normalisation parameters get
no weight decay (and hence no LARS scaling). Training progress reaches the method through
:class:`fastssl.methods.StepInfo`, so momentum and temperature schedules resume exactly.

Checkpoint contract: ``hyper_parameters`` hold ``"method"`` (registry name or
``"module:Class"``) and ``"method_kwargs"`` (JSON-serialisable constructor arguments,
``backbone`` and ``input_size`` included); state-dict keys are ``"method." + <the method's
own keys>``. :func:`fastssl.train.checkpoint.load_method` rebuilds the method.

Example:
    >>> module = PretrainModule("simclr", {"backbone": "resnet18", "input_size": 32})
    ... # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from fastssl import methods
from fastssl.methods.base import StepInfo
from fastssl.models.small_conv import convert_small_output_convs
from fastssl.train.data import ResumableLoader, derive_seed, seed_all
from fastssl.train.optim import (
    build_optimizer,
    merge_optimizer,
    param_groups,
    scaled_lr,
)
from fastssl.utils import dist
from fastssl.utils.scheduler import CosineWarmupScheduler, cosine_schedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops, the last good checkpoint stays."""


class PretrainModule(pl.LightningModule):
    """Trains a :class:`~fastssl.methods.Method` with the optimizer recipe of its paper.

    Args:
        method: Registry name (``"simclr"``) or ``"package.module:Class"``.
        method_kwargs: Constructor arguments of the method (JSON-serialisable).
        optimizer: Overrides of the method's :class:`OptimizerDefaults` (None: default).
        schedule: ``warmup_epochs``, ``warmup_steps``, ``end_factor``,
            ``warmup_start_factor`` (see :class:`fastssl.train.config.ScheduleConfig`).
        batch_size: Global batch size (all processes) of one forward pass.
        accumulate_grad_batches: Batches whose gradients make one optimizer step; the
            learning rate scales with the effective batch ``batch_size x
            accumulate_grad_batches``, and the schedules count optimizer steps.
        max_steps: Optimizer steps of the run (-1: from ``max_epochs``), for the schedules.
        max_epochs: Epochs of the run, for the schedules.
        seed: The run's seed (per-epoch reseeding of method randomness).
        compile: ``torch.compile`` the method's training step as a whole (backbone, heads,
            loss; ``fullgraph=True``, falling back to graph breaks with a warning);
            state-dict keys unchanged.
        channels_last: Train in NHWC memory format.
        matmul_small_convs: Compute convolutions with at most 4 output positions as
            matrix products (:mod:`fastssl.models.small_conv`; exact, faster on CPUs).
        exclude_norm_and_bias: No weight decay on biases and normalisation parameters.
        loader_factory: Builds the training loader once the processes are set up (the
            per-process batch and this rank's part of the data depend on them). Not
            stored in the checkpoint.
    """

    def __init__(
        self,
        method: str,
        method_kwargs: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        batch_size: int = 256,
        accumulate_grad_batches: int = 1,
        max_steps: int = -1,
        max_epochs: int | None = None,
        seed: int = 0,
        compile: bool = False,
        channels_last: bool = False,
        matmul_small_convs: bool = False,
        exclude_norm_and_bias: bool = True,
        loader_factory: Callable[[], ResumableLoader] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loader_factory"])
        self.method = methods.get(method)(**method_kwargs)
        self.optimizer_config = merge_optimizer(self.method.optimizer_defaults, optimizer or {})
        self.schedule = dict(schedule or {})
        self.batch_size = batch_size
        if accumulate_grad_batches < 1:
            raise ValueError(
                f"trainer.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}"
            )
        self.accumulate_grad_batches = accumulate_grad_batches
        self.seed = seed
        self.channels_last = channels_last
        self.loader_factory = loader_factory
        self.loader: ResumableLoader | None = None
        if matmul_small_convs:
            convert_small_output_convs(self.method)
        if channels_last:
            self.method.to(memory_format=torch.channels_last)
        # The method's training step (backbone, heads, loss) compiled as a whole on first
        # use; a compiled function, not a wrapped module, so state-dict keys stay the method's.
        self._compile = compile
        self._compiled_step: Callable[[Sequence[Tensor], StepInfo], Tensor] | None = None
        # Progress of the data within the epoch, saved for mid-epoch resumes.
        self.batches_in_epoch = 0
        self.data_epoch = 0
        self.schedule_steps = 1
        self.schedule_epochs = 1
        # Throughput bookkeeping (read by the callbacks and the summary).
        self.last_loss = float("nan")  # of the last batch
        self.last_step_loss = float("nan")  # mean over the batches of the last optimizer step
        self._step_losses: list[float] = []  # losses of the batches since the last step
        self.images_seen = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) of a checkpoint

    # ----- data ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.loader is None and self.loader_factory is not None:
            self.loader = self.loader_factory()
        self._position_loader()

    def _position_loader(self) -> None:
        """Points the loader at the data position restored from a checkpoint."""
        if self.loader is not None and self._resume is not None:
            self.loader.epoch, self.loader.skip = self._resume

    def train_dataloader(self) -> ResumableLoader:
        if self.loader is None:
            raise RuntimeError("PretrainModule has no training data: pass loader_factory")
        return self.loader

    # ----- schedules ----------------------------------------------------------------------

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step over all processes: the global batch times
        ``accumulate_grad_batches``."""
        return self.batch_size * self.accumulate_grad_batches

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the loader's batches over ``accumulate_grad_batches``,
        rounded up (Lightning steps on an epoch's last batch even if fewer accumulated)."""
        batches = len(self.loader) if self.loader is not None else 1
        if batches < 1:
            raise ValueError(
                "the training data gives no full batch per process: lower data.batch_size "
                "or add images"
            )
        return math.ceil(batches / self.accumulate_grad_batches)

    def _run_length(self) -> tuple[int, int]:
        """(schedule steps, schedule epochs) from max_steps / max_epochs and the loader, in
        optimizer steps."""
        per_epoch = self.steps_per_epoch()
        max_steps: int = self.hparams["max_steps"]
        max_epochs: int | None = self.hparams["max_epochs"]
        candidates = []
        if max_steps is not None and max_steps > 0:
            candidates.append(max_steps)
        if max_epochs is not None and max_epochs > 0:
            candidates.append(max_epochs * per_epoch)
        if not candidates:
            raise ValueError("set trainer.max_steps or trainer.max_epochs: the schedules need it")
        steps = min(candidates)
        return steps, max(1, math.ceil(steps / per_epoch))

    def step_info(self) -> StepInfo:
        """Progress passed to the method's schedules."""
        return StepInfo(
            step=int(self.global_step),
            max_steps=self.schedule_steps,
            epoch=int(self.current_epoch),
            max_epochs=self.schedule_epochs,
        )

    def peak_lr(self) -> float:
        """Learning rate after warm-up, scaled to the effective batch (global batch x
        ``accumulate_grad_batches``)."""
        cfg = self.optimizer_config
        return scaled_lr(
            cfg.lr, self.effective_batch_size, cfg.reference_batch_size, cfg.lr_scaling
        )

    def warmup_steps(self) -> int:
        """Warm-up length in steps (``warmup_steps`` or ``warmup_epochs`` x steps/epoch)."""
        if self.schedule.get("warmup_steps") is not None:
            steps = int(self.schedule["warmup_steps"])
        else:
            epochs = self.schedule.get("warmup_epochs")
            epochs = self.optimizer_config.warmup_epochs if epochs is None else epochs
            steps = round(float(epochs) * self.steps_per_epoch())
        return min(max(steps, 0), self.schedule_steps)

    def configure_optimizers(self) -> Any:
        self.schedule_steps, self.schedule_epochs = self._run_length()
        cfg = self.optimizer_config
        groups = param_groups(
            self.method.trainable_modules(),
            cfg.weight_decay,
            self.hparams["exclude_norm_and_bias"],
        )
        if cfg.extra.get("fix_predictor_lr"):
            groups = self._split_fixed_lr(groups)
        optimizer = build_optimizer(groups, cfg, self.peak_lr())
        warmup = self.warmup_steps()
        if self.schedule_steps > 1 and warmup >= self.schedule_steps:
            warnings.warn(
                f"the learning-rate warm-up ({warmup} steps) covers the whole run of "
                f"{self.schedule_steps} steps: the learning rate rises to its peak at the end "
                "and never decays. Shorten it for short runs, e.g. --set "
                "schedule.warmup_epochs=1",
                stacklevel=2,
            )
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup,
            max_epochs=self.schedule_steps,
            end_value=self._lr_factor("end_factor", "final_lr"),
            warmup_start_value=self._lr_factor("warmup_start_factor", "start_lr"),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _lr_factor(self, schedule_key: str, extra_key: str) -> float:
        """``schedule[schedule_key]``, else the method's ``extra[extra_key]`` / lr, else 0."""
        value = self.schedule.get(schedule_key)
        if value is not None:
            return float(value)
        cfg = self.optimizer_config
        absolute = cfg.extra.get(extra_key)
        return float(absolute) / cfg.lr if absolute is not None and cfg.lr > 0 else 0.0

    def _split_fixed_lr(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Moves the predictor's parameters into groups marked ``fixed_lr`` (same decay)."""
        fixed = {id(p) for m in self.method.predictor_modules() for p in m.parameters()}
        if not fixed:
            raise ValueError(
                f"optimizer.extra.fix_predictor_lr is set, but {self.method.name or 'the method'}"
                " has no predictor: set optimizer.extra.fix_predictor_lr=null"
            )
        split: list[dict[str, Any]] = []
        for group in groups:
            mine = [p for p in group["params"] if id(p) in fixed]
            rest = [p for p in group["params"] if id(p) not in fixed]
            if rest:
                split.append({**group, "params": rest})
            if mine:
                name = f"{group['name']}_fixed_lr"
                split.append({**group, "params": mine, "name": name, "fixed_lr": True})
        return split

    def apply_group_schedules(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Per-step settings the lr scheduler does not cover, at optimizer step ``step``.

        The weight decay of decayed groups follows a cosine from ``weight_decay`` (first
        step) to ``extra["weight_decay_end"]`` (last step), as in DINO and MSN; groups
        marked ``fixed_lr`` (SimSiam's predictor) get their peak learning rate back. Both
        depend on the step only, so a resumed run continues exactly.
        """
        cfg = self.optimizer_config
        wd_end = cfg.extra.get("weight_decay_end")
        step = min(step, max(self.schedule_steps - 1, 0))
        for group in optimizer.param_groups:
            if group.get("fixed_lr"):
                group["lr"] = group["initial_lr"]
            if wd_end is not None and not str(group.get("name", "")).startswith("no_decay"):
                group["weight_decay"] = cosine_schedule(
                    step, self.schedule_steps, cfg.weight_decay, float(wd_end)
                )

    # ----- training -----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        # Method randomness (masks, multi-crop choices) restarts from the seed every epoch,
        # so a resume at an epoch boundary continues exactly.
        seed_all(derive_seed("method", self.seed, dist.rank(), self.current_epoch))
        self.batches_in_epoch = 0
        self.data_epoch = int(self.current_epoch)
        if self.loader is not None:
            # After the first epoch Lightning creates each epoch's iterator after this hook.
            self.loader.epoch = self.data_epoch

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views, _targets, _keys = batch
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        loss = self._method_step(views, self.step_info())
        self._check_finite(loss)
        # Counted here, not in on_train_batch_end: checkpoint callbacks run before that hook.
        self.batches_in_epoch += 1
        self.last_loss = float(loss.detach())
        self._step_losses.append(self.last_loss)
        self.images_seen += int(views[0].shape[0]) * dist.world_size()
        self.log("train/loss", loss.detach(), prog_bar=True)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        return loss

    def _method_step(self, views: Sequence[Tensor], info: StepInfo) -> Tensor:
        """``method.training_step``, under ``torch.compile(fullgraph=True)`` when compiling.

        All registered methods trace as one graph; a method that breaks the graph (e.g. a
        user's) is compiled with graph breaks instead, with a warning naming the break.
        """
        if not self._compile:
            return self.method.training_step(views, info)
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self.method.training_step, fullgraph=True)
        try:
            return self._compiled_step(views, info)
        except torch._dynamo.exc.Unsupported as error:  # raised while tracing: nothing ran
            reason = str(error).strip().splitlines()[0]
            warnings.warn(
                f"trainer.compile: {type(self.method).__name__}.training_step does not compile "
                f"as one graph ({reason}); compiling it with graph breaks instead",
                stacklevel=2,
            )
            self._compiled_step = torch.compile(self.method.training_step)
            return self._compiled_step(views, info)

    def _check_finite(self, loss: Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).float()
        if dist.is_distributed():  # every rank must stop, or the others hang in a collective
            bad = dist.all_reduce_sum(bad)
        if bool(bad > 0):
            raise NonFiniteLossError(
                f"the loss is {float(loss.detach())} at step {self.global_step} "
                f"(epoch {self.current_epoch}): training stopped; the last good checkpoint "
                "is kept. Try a lower learning rate, gradient clipping (--set "
                "trainer.gradient_clip=1.0) or precision 32."
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._step_losses:  # the batches accumulated into this step
            self.last_step_loss = sum(self._step_losses) / len(self._step_losses)
            self._step_losses.clear()
        self.apply_group_schedules(optimizer, int(self.global_step))
        self.method.before_optimizer_step(self.step_info())

    # ----- checkpoints --------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["fastssl"] = {
            "data_epoch": self.data_epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "batches_per_epoch": len(self.loader) if self.loader is not None else None,
            "images_seen": self.images_seen,
            "saved_at": time.time(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("fastssl", {})
        epoch = int(state.get("data_epoch", 0))
        done = int(state.get("batches_in_epoch", 0))
        per_epoch = state.get("batches_per_epoch")
        self.images_seen = int(state.get("images_seen", 0))
        if per_epoch is not None and done >= per_epoch:
            epoch, done = epoch + 1, 0
        self.data_epoch, self.batches_in_epoch = epoch, done
        self._resume = (epoch, done)
        self._position_loader()

    def on_train_start(self) -> None:
        resume = self._resume
        if resume is not None and resume[1] > 0:
            # Mid-epoch: method randomness cannot replay the skipped steps; reseed from
            # the position so the run stays deterministic.
            seed_all(derive_seed("method", self.seed, dist.rank(), *resume))


__all__ = ["NonFiniteLossError", "PretrainModule"]
