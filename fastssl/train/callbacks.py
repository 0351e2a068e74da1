"""Callbacks of ``fastssl pretrain``: checkpoints, throughput, online kNN and linear probe.

- :class:`LastCheckpoint` rewrites ``OUT/last.ckpt`` every N optimizer steps and at the
  end, atomically (written aside, then renamed), so a crash or a non-finite loss leaves
  the last good checkpoint intact. It writes only a finite state: every parameter and
  buffer is checked first (and every ``log_every_n_steps`` steps), and a NaN or infinity
  anywhere (a BatchNorm running variance, say, while the loss still looks finite) stops
  the run with :class:`NonFiniteStateError`.
- :class:`ResumableCSVLogger` is Lightning's CSV logger that keeps the ``metrics.csv`` rows
  of the steps before a resume (Lightning's deletes the file).
- :class:`ThroughputMonitor` logs images/s and the data-wait fraction: the share of the
  step time spent waiting for the next batch (near 0: compute bound; near 1: data bound).
- :class:`OnlineKNN` logs weighted-kNN top-1 accuracy (InstDisc, Wu et al. 2018; k=200,
  t=0.1) of the backbone's features on a labeled folder at epoch ends.
- :class:`OnlineLinearProbe` trains a linear classifier on the backbone's detached
  features of a labeled folder alongside pretraining and logs its top-1 accuracy on
  another labeled folder at epoch ends.
- :class:`CollapseMonitor` logs collapse statistics of the backbone's features of a
  training batch every ``log_every_n_steps`` steps: the std of the L2-normalised
  features and their effective rank (:mod:`fastssl.utils.collapse`).

With gradient accumulation (``trainer.accumulate_grad_batches``) the step-based work
(checkpoints, finiteness checks, throughput logs) happens on the batches that end with an
optimizer step, so a checkpoint never holds half an accumulated step.

Example:
    >>> callbacks = [LastCheckpoint("runs/x", every_n_steps=500), ThroughputMonitor()]
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.csv_logs import _ExperimentWriter as _FabricExperimentWriter
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from torch import nn

from fastssl.eval.checkpoint import select_backbone
from fastssl.eval.features import (
    LabeledData,
    NonFiniteFeaturesError,
    class_mapping,
    eval_transform,
    extract_features,
    make_eval_loader,
    open_labeled,
    pooled_features,
)
from fastssl.eval.knn import knn_accuracy
from fastssl.methods.base import Method
from fastssl.train.data import derive_seed
from fastssl.train.module import NonFiniteLossError
from fastssl.utils import dist
from fastssl.utils.benchmarking.online_linear_classifier import OnlineLinearClassifier
from fastssl.utils.collapse import collapse_statistics


def scored_network(method: nn.Module) -> nn.Module:
    """The network the online kNN and linear probe score: the one ``fastssl eval`` scores
    by default (:func:`~fastssl.eval.checkpoint.select_backbone`: DINO's teacher, MSN's
    target, BYOL's online backbone, ...), or ``method`` itself for a plain module."""
    if isinstance(method, Method):
        return select_backbone(method)[0]
    return method


@torch.no_grad()
def detached_features(method: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Features (B, D) of ``images`` by ``method``'s scored network (:func:`scored_network`)
    in eval mode, without gradient, in float32.

    BatchNorm uses its running statistics and updates nothing, dropout and drop-path are
    off, and every module's train/eval mode is restored afterwards: the method's weights,
    buffers and gradients are left exactly as they were. Images are moved to the network's
    device and dtype (bf16-true / 16-true runs keep their weights in half precision).
    """
    network = scored_network(method)
    modes = [(module, module.training) for module in network.modules()]
    param = next((p for p in network.parameters() if p.is_floating_point()), None)
    if param is not None:
        images = images.to(param.device, param.dtype)
    network.eval()
    try:
        features = pooled_features(network(images))
    finally:
        for module, mode in modes:
            module.training = mode
    return features.float()


class NonFiniteStateError(NonFiniteLossError):
    """A parameter or buffer became NaN or infinite (the loss may still look finite):
    training stops and the last good (finite) checkpoint stays."""


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers holding a NaN or an
    infinity, on every rank when distributed (so all ranks stop together).

    One device-to-host copy for the whole module when everything is finite.
    """
    named = [
        (name, tensor)
        for name, tensor in module.state_dict(keep_vars=False).items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel()
    ]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named])
    bad = (~finite).sum().float()
    if dist.is_distributed():
        bad = dist.all_reduce_sum(bad)
    if not bool(bad > 0):
        return []
    names = [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]
    return names or ["(a tensor on another process)"]


