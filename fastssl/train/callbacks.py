"""Callbacks of ``fastssl pretrain``: checkpoints, throughput and online kNN.

- :class:`LastCheckpoint` rewrites ``OUT/last.ckpt`` every N optimizer steps and at the
  end, atomically (written aside, then renamed), so a crash or a non-finite loss leaves
  the last good checkpoint intact.
- :class:`ThroughputMonitor` logs images/s and the data-wait fraction: the share of the
  step time spent waiting for the next batch (near 0: compute bound; near 1: data bound).
- :class:`OnlineKNN` logs weighted-kNN top-1 accuracy (InstDisc, Wu et al. 2018; k=200,
  t=0.1) of the backbone's features on a labeled folder at epoch ends.

Example:
    >>> callbacks = [LastCheckpoint("runs/x", every_n_steps=500), ThroughputMonitor()]
"""

from __future__ import annotations

import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import nn

from fastssl.eval.features import class_mapping, eval_transform, extract_features, open_labeled
from fastssl.eval.knn import knn_accuracy


class LastCheckpoint(pl.Callback):
    """Writes ``dirpath/last.ckpt`` every ``every_n_steps`` steps and when training ends.

    Args:
        dirpath: Output folder.
        every_n_steps: Steps between checkpoints (0: only at the end).
        keep_step_checkpoints: Also keep ``step-<N>.ckpt`` copies.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        every_n_steps: int,
        keep_step_checkpoints: bool = False,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep_step_checkpoints = keep_step_checkpoints
        self.last_saved_step = -1

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def save(self, trainer: pl.Trainer) -> None:
        """Writes the checkpoint of the current step (all ranks must call this)."""
        step = int(trainer.global_step)
        if step == self.last_saved_step:
            return
        tmp = self.dirpath / "last.ckpt.tmp"
        trainer.save_checkpoint(tmp)  # rank 0 writes; ends with a barrier
        if trainer.is_global_zero:
            if self.keep_step_checkpoints:
                shutil.copyfile(tmp, self.dirpath / f"step-{step:08d}.ckpt")
            os.replace(tmp, self.last_path)
        trainer.strategy.barrier("fastssl_last_checkpoint")
        self.last_saved_step = step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)


class ThroughputMonitor(pl.Callback):
    """Logs ``perf/images_per_s``, ``perf/data_wait_fraction`` and ``perf/step_time_s``.

    Measured between consecutive ends of training batches; the wait is the time the
    loader's ``next()`` took (Lightning fetches the next batch inside that interval).
    Values are averages over the steps since the last logged one, logged on the steps
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
        # The window since the last logged step: [steps, images, seconds, waited seconds].
        self._window = [0, 0, 0.0, 0.0]

    def _wait(self, pl_module: pl.LightningModule) -> float:
        loader = getattr(pl_module, "loader", None)
        return float(loader.wait_s) if loader is not None else 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_time = self._last_time = time.perf_counter()
        # Waits already counted (e.g. the prefetch of the first batch) belong to the run.
        self.start_wait = self._last_wait = 0.0
        self._window = [0, 0, 0.0, 0.0]

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
            if every > 0 and (trainer.global_step % every == 0 or trainer.should_stop):
                steps, seen, seconds, waited = window
                seconds = max(seconds, 1e-9)
                pl_module.log_dict(
                    {
                        "perf/images_per_s": seen / seconds,
                        "perf/data_wait_fraction": min(waited / seconds, 1.0),
                        "perf/step_time_s": seconds / steps,
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
        for name, folder in (("knn.train", train), ("knn.val", val)):
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{name}={folder!r} is not a folder of labeled images")
        self.k, self.t = k, t
        self.every_n_epochs = max(1, every_n_epochs)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.last_top1: float | None = None
        # Opened now, so a folder without classes, or a query class the bank lacks, fails
        # before training rather than at the first epoch end.
        transform = eval_transform(input_size)
        self._bank, self._queries = open_labeled(train, transform), open_labeled(val, transform)
        self._target_map = class_mapping(self._bank.classes, self._queries)

    def evaluate(self, pl_module: pl.LightningModule) -> float:
        """Top-1 kNN accuracy of ``pl_module.method``'s features, scored as ``fastssl eval
        knn`` does: same transform and features, query labels mapped by class name."""
        method: nn.Module = getattr(pl_module, "method")  # noqa: B009 (any module with .method)
        embed = partial(
            extract_features,
            method,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=pl_module.device,
        )
        train = embed(self._bank)
        val = embed(self._queries, target_map=self._target_map)
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


__all__ = ["LastCheckpoint", "OnlineKNN", "ThroughputMonitor"]
