"""``fastssl pretrain CONFIG [options]``: pretrain a method from a YAML recipe.

Options override the recipe (``--batch-size 512`` sets ``data.batch_size``); any other
field is reachable with ``--set key.sub=value`` (repeatable). Examples::

    fastssl pretrain pipelines/simclr.yaml --data images/ --max-epochs 100
    fastssl pretrain pipelines/dino.yaml --data shards/ --devices 8 --precision bf16-mixed \\
        --set method_kwargs.backbone=vit_b_16 --set optimizer.lr=0.0005
    fastssl pretrain pipelines/simclr.yaml --data images/ --resume runs/simclr/last.ckpt
    fastssl pretrain pipelines/simclr.yaml --data images/ --batch-size 256 \\
        --accumulate-grad-batches 4 --logger wandb   # steps of 1024 images, logged to W&B

A run into an ``--out`` folder that holds a checkpoint continues it (``--resume auto``, the
default: a requeued cluster job goes on) or, with ``--overwrite``, starts over.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from typing import Any

from fastssl.cli import EXIT_CODES_HELP, EXIT_INTERNAL, exit_code, report_error

#: CLI flag (argparse dest) -> recipe key.
FLAG_KEYS: dict[str, str] = {
    "data": "data.path",
    "backend": "data.backend",
    "input_size": "data.input_size",
    "batch_size": "data.batch_size",
    "num_workers": "data.num_workers",
    "max_steps": "trainer.max_steps",
    "max_epochs": "trainer.max_epochs",
    "max_time": "trainer.max_time",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "num_nodes": "trainer.num_nodes",
    "strategy": "trainer.strategy",
    "precision": "trainer.precision",
    "compile": "trainer.compile",
    "seed": "trainer.seed",
    "out": "trainer.out",
    # fastssl pretrain only (add_arguments):
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "logger": "trainer.logger",
}


EPILOG = """\
A recipe has these sections; every key can be set with --set section.key=value:
  method          registry name (simclr, byol, dino, ...) or module:Class
  method_kwargs   the method's arguments: backbone (resnet18, resnet50, vit_b_16,
                  timm:<name>, timm:<name>(<options>) e.g.
                  'timm:vit_small_patch16_224(drop_path_rate=0.1)', for every method
                  AIM included), heads, temperature, momentum, ...
  views           arguments of the method's view transform that replace the paper's,
                  e.g. --set views.gaussian_blur=0.0 --set views.min_scale=0.2
                  (BYOL-style pairs get them on both views)
  data            path, backend, input_size, batch_size (global), num_workers, shuffle
  optimizer       name (sgd/lars/adamw), lr (for reference_batch_size), lr_scaling
                  (linear/sqrt/none), weight_decay, momentum, betas, extra: arguments
                  of the optimizer (trust_coefficient) or engine settings:
                  weight_decay_end (cosine weight-decay schedule), final_lr, start_lr,
                  clip_grad_norm, fix_predictor_lr, lr_biases, sqrt_scaling_lr;
                  KEY=null unsets a method default
  schedule        warmup_epochs or warmup_steps, end_factor, warmup_start_factor
  trainer         max_steps, max_epochs, max_time, precision, compile, channels_last,
                  matmul_small_convs (tiny-output convolutions as matmuls; default:
                  on for CPUs, off for GPUs), gradient_clip, accumulate_grad_batches,
                  checkpoint_every_n_steps, log_every_n_steps,
                  collapse_statistics (below), logger (csv, tensorboard, wandb),
                  wandb_project, wandb_name, seed, out
  knn             train/val labeled folders for online kNN at epoch ends (k, t)
  linear          train/val labeled folders for an online linear probe: a linear
                  classifier on the backbone's detached features, trained alongside on
                  train (one step of its own SGD per training batch; lr, batch_size),
                  its top-1 on val logged at epoch ends (linear/top1, every_n_epochs)
Unset optimizer and schedule keys take the method's paper defaults.

Gradient accumulation (--accumulate-grad-batches N) makes one optimizer step of N batches
(the mean of their gradients): the learning rate scales with the effective batch (batch
size x N), and steps, --max-steps and the schedules count optimizer steps.