class _OptimizerSteps:
    """Tells a callback, at each batch end, whether the optimizer stepped since the previous
    batch end (with gradient accumulation most batches only accumulate)."""

    #: The trainer's global step at the previous batch end (or at the start of training).
    _batch_end_step: int = 0

    def _track_steps_from(self, trainer: pl.Trainer) -> None:
        """Counts from the trainer's current step (a resumed run's is not 0)."""
        self._batch_end_step = int(trainer.global_step)

    def _optimizer_stepped(self, trainer: pl.Trainer) -> bool:
        """Whether this batch ended with an optimizer step; call once per batch end."""
        step = int(trainer.global_step)
        stepped, self._batch_end_step = step != self._batch_end_step, step
        return stepped


class LastCheckpoint(_OptimizerSteps, pl.Callback):
    """Writes ``dirpath/last.ckpt`` every ``every_n_steps`` steps and when training ends.

    A checkpoint is written only when every parameter and buffer is finite; otherwise the
    run stops with :class:`NonFiniteStateError` and the previous checkpoint stays. The
    state is also checked every ``check_every_n_steps`` steps, so a run whose weights or
    BatchNorm statistics diverged stops early even when its loss stays finite.

    Args:
        dirpath: Output folder.
        every_n_steps: Steps between checkpoints (0: only at the end).
        keep_step_checkpoints: Also keep ``step-<N>.ckpt`` copies.
        check_every_n_steps: Steps between finiteness checks (None: the trainer's
            ``log_every_n_steps``; 0: only before writing a checkpoint).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        every_n_steps: int,
        keep_step_checkpoints: bool = False,
        check_every_n_steps: int | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep_step_checkpoints = keep_step_checkpoints
        self.check_every_n_steps = check_every_n_steps
        self.last_saved_step = -1
        self._checked_step = -1

    @property
    def last_path(self) -> Path:
        """The checkpoint this callback keeps: ``dirpath/last.ckpt``."""
        return self.dirpath / "last.ckpt"

    def check_finite(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raises :class:`NonFiniteStateError` if a parameter or buffer is not finite (all
        ranks must call this)."""
        step = int(trainer.global_step)
        if step == self._checked_step:
            return
        bad = non_finite_tensors(pl_module)
        if bad:
            kept = (
                f"the last good checkpoint {str(self.last_path)!r} (step {self.last_saved_step}) "
                "is kept"
                if self.last_saved_step >= 0
                else "no checkpoint of this run was written"
            )
            loss = getattr(pl_module, "last_loss", float("nan"))
            raise NonFiniteStateError(
                f"{len(bad)} parameters or buffers are NaN or infinite at step {step} (epoch "
                f"{trainer.current_epoch}), e.g. {', '.join(bad[:3])}, while the loss is "
                f"{loss:.4g}: training stopped; {kept}. Try a lower learning rate, gradient "
                "clipping (--set trainer.gradient_clip=1.0) or precision 32."
            )
        self._checked_step = step

    def save(self, trainer: pl.Trainer) -> None:
        """Writes the checkpoint of the current step, if its state is finite (all ranks
        must call this).

        Raises:
            NonFiniteStateError: A parameter or buffer is NaN or infinite (nothing written).
        """
        step = int(trainer.global_step)
        if step == self.last_saved_step:
            return
        self.check_finite(trainer, trainer.lightning_module)
        tmp = self.dirpath / "last.ckpt.tmp"
        # weights_only=False: the full state (optimizer, schedules, loops) for an exact resume;
        # Lightning's flag names what is saved, not how it is loaded (always weights-only).
        trainer.save_checkpoint(tmp, weights_only=False)  # rank 0 writes; ends with a barrier
        if trainer.is_global_zero:
            if self.keep_step_checkpoints:
                shutil.copyfile(tmp, self.dirpath / f"step-{step:08d}.ckpt")
            os.replace(tmp, self.last_path)
        trainer.strategy.barrier("fastssl_last_checkpoint")
        self.last_saved_step = step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run starts at the checkpoint's step: a run with nothing left to train
        # (already finished) must not rewrite it.
        self.last_saved_step = int(trainer.global_step) if trainer.global_step > 0 else -1
        self._track_steps_from(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = int(trainer.global_step)
        if not self._optimizer_stepped(trainer):  # accumulated into the next step
            return
        every = self.check_every_n_steps
        if every is None:
            every = int(getattr(trainer, "log_every_n_steps", 1))
        if every > 0 and step % every == 0:
            self.check_finite(trainer, pl_module)
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows of ``metrics.csv`` logged before
    ``keep_before_step`` (None: a new run, the file is replaced)."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        if self.keep_before_step is None:
            os.remove(path)  # a new run: its metrics start afresh
            return
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or [])
            rows = [row for row in reader if _step_of(row) < self.keep_before_step]
        # Rows from the resumed step on were logged after the checkpoint (by the run that
        # stopped) and are logged again: drop them, keep everything before.
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(fields)


