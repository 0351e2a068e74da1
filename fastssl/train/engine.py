"""``pretrain(config)``: one function from a recipe to a trained checkpoint.

It builds the method and its default transform, the training loader (this process's part
of the data, seeded per epoch), a Lightning ``Trainer`` (DDP with fastssl's CPU-capable
synchronized BatchNorm when more than one process runs), trains, and writes to
``config.trainer.out``:

- ``last.ckpt``: the checkpoint (see :mod:`fastssl.train.checkpoint`), rewritten every
  ``checkpoint_every_n_steps`` steps and at the end;
- ``summary.json``: method, steps, epochs, final_loss, images_per_s, wall_s,
  data_wait_fraction (and the batch, learning rate, world size, kNN accuracy);
- ``metrics.csv`` (and TensorBoard logs under ``tensorboard/`` when it is installed);
- ``config.yaml``: the resolved recipe.

Resuming (``resume="OUT/last.ckpt"``) restores weights, optimizer, learning-rate
schedule, step and epoch. The data position is exact at epoch boundaries (the order and
the augmentation of an epoch depend only on the seed and the epoch). A checkpoint taken
mid-epoch resumes at the next batch of the same epoch order: the batches already trained
on are read again and dropped, so order and augmentation match the uninterrupted run;
only the methods' own randomness (e.g. MAE masks) in the rest of that epoch differs, and
it is back in step from the next epoch on.

Example:
    >>> from fastssl.train.config import load_config
    >>> summary = pretrain(load_config("pipelines/simclr.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from fastssl.data.loader import detect_source, make_loader, resolve_backend, view_specs_of
from fastssl.models.batchnorm import SyncBatchNormPlugin
from fastssl.train.callbacks import LastCheckpoint, OnlineKNN, ThroughputMonitor
from fastssl.train.config import Precision, PretrainConfig, to_dict
from fastssl.train.data import EpochSeededTransform, ResumableLoader
from fastssl.train.module import PretrainModule, merge_optimizer, resolve_method
from fastssl.utils import dist


def _uses_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` (bfloat16 or float16) natively through oneDNN
    (AVX512-BF16 / AVX512-FP16 / AMX); without it every matmul and convolution is emulated."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


#: Lightning precision -> (autocast dtype, dtype of weights and inputs).
PRECISIONS: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
    "32": (None, None),
    "32-true": (None, None),
    "64": (None, torch.float64),
    "16-mixed": (torch.float16, None),
    "bf16-mixed": (torch.bfloat16, None),
    "16-true": (None, torch.float16),
    "bf16-true": (None, torch.bfloat16),
}


def resolve_precision(precision: Precision, accelerator: str) -> Precision:
    """``precision``, or ``"32-true"`` with a warning for a half precision on a CPU that has
    no native support for it.

    The recipes train in bf16-mixed, right on GPUs and on CPUs with AVX512-BF16 or AMX; on
    a CPU without them PyTorch emulates the type (measured 50x slower than float32 for
    SimCLR's ResNet-18 on an AVX2 EPYC), so the run would take days for no gain in
    accuracy.

    >>> resolve_precision("32", "cpu")
    '32'
    """
    autocast, weights = PRECISIONS.get(precision, (None, None))
    dtype = autocast or weights
    if dtype not in (torch.bfloat16, torch.float16) or _uses_gpu(accelerator):
        return precision
    if cpu_supports(dtype):
        return precision
    warnings.warn(
        f"trainer.precision={precision}: this CPU has no native {dtype} arithmetic "
        f"(capability {torch.backends.cpu.get_cpu_capability()}) and PyTorch would emulate "
        "it (bf16-mixed measured 50x slower than float32 on an AVX2 CPU); training in "
        "precision 32-true instead",
        stacklevel=2,
    )
    return "32-true"


def method_kwargs(config: PretrainConfig) -> dict[str, Any]:
    """The method's constructor arguments: the recipe's, with ``input_size`` from data."""
    return {**config.method_kwargs, "input_size": config.data.input_size}


def _backend(config: PretrainConfig, transform: Any) -> str:
    """The data engine: ``auto`` falls back to torch for transforms without ViewSpecs."""
    kind = detect_source(config.data.path)
    backend = resolve_backend(config.data.backend, kind)
    if config.data.backend == "auto" and backend == "dali":
        try:
            view_specs_of(transform)
        except ValueError:
            return "torch"
    return backend


def _loader_factory(config: PretrainConfig, module: PretrainModule, views: Any) -> Any:
    def build() -> ResumableLoader:
        world = dist.world_size()
        if config.data.batch_size % world:
            raise ValueError(
                f"data.batch_size={config.data.batch_size} (the global batch) must be "
                f"divisible by the number of processes ({world})"
            )
        transform = EpochSeededTransform(views, config.trainer.seed, dist.rank())
        backend = _backend(config, transform)
        extra: dict[str, Any] = {}
        if backend == "dali" and _uses_gpu(config.trainer.accelerator):
            extra["dali_device"] = "mixed"  # decode on this rank's GPU
        loader = make_loader(
            config.data.path,
            transform,
            backend=backend,  # type: ignore[arg-type]
            batch_size=config.data.batch_size // world,
            num_workers=config.data.num_workers,
            shuffle=config.data.shuffle,
            drop_last=True,
            seed=config.trainer.seed,
            rank=dist.rank(),
            world_size=world,
            **extra,
        )
        if len(loader) == 0:
            raise ValueError(
                f"data.path={config.data.path!r} holds too few images for one batch of "
                f"{config.data.batch_size // world} per process: lower data.batch_size"
            )
        return ResumableLoader(loader, transform)

    return build


def matmul_small_convs(config: PretrainConfig) -> bool:
    """``trainer.matmul_small_convs``, its default resolved: on unless training on GPUs."""
    if config.trainer.matmul_small_convs is None:
        return not _uses_gpu(config.trainer.accelerator)
    return config.trainer.matmul_small_convs


def build_module(config: PretrainConfig) -> PretrainModule:
    """The Lightning module of ``config`` (its loader is built when training starts)."""
    compile_backbone = config.trainer.compile
    if compile_backbone is None:
        compile_backbone = _uses_gpu(config.trainer.accelerator)
    optimizer = {
        k: v for k, v in to_dict(config)["optimizer"].items() if k not in ("exclude_norm_and_bias",)
    }
    module = PretrainModule(
        method=config.method,
        method_kwargs=method_kwargs(config),
        optimizer=optimizer,
        schedule=to_dict(config)["schedule"],
        batch_size=config.data.batch_size,
        max_steps=config.trainer.max_steps,
        max_epochs=config.trainer.max_epochs,
        seed=config.trainer.seed,
        compile=compile_backbone,
        channels_last=config.trainer.channels_last,
        matmul_small_convs=matmul_small_convs(config),
        exclude_norm_and_bias=config.optimizer.exclude_norm_and_bias,
    )
    # Built here, not when training starts, so that a bad views: key fails up front.
    views = module.method.default_transform(**config.views)
    module.loader_factory = _loader_factory(config, module, views)
    return module


def _has_tensorboard() -> bool:
    return any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))


def _loggers(out: Path) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=out, name="", version="")]
    if _has_tensorboard():
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=out, name="tensorboard", version=""))
    return loggers


def gradient_clip(config: PretrainConfig) -> float | None:
    """``trainer.gradient_clip``, else the method's ``optimizer.extra.clip_grad_norm``."""
    if config.trainer.gradient_clip is not None:
        return config.trainer.gradient_clip
    defaults = resolve_method(config.method).optimizer_defaults
    clip = merge_optimizer(defaults, to_dict(config)["optimizer"]).extra.get("clip_grad_norm")
    return None if clip is None else float(clip)


def build_trainer(config: PretrainConfig, out: Path) -> tuple[pl.Trainer, list[pl.Callback]]:
    """The Lightning trainer of ``config`` and its fastssl callbacks."""
    tc = config.trainer
    callbacks: list[pl.Callback] = [
        LastCheckpoint(out, tc.checkpoint_every_n_steps, tc.keep_step_checkpoints),
        ThroughputMonitor(),
    ]
    if config.knn.train or config.knn.val:
        if not (config.knn.train and config.knn.val):
            raise ValueError("online kNN needs both knn.train and knn.val (labeled folders)")
        callbacks.append(
            OnlineKNN(
                config.knn.train,
                config.knn.val,
                config.data.input_size,
                k=config.knn.k,
                t=config.knn.t,
                every_n_epochs=config.knn.every_n_epochs,
                batch_size=config.knn.batch_size,
                num_workers=config.data.num_workers or 0,
            )
        )
    processes = tc.devices * tc.num_nodes
    strategy: Any = tc.strategy
    if strategy == "auto" and processes > 1:
        strategy = "ddp"
    trainer = pl.Trainer(
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=strategy,
        precision=resolve_precision(tc.precision, tc.accelerator),
        max_steps=tc.max_steps,
        max_epochs=tc.max_epochs if tc.max_epochs is not None else -1,
        max_time=tc.max_time,
        gradient_clip_val=gradient_clip(config),
        # fastssl's SyncBatchNorm: torch's refuses CPU tensors (gloo runs, tests).
        plugins=[SyncBatchNormPlugin()] if processes > 1 else None,
        use_distributed_sampler=False,  # the loader splits the data by rank itself
        enable_checkpointing=False,  # LastCheckpoint writes last.ckpt
        callbacks=callbacks,
        logger=_loggers(out),
        log_every_n_steps=tc.log_every_n_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    return trainer, callbacks


def pretrain(config: PretrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Trains ``config`` (resuming from ``resume`` if given) and returns the summary.

    Raises:
        FileNotFoundError: If the data path or the resume checkpoint does not exist.
        ValueError: For an empty data folder, an impossible batch split or a ``views``
            argument the method's transform does not take.
        NonFiniteLossError: If the loss becomes NaN or infinite.
    """
    if not config.data.path:
        raise ValueError("data.path is empty: pass --data PATH (an image folder or shards)")
    detect_source(config.data.path)  # clear error for a missing or empty path, up front
    if resume is not None and not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume {resume!r}: no such checkpoint")
    out = Path(config.trainer.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pl.seed_everything(config.trainer.seed, workers=False, verbose=False)
    module = build_module(config)
    trainer, callbacks = build_trainer(config, out)
    if trainer.is_global_zero:
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    try:
        trainer.fit(module, ckpt_path=resume)
    finally:
        if module.loader is not None:
            module.loader.close()  # stops persistent loader workers now, not at exit
    monitor = next(c for c in callbacks if isinstance(c, ThroughputMonitor))
    knn = next((c for c in callbacks if isinstance(c, OnlineKNN)), None)
    totals = monitor.totals(module)
    summary: dict[str, Any] = {
        "method": config.method,
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "final_loss": module.last_loss,
        "images_per_s": totals["images_per_s"],
        "wall_s": time.perf_counter() - start,
        "train_s": totals["train_s"],
        "data_wait_fraction": totals["data_wait_fraction"],
        "world_size": int(trainer.world_size),
        "batch_size": config.data.batch_size,
        "precision": str(trainer.precision),
        "peak_lr": module.peak_lr(),
        "schedule_steps": module.schedule_steps,
        "resumed_from": resume,
        "knn_top1": None if knn is None else knn.last_top1,
        "checkpoint": str(out / "last.ckpt"),
    }
    if not _has_tensorboard():
        summary["note"] = "tensorboard is not installed: metrics are in metrics.csv only"
    if trainer.is_global_zero:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["build_module", "build_trainer", "method_kwargs", "pretrain"]