Collapse statistics: every trainer.log_every_n_steps steps and on the last step
(trainer.collapse_statistics=false turns them off), the scored backbone's features of the
batch's first view (eval mode, no gradient: training is unchanged) give collapse/std, the
std of the L2-normalised features (0: collapsed; about 1/sqrt(D): well spread), and
collapse/effective_rank, exp of the entropy of their normalised singular values (1: all
on a line; at most min(batch, D)), in the logs and, last values, in summary.json
(collapse_std, collapse_effective_rank).

Writes OUT/last.ckpt, OUT/summary.json, OUT/metrics.csv, OUT/config.yaml and the logs of
--logger: TensorBoard (OUT/tensorboard, the default) or Weights & Biases (OUT/wandb;
WANDB_MODE=offline logs without a network). last.ckpt is only ever replaced by a finite
state. With several processes, rank 0 alone prints the closing line and writes
summary.json; its final_loss is the mean over ranks.

An OUT that holds a checkpoint (last.ckpt, or hpc_ckpt_N.ckpt from a SLURM requeue):
  --resume auto   (default) continue its newest checkpoint, metrics.csv rows kept; a run
                  that already reached max_steps/max_epochs says so and exits 0 without
                  training (raise --max-epochs/--max-steps to train further)
  --resume never  refuse (exit 2) unless --overwrite
  --resume CKPT   continue CKPT (into an OUT holding another run only with --overwrite)
  --overwrite     start over: deletes OUT's checkpoints, metrics.csv and summary.json
Checkpoints are read weights-only: a file holding other pickled objects is refused.

{exit_codes}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl pretrain`` to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(exit_codes=EXIT_CODES_HELP)
    parser.add_argument("config", help="YAML recipe, e.g. pipelines/simclr.yaml")
    add_recipe_arguments(parser)
    parser.add_argument(
        "--accumulate-grad-batches",
        dest="accumulate_grad_batches",
        type=int,
        metavar="N",
        help="one optimizer step per N batches (the mean of their gradients); the learning "
        "rate scales with the effective batch (batch size x N), steps count optimizer steps",
    )
    parser.add_argument(
        "--logger",
        dest="logger",
        choices=["csv", "tensorboard", "wandb"],
        help="where metrics go besides OUT/metrics.csv (always written): tensorboard "
        "(default, OUT/tensorboard), wandb (Weights & Biases, pip install wandb; "
        "WANDB_MODE=offline needs no network) or csv (metrics.csv only)",
    )
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="auto|never|CKPT",
        help="auto (default): continue OUT's checkpoint if it has one; never: a new run "
        "only; CKPT: continue that checkpoint",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an OUT that holds a run (deletes its checkpoints and metrics)",
    )


