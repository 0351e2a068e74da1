"""``pretrain(config)``: one function from a recipe to a trained checkpoint.

It builds the method and its default transform, the training loader (this process's part
of the data, seeded per epoch), a Lightning ``Trainer`` (DDP with fastssl's CPU-capable
synchronized BatchNorm when more than one process runs), trains, and writes to
``config.trainer.out``:

- ``last.ckpt``: the checkpoint (see :mod:`fastssl.train.checkpoint`), rewritten every
  ``checkpoint_every_n_steps`` steps and at the end;
- ``summary.json`` (rank 0): method, steps (optimizer steps), epochs, final_loss (the
  last optimizer step's loss, averaged over its accumulated batches and over ranks),
  images_per_s, wall_s, data_wait_fraction (and the batch, accumulation, learning rate,
  world size, online kNN and linear-probe accuracies, the last collapse statistics
  ``collapse_std`` and ``collapse_effective_rank``) and the resolved setup
  (:func:`run_setup`: data backend and why, loss kernel, compile, precision,
  small-convolution path), which ``fastssl pretrain`` also prints at start;
- ``metrics.csv`` always, and the logs of ``trainer.logger``: TensorBoard under
  ``tensorboard/`` (the default) or Weights & Biases under ``wandb/``;
- ``config.yaml``: the resolved recipe.

Resuming (``resume="OUT/last.ckpt"``, or ``"auto"``: the newest checkpoint of ``OUT``;
see :func:`fastssl.train.checkpoint.prepare_run`) restores weights, optimizer,
learning-rate schedule, step and epoch, and keeps the ``metrics.csv`` rows before it.
The data position is exact at epoch boundaries (the order and the augmentation of an
epoch depend only on the seed and the epoch). A checkpoint taken mid-epoch resumes at
the next batch of the same epoch order: the batches already trained on are read again
and dropped, so order and augmentation match the uninterrupted run; only the methods' own
randomness (e.g. MAE masks) in the rest of that epoch differs, and it is back in step
from the next epoch on.

Example:
    >>> from fastssl.train.config import load_config
    >>> summary = pretrain(load_config("pipelines/simclr.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.utilities import rank_zero_only

from fastssl import methods
from fastssl.data.loader import (
    BackendChoice,
    Loader,
    detect_source,
    make_loader,
    resolve_backend,
)
from fastssl.kernels.contrastive import describe_kernel
from fastssl.models.batchnorm import SyncBatchNormPlugin
from fastssl.train.callbacks import (
    CollapseMonitor,
    LastCheckpoint,
    OnlineKNN,
    OnlineLinearProbe,
    ResumableCSVLogger,
    ThroughputMonitor,
)
from fastssl.train.checkpoint import prepare_run
from fastssl.train.config import Precision, PretrainConfig, to_dict
from fastssl.train.data import EpochSeededTransform, ResumableLoader
from fastssl.train.module import PretrainModule
from fastssl.train.optim import merge_optimizer
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


def training_device(config: PretrainConfig) -> str:
    """``"cuda"`` when ``config`` trains on GPUs, else ``"cpu"``."""
    return "cuda" if _uses_gpu(config.trainer.accelerator) else "cpu"


def choose_backend(config: PretrainConfig, transform: Any) -> BackendChoice:
    """The data engine ``pretrain`` reads ``config``'s data with, and why.

    :func:`fastssl.data.loader.resolve_backend` for the recipe's source, training device
    and ``transform``; ``fastssl profile`` measures the same choice.
    """
    kind = detect_source(config.data.path)
    return resolve_backend(
        config.data.backend,
        kind,
        training_device(config),
        transform,
        config.data.path,
        config.data.label_key,
    )


def build_training_loader(
    config: PretrainConfig,
    transform: Any,
    rank: int = 0,
    world_size: int = 1,
    *,
    backend: str | None = None,
    num_workers: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> Loader:
    """The loader of one training process of ``config``: the one loader builder.

    ``fastssl pretrain`` trains on it and ``fastssl profile`` measures it, so the profile
    measures what a run reads: this rank's part of ``data.path`` with the recipe's engine
    (:func:`choose_backend`), batch, workers, shuffle, seed and WebDataset settings
    (``label_key``, ``resampled``, ``num_samples``).

    Args:
        config: The recipe.
        transform: The multi-view transform.
        rank: This process's rank.
        world_size: Number of processes; the global ``data.batch_size`` is split evenly.
        backend: Overrides the engine (the profiler's alternatives); None: the run's.
        num_workers: Overrides ``data.num_workers``.
        batch_size: Overrides the per-process batch.
        device: Overrides the training device (DALI decodes on a GPU one).

    Raises:
        ValueError: When the global batch does not split evenly, or the data holds too few
            images for one batch per process.
    """
    if config.data.batch_size % world_size:
        raise ValueError(
            f"data.batch_size={config.data.batch_size} (the global batch) must be "
            f"divisible by the number of processes ({world_size})"
        )
    per_process = batch_size or config.data.batch_size // world_size
    too_few = ValueError(
        f"data.path={config.data.path!r} holds too few images for one batch of {per_process} "
        "per process: lower data.batch_size (--batch-size)"
    )
    try:
        loader = make_loader(
            config.data.path,
            transform,
            backend=backend or choose_backend(config, transform).name,  # type: ignore[arg-type]
            batch_size=per_process,
            num_workers=config.data.num_workers if num_workers is None else num_workers,
            shuffle=config.data.shuffle,
            drop_last=True,
            seed=config.trainer.seed,
            rank=rank,
            world_size=world_size,
            device=training_device(config) if device is None else device,
            label_key=config.data.label_key,
            resampled=config.data.resampled,
            num_samples=config.data.num_samples,
        )
    except RuntimeError as error:  # DALI refuses a shard smaller than the batch
        if "no data in the pipeline" in str(error):
            raise too_few from error
        raise
    if len(loader) == 0:
        raise too_few
    return loader


def _loader_factory(config: PretrainConfig, module: PretrainModule, views: Any) -> Any:
    def build() -> ResumableLoader:
        transform = EpochSeededTransform(views, config.trainer.seed, dist.rank())
        # The backend choice was announced by pretrain().
        loader = build_training_loader(config, transform, dist.rank(), dist.world_size())
        return ResumableLoader(loader, transform)

    return build


def matmul_small_convs(config: PretrainConfig) -> bool:
    """``trainer.matmul_small_convs``, its default resolved: on unless training on GPUs."""
    if config.trainer.matmul_small_convs is None:
        return not _uses_gpu(config.trainer.accelerator)
    return config.trainer.matmul_small_convs


def compile_enabled(config: PretrainConfig) -> bool:
    """``trainer.compile``, its default resolved: on when training on GPUs, off on CPUs."""
    if config.trainer.compile is None:
        return _uses_gpu(config.trainer.accelerator)
    return config.trainer.compile


def build_module(config: PretrainConfig) -> PretrainModule:
    """The Lightning module of ``config`` (its loader is built when training starts)."""
    compile_backbone = compile_enabled(config)
    optimizer = {
        k: v for k, v in to_dict(config)["optimizer"].items() if k not in ("exclude_norm_and_bias",)
    }
    module = PretrainModule(
        method=config.method,
        method_kwargs=method_kwargs(config),
        optimizer=optimizer,
        schedule=to_dict(config)["schedule"],
        batch_size=config.data.batch_size,
        accumulate_grad_batches=config.trainer.accumulate_grad_batches,
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


def _installed(*names: str) -> bool:
    return any(importlib.util.find_spec(name) is not None for name in names)


#: The file of OUT that keeps the W&B run id, so that a resumed run logs into the same run.
WANDB_ID_FILE = "wandb_run_id.txt"


def _wandb_id(out: Path, resuming: bool) -> str:
    """The W&B run id of ``out``: the stored one when resuming, else a new one (stored)."""
    path = out / WANDB_ID_FILE
    if resuming and path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored
    run_id = uuid.uuid4().hex[:12]
    if getattr(rank_zero_only, "rank", 0) == 0:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def build_loggers(
    config: PretrainConfig,
    out: Path,
    keep_metrics_before: int | None = None,
    resuming: bool = False,
) -> list[Any]:
    """The run's loggers: ``OUT/metrics.csv`` always, then ``trainer.logger``'s.

    ``"tensorboard"`` writes ``OUT/tensorboard/`` (Lightning's ``TensorBoardLogger``);
    ``"wandb"`` logs to Weights & Biases (Lightning's ``WandbLogger``, project
    ``trainer.wandb_project``, run name ``trainer.wandb_name`` or the out folder's name,
    the resolved recipe as the run's config, files under ``OUT/wandb/``; a resumed run
    continues the same W&B run, its id kept in ``OUT/wandb_run_id.txt``). Set
    ``WANDB_MODE=offline`` to log without a network (``wandb sync`` uploads later).

    Args:
        config: The recipe.
        out: The output folder.
        keep_metrics_before: The step a resumed run starts at (``metrics.csv`` keeps the
            rows before it); None for a new run.
        resuming: Whether the run continues a checkpoint (W&B resumes its run).

    Raises:
        ModuleNotFoundError: The chosen logger's package is not installed (the message
            says what to ``pip install``).
    """
    # metrics.csv keeps the rows before a resume (Lightning's CSVLogger deletes them).
    loggers: list[Any] = [ResumableCSVLogger(out, keep_before_step=keep_metrics_before)]
    choice = config.trainer.logger
    if choice == "tensorboard":
        if not _installed("tensorboard", "tensorboardX"):
            raise ModuleNotFoundError(
                "trainer.logger=tensorboard (the default) needs TensorBoard, a dependency of "
                "fastssl that is missing here: pip install tensorboard (or pass --logger csv "
                "for metrics.csv only)",
                name="tensorboard",
            )
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=out, name="tensorboard", version=""))
    elif choice == "wandb":
        if not _installed("wandb"):
            raise ModuleNotFoundError(
                "trainer.logger=wandb needs Weights & Biases: pip install wandb (or pip "
                "install 'fastssl[wandb]')",
                name="wandb",
            )
        from pytorch_lightning.loggers import WandbLogger

        wandb_logger = WandbLogger(
            name=config.trainer.wandb_name or out.resolve().name,
            save_dir=out,
            id=_wandb_id(out, resuming),  # Lightning resumes a run of that id ("allow")
            project=config.trainer.wandb_project,
            config=to_dict(config),
        )
        # Lightning passes anonymous=None, which recent wandb versions warn about on every
        # run although nothing was asked for.
        init = getattr(wandb_logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)
        loggers.append(wandb_logger)
    return loggers


def _start_wandb(trainer: pl.Trainer) -> None:
    """Starts the W&B run now (rank 0), so that a failure to start says what to do instead
    of surfacing from inside training."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            try:
                logger.experiment  # noqa: B018 (the property starts the run)
            except Exception as error:
                raise ValueError(
                    f"--logger wandb: Weights & Biases could not start a run ({error}); log "
                    "in with `wandb login` (or set WANDB_API_KEY), or log offline with "
                    "WANDB_MODE=offline and upload later with `wandb sync OUT/wandb/offline-run-*`"
                ) from error


def _finish_wandb(trainer: pl.Trainer, failed: bool) -> None:
    """Closes the W&B run of this process, if one was started (Lightning leaves it open)."""
    from pytorch_lightning.loggers import WandbLogger

    if not any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
    # finish() can return before wandb's service process has written (offline) or sent
    # the whole run; teardown waits for it, so OUT/wandb is complete when pretrain returns.
    wandb.teardown()


def gradient_clip(config: PretrainConfig) -> float | None:
    """``trainer.gradient_clip``, else the method's ``optimizer.extra.clip_grad_norm``."""
    if config.trainer.gradient_clip is not None:
        return config.trainer.gradient_clip
    defaults = methods.get(config.method).optimizer_defaults
    clip = merge_optimizer(defaults, to_dict(config)["optimizer"]).extra.get("clip_grad_norm")
    return None if clip is None else float(clip)


def build_trainer(
    config: PretrainConfig,
    out: Path,
    keep_metrics_before: int | None = None,
    resuming: bool = False,
) -> tuple[pl.Trainer, list[pl.Callback]]:
    """The Lightning trainer of ``config`` and its fastssl callbacks.

    ``keep_metrics_before``: the step a resumed run starts at (``metrics.csv`` keeps the
    rows logged before it); ``resuming``: the run continues a checkpoint (see
    :func:`build_loggers`). ``trainer.accumulate_grad_batches`` goes to Lightning, which
    steps the optimizer every N batches (and on an epoch's last batch). Under SLURM,
    Lightning's ``SLURMEnvironment`` (auto-requeue on) saves ``OUT/hpc_ckpt_N.ckpt`` and
    requeues the job when it is signalled before its time limit; the requeued job resumes
    from it (``resume="auto"``, see ``tools/slurm_pretrain.sbatch``).
    """
    tc = config.trainer
    if tc.accumulate_grad_batches < 1:
        raise ValueError(
            f"trainer.accumulate_grad_batches must be >= 1, got {tc.accumulate_grad_batches}"
        )
    callbacks: list[pl.Callback] = [
        LastCheckpoint(out, tc.checkpoint_every_n_steps, tc.keep_step_checkpoints),
        ThroughputMonitor(),
    ]
    if tc.collapse_statistics:
        callbacks.append(CollapseMonitor())
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
    if config.linear.train or config.linear.val:
        if not (config.linear.train and config.linear.val):
            raise ValueError(
                "the online linear probe needs both linear.train and linear.val (labeled folders)"
            )
        callbacks.append(
            OnlineLinearProbe(
                config.linear.train,
                config.linear.val,
                config.data.input_size,
                lr=config.linear.lr,
                every_n_epochs=config.linear.every_n_epochs,
                batch_size=config.linear.batch_size,
                num_workers=config.data.num_workers or 0,
                seed=tc.seed,
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
        accumulate_grad_batches=tc.accumulate_grad_batches,
        # fastssl's SyncBatchNorm: torch's refuses CPU tensors (gloo runs, tests).
        plugins=[SyncBatchNormPlugin()] if processes > 1 else None,
        use_distributed_sampler=False,  # the loader splits the data by rank itself
        enable_checkpointing=False,  # LastCheckpoint writes last.ckpt
        callbacks=callbacks,
        logger=build_loggers(config, out, keep_metrics_before, resuming),
        default_root_dir=out,  # where Lightning's SLURM requeue writes hpc_ckpt_N.ckpt
        log_every_n_steps=tc.log_every_n_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    return trainer, callbacks


def run_setup(config: PretrainConfig, trainer: pl.Trainer, transform: Any) -> dict[str, Any]:
    """The choices a run trains with, every default resolved (``summary.json`` keys).

    Returns:
        ``data_backend`` and ``data_backend_reason`` (:func:`choose_backend`),
        ``data_backend_fallback`` (a faster engine was wanted but cannot run here),
        ``loss_kernel`` (the contrastive-loss path,
        :func:`fastssl.kernels.contrastive.describe_kernel`), ``compile`` (bool),
        ``precision`` (the trainer's, after :func:`resolve_precision`) and
        ``matmul_small_convs`` (bool).
    """
    choice = choose_backend(config, transform)
    return {
        "data_backend": choice.name,
        "data_backend_reason": choice.reason,
        "data_backend_fallback": choice.fallback,
        "loss_kernel": describe_kernel(training_device(config)),
        "compile": compile_enabled(config),
        "precision": str(trainer.precision),
        "matmul_small_convs": matmul_small_convs(config),
    }


def format_setup(setup: dict[str, Any]) -> str:
    """The start-of-run block ``fastssl pretrain`` prints for :func:`run_setup`'s dict."""

    def on(value: Any) -> str:
        return "on" if value else "off"

    fallback = " [fallback]" if setup["data_backend_fallback"] else ""
    return "\n".join(
        [
            "fastssl pretrain: setup",
            f"  data backend  {setup['data_backend']}{fallback} ({setup['data_backend_reason']})",
            f"  loss kernel   {setup['loss_kernel']}",
            f"  compile       {on(setup['compile'])}"
            + (" (training step as one graph)" if setup["compile"] else ""),
            f"  precision     {setup['precision']}",
            f"  small convs   {'as matmuls' if setup['matmul_small_convs'] else 'native'}",
        ]
    )


def pretrain(
    config: PretrainConfig,
    resume: str | None = None,
    announce: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains ``config`` (resuming from ``resume`` if given) and returns the summary.

    ``resume``: ``"auto"`` continues the newest checkpoint of ``config.trainer.out`` (or
    starts a new run when it has none), a path continues that checkpoint, None /
    ``"never"`` starts a new run; a folder holding another run's checkpoint is refused
    unless ``overwrite`` (which deletes its outputs first). See
    :func:`fastssl.train.checkpoint.prepare_run`. A resumed run that has nothing left to
    train (already finished) trains nothing, keeps its files and returns its summary with
    ``"already_finished": True``.

    ``announce`` (e.g. ``print``) receives the block of :func:`format_setup` on rank 0
    before training starts; a data-engine fallback also warns on rank 0.

    Raises:
        FileNotFoundError: If the data path or the resume checkpoint does not exist.
        ValueError: For an empty data folder, an impossible batch split, a ``views``
            argument the method's transform does not take, ``max_steps=0``, an output
            folder holding a run (:class:`~fastssl.train.checkpoint.RunExistsError`), or a
            resume checkpoint that is refused or not fastssl's
            (:class:`~fastssl.checkpoint.CheckpointError`).
        NonFiniteLossError: If the loss, a parameter or a buffer becomes NaN or infinite.
    """
    if not config.data.path:
        raise ValueError("data.path is empty: pass --data PATH (an image folder or shards)")
    detect_source(config.data.path)  # clear error for a missing or empty path, up front
    if config.trainer.max_steps == 0 or config.trainer.max_epochs == 0:
        raise ValueError(
            "trainer.max_steps and trainer.max_epochs must be at least 1 (max_steps -1: "
            "bounded by max_epochs): a run of 0 steps trains nothing"
        )
    out = Path(config.trainer.out)
    # Ranks other than 0 (DDP children, SLURM tasks) must not delete what rank 0 writes.
    run = prepare_run(out, resume, overwrite, clear=getattr(rank_zero_only, "rank", 0) == 0)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pl.seed_everything(config.trainer.seed, workers=False, verbose=False)
    module = build_module(config)
    trainer, callbacks = build_trainer(
        config, out, keep_metrics_before=run.step, resuming=run.resume is not None
    )
    setup = run_setup(config, trainer, module.method.default_transform(**config.views))
    if trainer.is_global_zero:
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
        if setup["data_backend_fallback"]:
            warnings.warn(
                f"data backend {setup['data_backend']}: {setup['data_backend_reason']}",
                stacklevel=2,
            )
        if announce is not None:
            announce(format_setup(setup))
    failed = True
    try:
        _start_wandb(trainer)
        # weights_only: the checkpoint holds tensors and plain data only (prepare_run
        # read it the same way), so Lightning's load cannot run pickled code either.
        trainer.fit(module, ckpt_path=run.resume, weights_only=True)
        failed = False
    finally:
        if module.loader is not None:
            module.loader.close()  # stops persistent loader workers now, not at exit
        _finish_wandb(trainer, failed)
    if run.step is not None and int(trainer.global_step) == run.step:
        return _finished_summary(out, run.resume, int(trainer.global_step))
    monitor = next(c for c in callbacks if isinstance(c, ThroughputMonitor))
    knn = next((c for c in callbacks if isinstance(c, OnlineKNN)), None)
    probe = next((c for c in callbacks if isinstance(c, OnlineLinearProbe)), None)
    collapse = next((c for c in callbacks if isinstance(c, CollapseMonitor)), None)
    collapse_last = {} if collapse is None else collapse.last
    totals = monitor.totals(module)
    # Collectives: every rank takes part, rank 0 writes and prints.
    # (Lightning moved the module to the CPU after fit; NCCL reduces on the GPU.)
    device = trainer.strategy.root_device
    unreadable = unreadable_images(module.loader, device)
    final_loss = mean_over_ranks(module.last_step_loss, device)
    summary: dict[str, Any] = {
        "method": config.method,
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "final_loss": final_loss,
        "images_per_s": totals["images_per_s"],
        "wall_s": time.perf_counter() - start,
        "train_s": totals["train_s"],
        "data_wait_fraction": totals["data_wait_fraction"],
        "world_size": int(trainer.world_size),
        "batch_size": config.data.batch_size,
        "accumulate_grad_batches": config.trainer.accumulate_grad_batches,
        "effective_batch_size": module.effective_batch_size,
        "precision": str(trainer.precision),
        "peak_lr": module.peak_lr(),
        "schedule_steps": module.schedule_steps,
        "resumed_from": run.resume,
        "knn_top1": None if knn is None else knn.last_top1,
        "linear_top1": None if probe is None else probe.last_top1,
        # Of the last measured step (CollapseMonitor; None: off or never measured).
        "collapse_std": collapse_last.get("std"),
        "collapse_effective_rank": collapse_last.get("effective_rank"),
        "logger": config.trainer.logger,
        # Images the loader could not read, each replaced by a readable one (all ranks;
        # a folder: the whole run; shards: the last epoch); None: the engine does not count.
        "unreadable_images": unreadable,
        "checkpoint": str(out / "last.ckpt"),
        **setup,  # data backend and why, loss kernel, compile, small convs
    }
    if trainer.is_global_zero:
        # Strict JSON: a value that is not finite (a loss never computed) is null.
        text = json.dumps(json_safe(summary), indent=2, allow_nan=False)
        (out / "summary.json").write_text(text + "\n")
    return summary


def unreadable_images(
    loader: ResumableLoader | None, device: str | torch.device = "cpu"
) -> int | None:
    """Unreadable images the run's loader replaced, summed over ranks (None when its engine
    does not count them; every rank must call it when distributed; ``device`` as in
    :func:`mean_over_ranks`)."""
    count = None if loader is None else loader.loader.num_unreadable
    if not dist.is_distributed():
        return count
    total = dist.all_reduce_sum(torch.tensor([-1 if count is None else count], device=device))
    return None if count is None else int(total[0])


def mean_over_ranks(value: float, device: str | torch.device = "cpu") -> float:
    """The mean of ``value`` over all processes (``value`` itself in a single process;
    every rank must call it when distributed). NaN on any rank gives NaN.

    ``device``: where the reduced tensor lives (the training device: NCCL reduces CUDA
    tensors only).
    """
    if not dist.is_distributed():
        return value
    total = dist.all_reduce_sum(torch.tensor([float(value)], dtype=torch.float64, device=device))
    return float(total[0]) / dist.world_size()


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts and lists too) replaced by None.

    >>> json_safe({"loss": float("nan"), "steps": [1, float("inf")]})
    {'loss': None, 'steps': [1, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _finished_summary(out: Path, resumed: str | None, steps: int) -> dict[str, Any]:
    """The summary of a resumed run that had nothing left to train: the earlier run's
    ``summary.json`` (left as it is) with ``already_finished`` and ``resumed_from``."""
    path = out / "summary.json"
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            summary = {}
    summary.setdefault("steps", steps)
    summary.setdefault("checkpoint", str(out / "last.ckpt"))
    return {**summary, "already_finished": True, "resumed_from": resumed}


__all__ = [
    "build_loggers",
    "build_module",
    "build_trainer",
    "choose_backend",
    "compile_enabled",
    "format_setup",
    "json_safe",
    "mean_over_ranks",
    "method_kwargs",
    "pretrain",
    "run_setup",
    "training_device",
]
