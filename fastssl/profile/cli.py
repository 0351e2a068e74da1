"""``fastssl profile``: measures what bounds a training run and says what would help.

``fastssl profile CONFIG [the overrides of pretrain] [--steps N] [--loader-only |
--compute-only | --callback-overhead] [--out DIR] [--json F]`` profiles one training
process of the recipe ``CONFIG`` (the same flags and ``--set key=value`` overrides as
``fastssl pretrain``):

* the loader alone: images/s and the split into read, decode, augment, collate, copy;
* the compute alone, on in-memory batches of the same shapes: forward, loss, backward,
  optimizer step;
* the full pipeline: images/s and the fraction of each step spent waiting for data;
* a verdict (``input``- or ``compute``-bound, by how much) and advice, each with the
  gain it predicts from measurements of the alternative (``--variants``).

It prints a table and writes ``OUT/profile.json``, ``OUT/profile.png`` and
``OUT/trace.json`` (default ``OUT``: ``runs/profile`` with a recipe, nothing without);
``--json F`` writes the JSON to ``F`` too. ``--callback-overhead`` instead trains
``--steps`` steps with ``fastssl pretrain``'s trainer and measures what its throughput
callback costs.

Without a recipe ``--data D --method M`` describe the run, as in earlier versions:
``--method`` takes a registered method name or a :mod:`fastssl.transforms` class name
(``SimCLRTransform``, ``--loader-only`` only); ``--loader-only`` then keeps its flat JSON
(``loader_images_per_s``, ``backend``, ``views``, ...).

Example:
    $ fastssl profile pipelines/simclr.yaml --data images/ --batch-size 256 --out prof/
    $ fastssl profile --loader-only --data images/ --method simclr --batch-size 64 \\
        --backend dali --json loader.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fastssl.profile.loader import (
    LoaderReport,
    is_transform_name,
    measure_loader,
    resolve_transform,
    spec_size,
)

#: Where the outputs go when a recipe is profiled without ``--out``.
DEFAULT_OUT = "runs/profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fastssl profile`` (the recipe flags of ``pretrain`` too)."""
    from fastssl.train.cli import add_recipe_arguments

    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="YAML recipe, e.g. pipelines/simclr.yaml (without one: --data and --method)",
    )
    add_recipe_arguments(parser, skip=("out",))
    parser.add_argument("--workers", dest="num_workers", type=int, help="the same as --num-workers")
    parser.add_argument(
        "--method",
        default=None,
        help="method name (default: the recipe's, else simclr); with --loader-only also a "
        "fastssl.transforms class name",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--loader-only", action="store_true", help="measure the data loader alone (images/s)"
    )
    mode.add_argument(
        "--compute-only",
        action="store_true",
        help="measure training steps alone, on in-memory batches",
    )
    mode.add_argument(
        "--callback-overhead",
        action="store_true",
        help="train --steps steps with pretrain's trainer; measure its throughput callback",
    )
    parser.add_argument(
        "--steps",
        "--batches",
        dest="steps",
        type=int,
        default=20,
        metavar="N",
        help="batches / steps measured per measurement (default 20)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="batches / steps run before measuring (a loader: at least its prefetch depth)",
    )
    parser.add_argument(
        "--variants",
        default="auto",
        help="alternatives measured for the advice: auto, none, or a comma list of workers, "
        "dali, max_side, compile, channels_last, bf16, batch (auto: all but compile on CPU)",
    )
    parser.add_argument(
        "--trace-steps", type=int, default=3, help="iterations recorded in trace.json"
    )
    parser.add_argument(
        "--out",
        dest="out_dir",
        default=None,
        metavar="DIR",
        help=f"folder of profile.json, profile.png, trace.json (recipe default {DEFAULT_OUT})",
    )
    parser.add_argument("--json", default=None, metavar="F", help="write the report to F")


def _mode(args: argparse.Namespace) -> str:
    if args.loader_only:
        return "loader"
    if args.compute_only:
        return "compute"
    return "callback-overhead" if args.callback_overhead else "full"


def profile_config(args: argparse.Namespace) -> Any:
    """The recipe the arguments describe: ``CONFIG`` (or defaults) with the flags, then
    ``--set`` overrides; ``--method`` replaces the recipe's method."""
    from fastssl.train.cli import flag_values
    from fastssl.train.config import apply_overrides, from_dict, load_config

    values = flag_values(args)
    if args.method is not None and not is_transform_name(args.method):
        values["method"] = args.method
    if args.config is not None:
        base = load_config(args.config)
    else:  # the defaults --loader-only always had: simclr, a batch of 64
        base = from_dict({"method": "simclr", "data": {"batch_size": 64}})
    return apply_overrides(base, list(args.overrides), values=values)


def run(args: argparse.Namespace) -> int:
    """Runs ``fastssl profile``; returns the exit code (0 ok, 2 a usage error)."""
    from fastssl.profile.overhead import callback_overhead, format_overhead
    from fastssl.profile.profiler import ProfileOptions, parse_variants, profile_run

    mode = _mode(args)
    out = args.out_dir or (DEFAULT_OUT if args.config is not None else None)
    try:
        config = profile_config(args)
        if mode == "callback-overhead":
            result = callback_overhead(config, args.steps)
            print(format_overhead(result))
            _write_json(result, args.json, out, "callback_overhead.json")
            return 0
        options = ProfileOptions(
            mode=mode,
            steps=args.steps,
            warmup=args.warmup,
            variants=parse_variants(args.variants),
            trace_steps=args.trace_steps,
            out=Path(out) if out else None,
        )
        if args.method is not None and is_transform_name(args.method) and mode != "loader":
            raise ValueError(
                f"--method {args.method} names a transform: profiling compute needs a "
                "method (simclr, dino, ...); a transform name works with --loader-only"
            )
        if mode == "loader" and (args.method is not None or args.config is None):
            name = args.method or config.method
            options.transform, options.transform_from = resolve_transform(
                name, config.data.input_size
            )
        if options.out is not None:
            options.out.mkdir(parents=True, exist_ok=True)
        report = profile_run(config, options)
        if options.out is not None:
            from fastssl.profile.report import write_chart

            report.files["chart"] = str(write_chart(report, options.out / "profile.png"))
            report.files["json"] = str(options.out / "profile.json")
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"fastssl profile: error: {error}", file=sys.stderr)
        return 2
    from fastssl.profile.report import format_table

    print(format_table(report))
    _write_json(report.to_dict(), args.json, out, "profile.json")
    return 0


def _write_json(document: dict[str, Any], path: str | None, out: str | None, name: str) -> None:
    targets = [Path(path)] if path else []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        targets.append(Path(out) / name)
    for target in targets:
        with open(target, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")


__all__ = [
    "LoaderReport",
    "add_arguments",
    "measure_loader",
    "profile_config",
    "resolve_transform",
    "run",
    "spec_size",
]