def add_recipe_arguments(parser: argparse.ArgumentParser, skip: Collection[str] = ()) -> None:
    """Adds the flags that override a recipe (:data:`FLAG_KEYS`, then ``--set``).

    Shared by ``fastssl pretrain`` and ``fastssl profile``, so both read a recipe the same
    way. Every flag defaults to None (the recipe's value stands).

    Args:
        parser: The command's parser.
        skip: argparse dests of :data:`FLAG_KEYS` the command defines itself (``profile``
            gives ``--out`` another meaning).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_recipe_arguments(parser, skip=("out",))
        >>> flag_values(parser.parse_args(["--batch-size", "8", "--no-compile"]))
        {'data.batch_size': 8, 'trainer.compile': False}
    """

    def add(dest: str, flag: str, **kwargs: Any) -> None:
        if dest not in skip:
            parser.add_argument(flag, dest=dest, **kwargs)

    add(
        "data",
        "--data",
        help="image folder, `fastssl shards` folder, .beton, or WebDataset tars: a folder or "
        "list (.txt) of them, a brace pattern ('shard-{000000..000099}.tar'), http(s)://, "
        "s3:// (endpoint and keys from AWS_* variables) or pipe:CMD URLs",
    )
    add(
        "backend",
        "--backend",
        help="data engine: torch, dali, ffcv or auto (default: FFCV for a .beton, DALI when "
        "training on GPUs and installed, else the batched torch engine)",
    )
    add("input_size", "--input-size", type=int, help="resolution of the global views")
    add("batch_size", "--batch-size", type=int, help="GLOBAL batch size (all processes)")
    add("num_workers", "--num-workers", type=int, help="loader processes per process")
    add("max_steps", "--max-steps", type=int, help="stop after N optimizer steps")
    add("max_epochs", "--max-epochs", type=int, help="stop after N epochs")
    add("max_time", "--max-time", help="stop after DD:HH:MM:SS")
    add("accelerator", "--accelerator", help="cpu, gpu or auto")
    add("devices", "--devices", type=int, help="processes (GPUs) per node")
    add("num_nodes", "--num-nodes", type=int, help="number of nodes")
    add("strategy", "--strategy", help="Lightning strategy (default: ddp when distributed)")
    add(
        "precision",
        "--precision",
        help="32, 16-mixed or bf16-mixed (on a CPU without native bf16 / fp16 arithmetic, "
        "i.e. without AVX512-BF16 or AMX, half precisions train in 32-true, with a warning)",
    )
    add(
        "compile",
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training step as a whole: backbone, heads and loss, "
        "fullgraph (default: on for GPUs, off on CPU)",
    )
    add("seed", "--seed", type=int, help="one seed for init, data order, augmentation")
    add("out", "--out", help="output folder (last.ckpt, summary.json, metrics.csv)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe field, e.g. --set optimizer.lr=0.1 (repeatable)",
    )


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys the flags in ``args`` set (flags left at None are omitted)."""
    flags = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    return {key: value for key, value in flags.items() if value is not None}


def config_from_args(args: argparse.Namespace) -> Any:
    """The recipe of ``args.config`` with the flags, then ``--set`` overrides, applied."""
    from fastssl.train.config import apply_overrides, load_config

    config = load_config(args.config)
    return apply_overrides(config, list(args.overrides), values=flag_values(args))


def _is_rank_zero() -> bool:
    """Whether this process is the run's rank 0 (Lightning records the rank of each of the
    processes it starts or joins)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _print_flushed(text: str) -> None:
    """Prints the start-of-run setup block at once (before Lightning's own output)."""
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    """Runs ``fastssl pretrain``; returns the exit code (0 ok, 2 user error, 3 non-finite
    training; see :data:`fastssl.cli.EXIT_CODES_HELP`). Internal errors propagate."""
    from fastssl.train.engine import pretrain

    try:
        config = config_from_args(args)
        summary = pretrain(
            config,
            resume=args.resume,
            announce=_print_flushed,
            overwrite=getattr(args, "overwrite", False),
        )
    except Exception as error:
        if exit_code(error) == EXIT_INTERNAL:
            raise
        return report_error("fastssl pretrain", error)
    if not _is_rank_zero():
        return 0  # rank 0 prints the closing lines, once for the run
    if summary.get("already_finished"):
        print(
            f"fastssl pretrain: {summary['checkpoint']} has already finished ({summary['steps']} "
            "steps, max_steps/max_epochs reached): nothing to train. Raise --max-epochs or "
            "--max-steps to continue it, or pass --overwrite to start over"
        )
        return 0
    print(
        f"fastssl pretrain: {summary['method']} {summary['steps']} steps, "
        f"final loss {summary['final_loss']:.4f}, {summary['images_per_s']:.1f} images/s, "
        f"data wait {summary['data_wait_fraction']:.0%} -> {summary['checkpoint']}"
    )
    if summary.get("unreadable_images"):
        print(
            f"fastssl pretrain: {summary['unreadable_images']} unreadable images were replaced "
            "by readable ones (named in the warnings above; `fastssl shards` lists and skips "
            "them once for good)"
        )
    return 0


__all__ = [
    "FLAG_KEYS",
    "add_arguments",
    "add_recipe_arguments",
    "config_from_args",
    "flag_values",
    "run",
]
