"""Does ``trainer.compile`` pay on a CPU? The CPU recipe trained with and without it.

``fastssl pretrain`` compiles the whole training step (backbone, heads, loss) with
``torch.compile(fullgraph=True)`` when ``trainer.compile`` is on (the default on GPUs). On
a CPU the inductor compilation takes minutes of the run's two cores, so it pays only when
the faster steps win that time back. This runs the recipe (default
``pipelines/fashion_mnist/simclr.yaml``, the recipe CPU users run) in fresh processes,
alternating ``--compile`` and ``--no-compile`` over ``--rounds`` rounds, and reports for
each: the wall time, the first step (which compiles), the steady step time, and the run
length in steps from which compiling is the faster choice.

Usage::

    python benchmarks/compile_cpu.py --steps 40   # prepares 10,000 Fashion-MNIST images
    python benchmarks/compile_cpu.py --data data/fm/train --steps 40

Prints a table and writes ``benchmarks/results/compile_cpu.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compile_cpu.json"


def _step_times(out: Path) -> list[float]:
    """Per-step seconds from the run's metrics.csv (perf/step_time_s, logged every step)."""
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    return [float(r["perf/step_time_s"]) for r in rows if r.get("perf/step_time_s")]


def run(recipe: str, data: str, steps: int, compile_: bool, extra: list[str]) -> dict[str, Any]:
    """One ``fastssl pretrain`` in a fresh process; its summary and step times."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "fastssl", "pretrain", recipe, "--data", data,
            "--max-steps", str(steps), "--out", str(out), "--accelerator", "cpu",
            "--compile" if compile_ else "--no-compile",
            "--set", "trainer.log_every_n_steps=1", *extra,
        ]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            return {"compile": compile_, "error": done.stderr[-3000:]}
        summary = json.loads((out / "summary.json").read_text())
        times = _step_times(out)
    steady = sorted(times[len(times) // 2 :])[len(times[len(times) // 2 :]) // 2]  # median
    result = {
        "compile": compile_,
        "wall_s": summary["wall_s"],
        "train_s": summary["train_s"],
        "images_per_s": summary["images_per_s"],
        "precision": summary["precision"],
        "steady_step_s": steady,
        "step_times_s": times,
    }
    print(
        f"  compile={compile_!s:5s} wall {summary['wall_s']:7.1f} s  "
        f"train {summary['train_s']:7.1f} s  steady step {steady * 1000:7.1f} ms",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "pipelines/fashion_mnist/simclr.yaml"))
    parser.add_argument(
        "--data", help="image folder or shards (default: Fashion-MNIST's first 10,000 images)"
    )
    parser.add_argument("--steps", type=int, default=30, help="steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-steps", type=int, default=390, help="the recipe's full run")
    parser.add_argument("--set", action="append", default=[], help="extra recipe overrides")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    extra = [x for kv in args.set for x in ("--set", kv)]
    if args.data is None:
        root = Path(tempfile.mkdtemp(prefix="fastssl-compile-cpu-"))
        prepare = [sys.executable, str(ROOT / "tools" / "prepare_fashion_mnist.py"), str(root)]
        subprocess.run([*prepare, "--first", "--test", "10"], check=True, cwd=ROOT)
        args.data = str(root / "train")
    print(f"{args.recipe} on {args.data}, {args.steps} steps, load {os.getloadavg()[0]:.2f}")
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for flag in (False, True):
            runs[flag].append(run(args.recipe, args.data, args.steps, flag, extra))
    failed = [r["error"] for rs in runs.values() for r in rs if "error" in r]
    if failed:
        print("a run failed:", failed[0])
        sys.exit(1)
    # Each setting keeps its fastest round (load from elsewhere hits one round, not one side).
    eager, compiled = (min(runs[flag], key=lambda r: r["wall_s"]) for flag in (False, True))
    # Compilation cost: the compiled run's extra wall time beyond its steady steps.
    overhead = (compiled["wall_s"] - args.steps * compiled["steady_step_s"]) - (
        eager["wall_s"] - args.steps * eager["steady_step_s"]
    )
    gain = eager["steady_step_s"] - compiled["steady_step_s"]
    break_even = overhead / gain if gain > 0 else float("inf")
    full_eager = eager["wall_s"] + (args.run_steps - args.steps) * eager["steady_step_s"]
    full_compiled = compiled["wall_s"] + (args.run_steps - args.steps) * compiled["steady_step_s"]
    print(f"\n{'':10s} {'wall s':>8s} {'step ms':>8s}")
    for name, r in (("eager", eager), ("compiled", compiled)):
        print(f"{name:10s} {r['wall_s']:8.1f} {r['steady_step_s'] * 1000:8.1f}")
    print(
        f"steps {eager['steady_step_s'] / compiled['steady_step_s']:.2f}x faster compiled; "
        f"compilation costs {overhead:.0f} s; compile pays from {break_even:.0f} steps; "
        f"the {args.run_steps}-step run: {full_eager:.0f} s eager vs {full_compiled:.0f} s "
        f"compiled (extrapolated)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "recipe": args.recipe, "steps": args.steps, "machine": platform.processor(),
                "runs": {"eager": runs[False], "compiled": runs[True]},
                "step_speedup": eager["steady_step_s"] / compiled["steady_step_s"],
                "compile_overhead_s": overhead, "break_even_steps": break_even,
                "full_run_steps": args.run_steps,
                "full_run_s": {"eager": full_eager, "compiled": full_compiled},
            },
            indent=2,
        )
    )  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
