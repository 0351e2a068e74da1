"""Micro-benchmark: momentum (EMA) update of a ResNet-50, fastssl vs LightlySSL 1.6.

Both implementations update the 161 parameter tensors (25.6 M values) of a torchvision
ResNet-50 (random weights) in place, in the same process, alternating so that both see
the same machine state. A naive per-parameter Python loop is timed too, for scale.
The parameter lists are collected inside the timed call, as in a training step.

fastssl does one ``torch._foreach_lerp_`` (reads ema and param, writes ema: 3 streams);
LightlySSL does ``_foreach_mul_`` then ``_foreach_add_`` (5 streams).

Usage:
    python benchmarks/update_momentum.py [--runs 50] [--device cpu cuda]
        [--out benchmarks/results/update_momentum.json]

Prints a table and writes JSON (one record per device and implementation).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from lightly.models.utils import update_momentum as lightly_update_momentum
from torch import nn

from fastssl.models.utils import update_momentum as fastssl_update_momentum

MOMENTUM = 0.996


@torch.no_grad()
def naive_update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """One multiply-add per parameter tensor: the textbook loop."""
    for p, e in zip(model.parameters(), model_ema.parameters(), strict=True):
        e.mul_(m).add_(p, alpha=1.0 - m)


IMPLEMENTATIONS: dict[str, Callable[[nn.Module, nn.Module, float], None]] = {
    "fastssl (foreach lerp)": fastssl_update_momentum,
    "lightly 1.6 (foreach mul+add)": lightly_update_momentum,
    "naive loop (mul_+add_)": naive_update_momentum,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(device: torch.device, runs: int, warmup: int) -> list[dict]:
    """Times every implementation on ``device``; returns one record per implementation."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(device)
    model_ema = copy.deepcopy(model)
    params = list(model.parameters())
    numel = sum(p.numel() for p in params)
    times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for fn in IMPLEMENTATIONS.values():
        for _ in range(warmup):
            fn(model, model_ema, MOMENTUM)
    _sync(device)
    # Interleave the implementations run by run, so drifts in clock or load hit all alike.
    for _ in range(runs):
        for name, fn in IMPLEMENTATIONS.items():
            _sync(device)
            start = time.perf_counter()
            fn(model, model_ema, MOMENTUM)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    lightly_median = statistics.median(times["lightly 1.6 (foreach mul+add)"])
    records = []
    for name, samples in times.items():
        median = statistics.median(samples)
        records.append(
            {
                "device": str(device),
                "device_name": (
                    torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else platform.processor()
                ),
                "implementation": name,
                "median_ms": median * 1e3,
                "min_ms": min(samples) * 1e3,
                "max_ms": max(samples) * 1e3,
                "runs": runs,
                "speedup_vs_lightly": lightly_median / median,
                "num_tensors": len(params),
                "num_values": numel,
                "threads": torch.get_num_threads(),
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per implementation")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument(
        "--device",
        nargs="+",
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
        help="devices to benchmark",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "update_momentum.json",
        help="JSON output path",
    )
    args = parser.parse_args()

    records: list[dict] = []
    for name in args.device:
        records += bench_device(torch.device(name), args.runs, args.warmup)

    header = (
        f"{'device':<8} {'implementation':<32} {'median ms':>10} {'min ms':>9} {'vs lightly':>10}"
    )
    print(
        f"update_momentum, ResNet-50 ({records[0]['num_tensors']} tensors, "
        f"{records[0]['num_values'] / 1e6:.1f} M values), median of {args.runs} runs"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        print(
            f"{r['device']:<8} {r['implementation']:<32} {r['median_ms']:>10.3f} "
            f"{r['min_ms']:>9.3f} {r['speedup_vs_lightly']:>9.2f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "update_momentum",
        "model": "torchvision.models.resnet50()",
        "momentum": MOMENTUM,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": records}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
