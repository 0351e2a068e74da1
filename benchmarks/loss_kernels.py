"""fastssl's public contrastive losses vs LightlySSL 1.6: time and memory of forward + backward.

Each measurement runs in its own subprocess, so its peak resident set size is its own:
``ru_maxrss`` after the timed forward/backward passes minus ``ru_maxrss`` after setup (inputs
built, libraries warmed up on a 64-row slice). Compared side by side in one run:

* ``lightly_ntxent`` / ``lightly_dcl``: LightlySSL 1.6 ``NTXentLoss`` / ``DCLLoss``;
* ``ours_ntxent`` / ``ours_dcl``: ``fastssl.loss.NTXentLoss`` / ``DCLLoss``, the public
  classes as users call them (they run the blockwise kernels of
  ``fastssl.kernels.contrastive`` by default, strategy "eager": gradients formed in the
  forward sweep); ``ours_ntxent_recompute``: ``ntxent_loss(..., strategy="recompute")``
  (backward recomputes the similarity tiles);
* ``lightly_bank`` / ``ours_bank``: ``NTXentLoss(memory_bank_size=(65536, D))``, MoCo's
  memory-bank path, at a batch of B / 8 (the bank, not the batch, makes its matrix);
* ``floor``: the three (2B x D) x (D x 2B) sized products any exact forward + backward needs at
  the least (``S = Q K^T``, ``dQ = G K``, ``dK = G^T Q``), on a materialised (2B, 2B) matrix;
* ``floor_tiled``: the same three products done in 256-row tiles (cache-resident), a stricter
  floor.

Usage::

    python benchmarks/loss_kernels.py            # B=4096, D=128, the curve 256 ... 32768
    python benchmarks/loss_kernels.py --quick    # B=1024 and a short curve (smoke test)

Prints two tables and writes ``benchmarks/results/loss_kernels.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "loss_kernels.json"
LIMIT_MIB = 16 * 1024
TEMPERATURE = 0.5


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


BANK_SIZE = 65536


def _loss_fn(impl: str, dim: int) -> Callable[[Any, Any], Any]:
    if impl.startswith("lightly"):
        import lightly.loss as peer

        if impl == "lightly_ntxent":
            return peer.NTXentLoss(temperature=TEMPERATURE)
        if impl == "lightly_bank":
            return peer.NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(BANK_SIZE, dim))
        if impl == "lightly_dcl":
            return peer.DCLLoss(temperature=TEMPERATURE)
    import fastssl.loss as ours
    from fastssl.loss.ntx_ent_loss import ntxent_loss

    if impl == "ours_ntxent":
        return ours.NTXentLoss(temperature=TEMPERATURE)
    if impl == "ours_bank":
        return ours.NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(BANK_SIZE, dim))
    if impl == "ours_dcl":
        return ours.DCLLoss(temperature=TEMPERATURE)
    if impl == "ours_ntxent_recompute":
        return lambda a, b: ntxent_loss(a, b, TEMPERATURE, strategy="recompute")
    raise ValueError(f"unknown implementation {impl!r}")


def _floor_step(q: Any, tiled: bool) -> None:
    import torch

    if not tiled:
        s = q @ q.T  # forward similarities; reused as the gradient G of the same shape
        _ = s @ q  # dQ = G K
        _ = s.T @ q  # dK = G^T Q
        return
    dk = torch.zeros_like(q)
    buf = q.new_empty(256 * q.shape[0])
    for r0 in range(0, q.shape[0], 256):
        q_b = q[r0 : r0 + 256]
        s = buf[: q_b.shape[0] * q.shape[0]].view(q_b.shape[0], q.shape[0])
        torch.mm(q_b, q.T, out=s)
        _ = s @ q
        dk.addmm_(s.T, q_b)


def worker(impl: str, batch: int, dim: int, reps: int) -> dict[str, Any]:
    """One measurement in this process: min time over ``reps`` and peak RSS growth."""
    import torch

    g = torch.Generator().manual_seed(0)
    if impl.endswith("_bank"):
        batch = max(1, batch // 8)  # the bank path: B / 8 queries against 65,536 negatives
        torch.manual_seed(0)  # the same random bank for both implementations
    out0 = torch.randn(batch, dim, generator=g, requires_grad=True)
    out1 = torch.randn(batch, dim, generator=g, requires_grad=True)
    loss_value = float("nan")
    if impl.startswith("floor"):
        q = torch.nn.functional.normalize(torch.cat([out0, out1]).detach(), dim=1)
        _floor_step(q[:64], impl == "floor_tiled")

        def step() -> float:
            _floor_step(q, impl == "floor_tiled")
            return float("nan")
    else:
        fn = _loss_fn(impl, dim)
        if impl.endswith("_bank"):
            with torch.no_grad():  # a bank is only updated by a loss with gradient
                fn(out0[:64], out1[:64])
        else:
            fn(out0[:64], out1[:64]).backward()  # load kernels without raising the peak

        def step() -> float:
            out0.grad = out1.grad = None
            loss = fn(out0, out1)
            loss.backward()
            return float(loss.detach())

    gc.collect()
    base = _maxrss_mib()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss_value = step()
        times.append(time.perf_counter() - t0)
    return {
        "impl": impl,
        "batch": batch,
        "dim": dim,
        "time_s": min(times),
        "times_s": times,
        "rss_growth_mib": _maxrss_mib() - base,
        "loss": loss_value,
        "threads": torch.get_num_threads(),
    }


def measure(impl: str, batch: int, dim: int, reps: int) -> dict[str, Any]:
    """Runs :func:`worker` in a fresh subprocess and returns its result."""
    cmd = [sys.executable, __file__, "--worker", impl, str(batch), str(dim), str(reps)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        return {"impl": impl, "batch": batch, "dim": dim, "error": run.stderr[-2000:]}
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"  {impl:15s} B={batch:6d}  {result['time_s']:8.3f} s  "
        f"{result['rss_growth_mib']:9.1f} MiB",
        flush=True,
    )
    return result


def _fit_limit(points: list[tuple[int, float]], power: int) -> float | None:
    """Largest B with a + c * B**power <= 16 GiB, least squares over ``points``."""
    if len(points) < 2:
        return None
    xs = [b**power for b, _ in points]
    ys = [m for _, m in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    c = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    a = my - c * mx
    if c <= 0:
        return None
    return float(((LIMIT_MIB - a) / c) ** (1 / power))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--curve", default="256,512,1024,2048,4096,8192,16384,32768")
    parser.add_argument("--lightly-max", type=int, default=8192, help="largest B for LightlySSL")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per headline impl")
    parser.add_argument("--quick", action="store_true", help="B=1024, curve up to 2048")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.curve, args.lightly_max = 1024, "256,512,1024,2048", 2048

    load_before = os.getloadavg()
    print(f"Headline: B={args.batch}, D={args.dim} (load {load_before[0]:.2f})", flush=True)
    impls = [
        "lightly_ntxent", "ours_ntxent", "ours_ntxent_recompute", "lightly_dcl", "ours_dcl",
        "lightly_bank", "ours_bank", "floor", "floor_tiled",
    ]  # fmt: skip
    # Rounds interleave the implementations, so a burst of load from other processes on a
    # shared machine hits one round, not one implementation; each keeps its fastest round.
    head: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for impl in impls:
            r = measure(impl, args.batch, args.dim, args.reps)
            best = head.get(impl)
            if best is None or ("error" not in r and r["time_s"] < best.get("time_s", 1e9)):
                r["all_rounds_s"] = [*(best or {}).get("all_rounds_s", []), r.get("time_s")]
                head[impl] = r
            else:
                best["all_rounds_s"].append(r.get("time_s"))

    curve_batches = [int(b) for b in args.curve.split(",")]
    curve: dict[str, list[dict[str, Any]]] = {"ours_ntxent": [], "lightly_ntxent": []}
    print("Curve (NT-Xent):", flush=True)
    # Per batch size, the implementations alternate over the rounds (as in the headline)
    # and each keeps its fastest round, so a burst of load skews neither side alone.
    for b in curve_batches:
        impls_b = [i for i in curve if not (i.startswith("lightly") and b > args.lightly_max)]
        if b == args.batch:
            for impl in impls_b:
                curve[impl].append(head[impl])
            continue
        # Small sizes are noisy on a shared machine: more repetitions there.
        reps = args.reps * 3 if b <= 1024 else args.reps if b <= 4096 else 2 if b <= 16384 else 1
        rounds = args.rounds if b <= 8192 else 1
        best_b: dict[str, dict[str, Any]] = {}
        for _ in range(rounds):
            for impl in impls_b:
                r = measure(impl, b, args.dim, reps)
                kept = best_b.get(impl)
                if kept is None or ("error" not in r and r["time_s"] < kept.get("time_s", 1e9)):
                    best_b[impl] = r
        for impl in impls_b:
            curve[impl].append(best_b[impl])
    load_after = os.getloadavg()

    # --- report ---
    def ok(r: dict[str, Any]) -> bool:
        return "error" not in r

    print(f"\nB={args.batch}, D={args.dim}, forward + backward, {head['floor'].get('threads')} "
          f"threads, load {load_before[0]:.2f} -> {load_after[0]:.2f}")  # fmt: skip
    print(f"{'impl':15s} {'time s':>8s} {'MiB':>9s} {'loss':>12s}  vs peer (time, memory)")
    summary: dict[str, Any] = {}
    pairs = (
        ("ours_ntxent", "lightly_ntxent"),
        ("ours_ntxent_recompute", "lightly_ntxent"),
        ("ours_dcl", "lightly_dcl"),
        ("ours_bank", "lightly_bank"),
    )
    for ours, peer in pairs:
        o, p = head[ours], head[peer]
        if not (ok(o) and ok(p)):
            print(f"{ours}: failed: {o.get('error') or p.get('error')}")
            continue
        speedup = p["time_s"] / o["time_s"]
        mem_ratio = o["rss_growth_mib"] / max(p["rss_growth_mib"], 1e-9)
        rel = abs(o["loss"] - p["loss"]) / abs(p["loss"])
        summary[ours] = {
            "speedup_vs_lightly": speedup,
            "memory_growth_ratio_vs_lightly": mem_ratio,
            "loss_rel_diff": rel,
            "time_vs_floor": o["time_s"] / head["floor"]["time_s"],
            "time_vs_floor_tiled": o["time_s"] / head["floor_tiled"]["time_s"],
        }
        for r in (p, o):
            print(f"{r['impl']:15s} {r['time_s']:8.3f} {r['rss_growth_mib']:9.1f} "
                  f"{r['loss']:12.6f}")  # fmt: skip
        print(f"  -> {speedup:.2f}x faster, {mem_ratio:.4f}x the memory growth, loss rel diff "
              f"{rel:.1e}, {summary[ours]['time_vs_floor']:.2f}x floor, "
              f"{summary[ours]['time_vs_floor_tiled']:.2f}x tiled floor")  # fmt: skip
    for f in ("floor", "floor_tiled"):
        print(f"{f:15s} {head[f]['time_s']:8.3f}")

    print(f"\n{'B':>6s} {'ours s':>8s} {'lightly s':>9s} {'speedup':>7s} {'ours MiB':>9s} "
          f"{'lightly MiB':>11s}")  # fmt: skip
    by_batch = {r["batch"]: r for r in curve["lightly_ntxent"] if ok(r)}
    for r in curve["ours_ntxent"]:
        if not ok(r):
            continue
        p = by_batch.get(r["batch"])
        peer_time = f"{p['time_s']:9.3f} {p['time_s'] / r['time_s']:6.2f}x" if p else " " * 17
        peer_mem = f"{p['rss_growth_mib']:11.1f}" if p else f"{'-':>11s}"
        print(
            f"{r['batch']:6d} {r['time_s']:8.3f} {peer_time} {r['rss_growth_mib']:9.1f} {peer_mem}"
        )
    # Fit on B >= 1024: below that the growth is allocator noise of a few MiB.
    ours_pts = [(r["batch"], r["rss_growth_mib"]) for r in curve["ours_ntxent"] if ok(r)]
    peer_pts = [(r["batch"], r["rss_growth_mib"]) for r in curve["lightly_ntxent"] if ok(r)]
    limits = {
        "ours_ntxent": _fit_limit([p for p in ours_pts if p[0] >= 1024], 1),
        "lightly_ntxent": _fit_limit([p for p in peer_pts if p[0] >= 1024], 2),
    }
    for name, limit in limits.items():
        shown = f"{limit:,.0f}" if limit else "n/a"
        print(f"largest B within 16 GiB of growth ({name}, EXTRAPOLATED from the curve): {shown}")

    # The targets of issue 39, through the public classes.
    targets: dict[str, Any] = {}
    if "ours_ntxent" in summary:
        o = summary["ours_ntxent"]
        targets["speedup_at_least_2x"] = o["speedup_vs_lightly"] >= 2
        targets["within_1.6x_of_floor"] = o["time_vs_floor"] <= 1.6
        targets["memory_growth_at_most_a_tenth"] = o["memory_growth_ratio_vs_lightly"] <= 0.1
        targets["same_value_rtol_1e-4"] = o["loss_rel_diff"] <= 1e-4
    largest = [r for r in curve["ours_ntxent"] if ok(r) and r["batch"] >= 32768]
    if largest:
        targets["b32768_under_1_gib"] = largest[0]["rss_growth_mib"] < 1024
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "config": {"batch": args.batch, "dim": args.dim, "temperature": TEMPERATURE,
                           "reps": args.reps, "rounds": args.rounds, "quick": args.quick},
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "headline": head,
                "summary": summary,
                "targets": targets,
                "curve": curve,
                "largest_batch_in_16gib_extrapolated": limits,
            },
            indent=2,
        )
    )  # fmt: skip
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(ROOT))
        impl, batch, dim, reps = sys.argv[2], *map(int, sys.argv[3:6])
        print(json.dumps(worker(impl, batch, dim, reps)))
    else:
        main()