def _step_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``save_dir/metrics.csv`` that keeps the rows logged before a
    resume (Lightning's deletes the file when a run starts in a folder that has one).

    Args:
        save_dir: The run's output folder.
        keep_before_step: The step the run resumes at (rows logged before it are kept);
            None for a new run (an old ``metrics.csv`` is replaced).
    """

    def __init__(self, save_dir: str | os.PathLike[str], keep_before_step: int | None) -> None:
        super().__init__(save_dir=os.fspath(save_dir), name="", version="")
        self.keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> _FabricExperimentWriter:
        """The writer (created on first use, on rank 0, as Lightning's)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_before_step)
        return self._experiment


class ThroughputMonitor(_OptimizerSteps, pl.Callback):
    """Logs ``perf/images_per_s``, ``perf/data_wait_fraction`` and ``perf/step_time_s``.

    Measured between consecutive ends of training batches; the wait is the time the
    loader's ``next()`` took (Lightning fetches the next batch inside that interval).
    ``perf/step_time_s`` is the time of one training batch (with gradient accumulation,
    several batches make an optimizer step). Values are averages over the batches since
    the last logged step, logged on the steps
    whose logs Lightning writes (every ``log_every_n_steps``): ``log_dict`` costs about a
    millisecond, so calling it on every step would cost more than 2 % of a small step,
    while the bookkeeping of the other steps costs microseconds (``fastssl profile
    CONFIG --callback-overhead`` measures it). Totals over the run (for
    ``summary.json``) are in :attr:`totals`.
    """

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_wait = 0.0
        self.start_time: float | None = None
        self.start_wait = 0.0
        self.steps = 0
        self.images = 0
        # The window since the last logged step: [batches, images, seconds, waited seconds].
        self._window = [0, 0, 0.0, 0.0]

    def _wait(self, pl_module: pl.LightningModule) -> float:
        loader = getattr(pl_module, "loader", None)
        return float(loader.wait_s) if loader is not None else 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_time = self._last_time = time.perf_counter()
        # Waits already counted (e.g. the prefetch of the first batch) belong to the run.
        self.start_wait = self._last_wait = 0.0
        self._window = [0, 0, 0.0, 0.0]
        self._track_steps_from(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        wait = self._wait(pl_module)
        # Lightning writes step logs only on batches that end with an optimizer step.
        stepped = self._optimizer_stepped(trainer)
        images = int(batch[0][0].shape[0]) * trainer.world_size
        self.steps += 1
        self.images += images
        if self._last_time is not None:
            window = self._window
            window[0] += 1
            window[1] += images
            window[2] += max(now - self._last_time, 0.0)
            window[3] += max(wait - self._last_wait, 0.0)
            # Set by Lightning's logger connector (not a declared attribute).
            every = int(getattr(trainer, "log_every_n_steps", 1))
            logged = every > 0 and (trainer.global_step % every == 0 or trainer.should_stop)
            if stepped and logged:
                batches, seen, seconds, waited = window
                seconds = max(seconds, 1e-9)
                pl_module.log_dict(
                    {
                        "perf/images_per_s": seen / seconds,
                        "perf/data_wait_fraction": min(waited / seconds, 1.0),
                        "perf/step_time_s": seconds / batches,
                    },
                    on_step=True,
                    on_epoch=False,
                )
                self._window = [0, 0, 0.0, 0.0]
        self._last_time, self._last_wait = now, wait

    def totals(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """Images/s, data-wait fraction and wall seconds of the training loop so far."""
        if self.start_time is None:
            return {"images_per_s": 0.0, "data_wait_fraction": 0.0, "train_s": 0.0}
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        return {
            "images_per_s": self.images / elapsed,
            "data_wait_fraction": min(self._wait(pl_module) / elapsed, 1.0),
            "train_s": elapsed,
        }


def open_labeled_pair(
    section: str, train: str, val: str, input_size: int
) -> tuple[LabeledData, LabeledData, torch.Tensor]:
    """The labeled ``train`` and ``val`` folders of an online evaluation (``section``:
    ``knn`` or ``linear``, for the messages) with the evaluation transform, and the map of
    ``val``'s classes onto ``train``'s. Opened when the callback is built, so that a
    missing folder, a folder without classes or a val class that train lacks fails before
    training rather than at the first epoch end.

    Raises:
        FileNotFoundError: If a folder does not exist, naming the recipe key.
        ValueError: If a folder has no classes, or ``val`` has a class ``train`` lacks.
    """
    for name, folder in ((f"{section}.train", train), (f"{section}.val", val)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{name}={folder!r} is not a folder of labeled images")
    transform = eval_transform(input_size)
    train_data, val_data = open_labeled(train, transform), open_labeled(val, transform)
    return train_data, val_data, class_mapping(train_data.classes, val_data)


class OnlineKNN(pl.Callback):
    """Weighted-kNN top-1 accuracy of the backbone on labeled folders, at epoch ends.

    Runs on rank 0 only (the backbone in eval mode needs no collective); logged as
    ``knn/top1``.

    Args:
        train: Labeled image folder (one subfolder per class) or labeled ``fastssl shards``
            folder: the kNN bank.
        val: The queries, likewise; their labels are matched to the bank's by class name.
        input_size: Evaluation size (the transform of `fastssl eval`,
            :func:`fastssl.eval.features.eval_transform`).
        k: Neighbours (200 in InstDisc).
        t: Temperature (0.1).
        every_n_epochs: Evaluate every N epochs.
        batch_size: Embedding batch size.
        num_workers: Loader processes.
    """

    def __init__(
        self,
        train: str,
        val: str,
        input_size: int,
        k: int = 200,
        t: float = 0.1,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        self._bank, self._queries, self._target_map = open_labeled_pair(
            "knn", train, val, input_size
        )
        self.k, self.t = k, t
        self.every_n_epochs = max(1, every_n_epochs)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.last_top1: float | None = None

    def evaluate(self, pl_module: pl.LightningModule) -> float:
        """Top-1 kNN accuracy of ``pl_module.method``'s features, scored as ``fastssl eval
        knn`` does: same transform and features, query labels mapped by class name."""
        method: nn.Module = getattr(pl_module, "method")  # noqa: B009 (any module with .method)
        embed = partial(
            extract_features,
            scored_network(method),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=pl_module.device,
        )
        try:
            train = embed(self._bank)
            val = embed(self._queries, target_map=self._target_map)
        except NonFiniteFeaturesError as error:
            raise NonFiniteStateError(f"online kNN: {error}: training stopped") from error
        return knn_accuracy(
            train.features,
            train.labels,
            val.features,
            val.labels,
            len(self._bank.classes),
            knn_k=self.k,
            knn_t=self.t,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0 or not trainer.is_global_zero:
            return
        self.last_top1 = self.evaluate(pl_module)
        pl_module.log("knn/top1", self.last_top1, rank_zero_only=True)


class OnlineLinearProbe(pl.Callback):
    """A linear classifier trained alongside pretraining on the backbone's detached
    features; its top-1 accuracy on a labeled folder is logged at epoch ends.

    After every training batch, rank 0 takes the next batch of the labeled ``train`` folder
    (shuffled, one pass after another; evaluation transform), computes the method's
    features under ``torch.no_grad`` with every module in eval mode (BatchNorm uses its
    running statistics and updates nothing; each module's mode is restored afterwards),
    and takes one step of the probe's own SGD optimizer (momentum 0.9, no weight decay).
    The backbone gets no gradient and no state change from it, and the pretraining
    optimizer never sees the probe. Every ``every_n_epochs`` epochs the probe classifies
    the ``val`` folder (labels matched to ``train``'s classes by name, as ``fastssl eval``
    does) and its top-1 accuracy is logged as ``linear/top1``; the probe's training loss
    is ``linear/train_loss``. The probe (LightlySSL's
    :class:`~fastssl.utils.benchmarking.OnlineLinearClassifier`) and its optimizer are
    saved in the checkpoint, so a resumed run continues them.

    Args:
        train: Labeled image folder (one subfolder per class) or labeled ``fastssl shards``
            folder: the probe's training data.
        val: The evaluation data, likewise.
        input_size: Evaluation size (:func:`fastssl.eval.features.eval_transform`).
        lr: The probe's learning rate.
        every_n_epochs: Evaluate every N epochs.
        batch_size: Labeled images per probe step, and per forward pass when evaluating.
        num_workers: Loader processes.
        seed: Seeds the probe's initialisation and the order of its data.

    Raises:
        FileNotFoundError: If a folder does not exist.
        ValueError: If a folder has no classes, or ``val`` has a class ``train`` lacks.
    """

    def __init__(
        self,
        train: str,
        val: str,
        input_size: int,
        lr: float = 0.1,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        if lr <= 0 or batch_size < 1:
            raise ValueError(
                f"linear.lr must be > 0 and linear.batch_size >= 1, got {lr} and {batch_size}"
            )
        self.lr = lr
        self.every_n_epochs = max(1, every_n_epochs)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.last_top1: float | None = None
        self._train, self._val, self._target_map = open_labeled_pair(
            "linear", train, val, input_size
        )
        self.num_classes = len(self._train.classes)
        self.probe: OnlineLinearClassifier | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.passes = 0  # completed passes over the train folder (seeds each pass's order)
        self._batches: Iterator[Any] | None = None
        self._restored: dict[str, Any] | None = None  # checkpoint state, until the probe exists

    # ----- features and probe -------------------------------------------------------------

    @staticmethod
    def features(method: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Features (B, D) of ``images`` by ``method``'s scored network in eval mode,
        without gradient (:func:`detached_features`)."""
        return detached_features(method, images)

    def _ensure_probe(self, feature_dim: int, device: torch.device) -> OnlineLinearClassifier:
        """The probe, built on first use for ``feature_dim`` (seeded; the global random
        state is left as it was), with the checkpoint's state when resuming."""
        if self.probe is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed("linear-probe", self.seed))
                probe = OnlineLinearClassifier(feature_dim, self.num_classes, topk=(1,))
            probe.to(device)
            self.optimizer = torch.optim.SGD(
                probe.parameters(), lr=self.lr, momentum=0.9, weight_decay=0.0
            )
            self.probe = probe
            if self._restored is not None:
                self._load(self._restored)
                self._restored = None
        return self.probe

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (images, targets) of the train folder, passes following each other."""
        for _ in range(2):
            if self._batches is None:
                loader = make_eval_loader(
                    self._train,
                    self.batch_size,
                    self.num_workers,
                    shuffle=True,
                    seed=derive_seed("linear-probe-data", self.seed, self.passes),
                )
                self._batches = iter(loader)
            try:
                images, targets, _keys = next(self._batches)
                return images, torch.as_tensor(targets, dtype=torch.long)
            except StopIteration:
                self._batches = None
                self.passes += 1
        raise ValueError(f"linear.train={self._train.source!r} yielded no images")

    def train_step(self, method: nn.Module, device: torch.device) -> float:
        """One probe step on the next labeled batch; returns its loss (nothing is updated
        when the loss is not finite)."""
        images, targets = self._next_batch()
        features = self.features(method, images.to(device))
        probe = self._ensure_probe(features.shape[1], device)
        assert self.optimizer is not None
        probe.train()
        with torch.enable_grad():
            loss, _ = probe.training_step((features, targets.to(device)), 0)
            value = float(loss.detach())
            self.optimizer.zero_grad(set_to_none=True)
            if math.isfinite(value):
                loss.backward()
                self.optimizer.step()
        return value

    @torch.no_grad()
    def evaluate(self, pl_module: pl.LightningModule) -> float:
        """Top-1 accuracy of the probe on the ``val`` folder, with ``pl_module.method``'s
        current features."""
        method: nn.Module = getattr(pl_module, "method")  # noqa: B009 (any module with .method)
        try:
            val = extract_features(
                scored_network(method),
                self._val,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                device=pl_module.device,
                target_map=self._target_map,
            )
        except NonFiniteFeaturesError as error:
            raise NonFiniteStateError(f"online linear probe: {error}: training stopped") from error
        probe = self._ensure_probe(val.features.shape[1], pl_module.device)
        probe.eval()
        logits = probe(val.features.to(pl_module.device)).float().cpu()
        return float((logits.argmax(dim=1) == val.labels).float().mean())

    # ----- Lightning hooks ----------------------------------------------------------------

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not trainer.is_global_zero:
            return
        method: nn.Module = getattr(pl_module, "method")  # noqa: B009
        loss = self.train_step(method, pl_module.device)
        pl_module.log("linear/train_loss", loss, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0 or not trainer.is_global_zero:
            return
        self.last_top1 = self.evaluate(pl_module)
        pl_module.log("linear/top1", self.last_top1, rank_zero_only=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = None  # stops the probe loader's workers

    # ----- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self.probe is None or self.optimizer is None:
            return {"passes": self.passes}
        return {
            "passes": self.passes,
            "probe": self.probe.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.passes = int(state_dict.get("passes", 0))
        self._batches = None
        if "probe" not in state_dict:
            return
        if self.probe is None:
            self._restored = dict(state_dict)
        else:
            self._load(state_dict)

    def _load(self, state: dict[str, Any]) -> None:
        assert self.probe is not None and self.optimizer is not None
        self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])


def first_image_view(views: Any) -> torch.Tensor | None:
    """The first view of a batch's views that is a batch of images (B, C, H, W), or None
    (views may also hold masks or grids, e.g. DetCon's and VICRegL's)."""
    if isinstance(views, torch.Tensor):
        views = [views]
    for view in views:
        if isinstance(view, torch.Tensor) and view.ndim == 4 and view.is_floating_point():
            return view
    return None


class CollapseMonitor(_OptimizerSteps, pl.Callback):
    """Logs ``collapse/std`` and ``collapse/effective_rank`` of the backbone's features of a
    training batch, so that a collapse shows while training rather than after.

    Every ``every_n_steps`` optimizer steps (None: the trainer's ``log_every_n_steps``,
    so the values land on the rows Lightning writes to ``metrics.csv``) and on the last
    step, rank 0 takes the first image view of the batch that made the step and computes
    its features with the scored network (:func:`scored_network`, as ``fastssl eval``)
    by :func:`detached_features`: eval mode, no gradient, every module's mode restored. The
    method's weights, BatchNorm statistics, gradients and random state are untouched, so
    a run ends with the same weights with or without the monitor (tested). Its cost is one
    forward pass of one view every ``every_n_steps`` steps and a singular-value
    decomposition of a (B, D) matrix.

    The statistics (:func:`fastssl.utils.collapse.collapse_statistics`): ``std``, the mean
    over dimensions of the standard deviation of the L2-normalised features (0: every image
    has the same direction, complete collapse; about ``1 / sqrt(D)`` for well spread
    features), and ``effective_rank``, the exponential of the entropy of the normalised
    singular values (Roy & Vetterli 2007; 1: all features on a line; at most
    ``min(B, D)``; a dimensional collapse shows here while the std can look fine). The
    last values are in :attr:`last` (``summary.json``'s ``collapse_std`` and
    ``collapse_effective_rank``).

    Args:
        every_n_steps: Optimizer steps between measurements (None: the trainer's
            ``log_every_n_steps``; 0: only on the last step). Keep it a multiple of
            ``log_every_n_steps``: Lightning repeats a step metric on the rows it writes
            until the metric is logged again or the epoch ends.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"collapse every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.last: dict[str, float] = {}
        self.last_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._track_steps_from(trainer)

    @staticmethod
    def _is_last_step(trainer: pl.Trainer) -> bool:
        step = int(trainer.global_step)
        max_steps = int(trainer.max_steps)
        if max_steps > 0 and step >= max_steps:
            return True
        max_epochs = trainer.max_epochs
        last_epoch = max_epochs is not None and trainer.current_epoch + 1 >= max_epochs > 0
        return bool(trainer.should_stop or (last_epoch and trainer.is_last_batch))

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether the step just taken is measured (call after it, once per batch)."""
        every = self.every_n_steps
        if every is None:
            every = int(getattr(trainer, "log_every_n_steps", 1))
        step = int(trainer.global_step)
        return (every > 0 and step % every == 0) or self._is_last_step(trainer)

    def measure(self, method: nn.Module, images: torch.Tensor) -> dict[str, float]:
        """The collapse statistics of ``method``'s features of ``images``; kept in
        :attr:`last`."""
        self.last = collapse_statistics(detached_features(method, images))
        return self.last

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = int(trainer.global_step)
        if not self._optimizer_stepped(trainer):
            return
        if not trainer.is_global_zero or not self.due(trainer):
            return
        images = first_image_view(batch[0])
        if images is None:
            return
        method: nn.Module = getattr(pl_module, "method")  # noqa: B009 (any module with .method)
        stats = self.measure(method, images)
        self.last_step = step
        pl_module.log_dict(
            {f"collapse/{name}": value for name, value in stats.items()},
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )


__all__ = [
    "CollapseMonitor",
    "LastCheckpoint",
    "NonFiniteStateError",
    "OnlineKNN",
    "OnlineLinearProbe",
    "ResumableCSVLogger",
    "ThroughputMonitor",
    "detached_features",
    "first_image_view",
    "non_finite_tensors",
]
