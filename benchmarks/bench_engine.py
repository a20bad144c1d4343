"""Speed of the batched spiral engine against a naive sequential loop and a roofline bound.

Grid (the default LR-transfer grid of `mupspec experiment spiral`): SP and muP
(Table 8); widths 64..1024; 13 LRs; 3 seeds; plain MLP of depth 4; batch 32;
500 Adam steps. Prints, side by side from one process:
  - batched engine: every (LR x seed) replica of a cell trained as one batch,
    one shard per thread (measurements every 25 steps included);
  - naive loop: one nn.Module + torch.optim.Adam run after another, no
    measurements; timed on 2 runs per cell and extrapolated to 39 runs, with
    1 thread and with --threads, the faster kept (column 'naive threads');
  - roofline: matmul FLOPs at this machine's measured matmul rate (the faster
    of MKL and oneDNN on a 2048^2 product) plus Adam's
    minimum memory traffic (read p, g, m, v; write p, m, v: 28 bytes per
    parameter per step) at its measured memory bandwidth.
Per-step times come from two run lengths (the difference removes fixed costs)
and are extrapolated to 500 steps unless --full trains every step.

    python benchmarks/bench_engine.py [--full] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mupspec.empirical.data import make_spiral  # noqa: E402  (first: sets OMP_WAIT_POLICY before torch)
import torch  # noqa: E402

from mupspec.empirical.engine import TrainConfig, train_batched, train_reference
from mupspec.empirical.kernels import ONEDNN_LINEAR
from mupspec.empirical.netplan import plan_from_spec
from mupspec.empirical.sweep import SPECS_DIR
from mupspec.resolve import load_spec

SPECS = ("sp", "mup_table8")
WIDTHS = (64, 128, 256, 512, 1024)
LRS = tuple(10 ** (-4 + k / 3) for k in range(13))
SEEDS = (0, 1, 2)
DEPTH, BATCH, STEPS = 4, 32, 500


def matmul_rates() -> dict[str, float]:
    """FLOP/s of a large float32 matmul through each kernel torch has here:
    MKL (torch's `@`) and oneDNN (the engine's kernel for large layers). The
    roofline takes the fastest: the machine's practical peak."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    kernels = {"MKL": lambda: a @ b}
    if ONEDNN_LINEAR is not None:
        kernels["oneDNN"] = lambda: ONEDNN_LINEAR(a, b, None, "none", [], "")
    rates = {}
    for name, kernel in kernels.items():
        for _ in range(2):
            kernel()
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            kernel()
        rates[name] = 2 * 2048 ** 3 * reps / (time.perf_counter() - start)
    return rates


def matmul_rate() -> float:
    return max(matmul_rates().values())


def bandwidth() -> float:
    """Bytes/s of a large out-of-cache triad c = a + b (read 2, write 1)."""
    n = 32 * 1024 * 1024
    a, b, c = torch.randn(n), torch.randn(n), torch.empty(n)
    torch.add(a, b, out=c)
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        torch.add(a, b, out=c)
    return 3 * 4 * n * reps / (time.perf_counter() - start)


def cell_cost(plan, replicas: int) -> tuple[float, float]:
    """(matmul FLOPs, optimizer bytes) of one training step of `replicas` runs."""
    flops = bytes_ = 0.0
    for i, l in enumerate(plan.layers):
        mn = l.fan_in * l.fan_out
        flops += 2 * BATCH * mn * (3 if i > 0 else 2)   # forward, weight grad, input grad (not for layer 0)
        bytes_ += 28 * (mn + l.fan_out)                  # Adam on weight and bias
    return flops * replicas, bytes_ * replicas


def per_step(fn, short: int, long: int, repeats: int = 2) -> tuple[float, float]:
    """(seconds per step, fixed seconds) from the fastest of `repeats` timings of
    fn(short) and fn(long); the minimum filters out other processes' load."""
    best = {}
    for _ in range(repeats):
        for steps in (short, long):
            start = time.perf_counter()
            fn(steps)
            best[steps] = min(best.get(steps, math.inf), time.perf_counter() - start)
    step = max(best[long] - best[short], 1e-9) / (long - short)
    return step, max(best[short] - short * step, 0.0)


def naive_time(plan, data, cfg, max_threads: int) -> tuple[float, int]:
    """(seconds for all runs of the cell one after another, the thread count that
    gave it): 2 of the 39 runs (a small and a mid LR) timed per step and
    extrapolated, with 1 thread and with max_threads, keeping the faster --
    small networks run faster on one thread than on two."""
    runs = [(LRS[2], 0), (LRS[6], 1)]
    long = 30 if plan.width >= 512 else 60
    best = (math.inf, 0)
    for threads in sorted({1, max_threads}):
        torch.set_num_threads(threads)
        step, fixed = per_step(lambda s: [train_reference(plan, data, lr, seed, cfg(s)) for lr, seed in runs],
                               10, long)
        best = min(best, ((fixed + STEPS * step) / len(runs) * len(LRS) * len(SEEDS), threads))
    torch.set_num_threads(max_threads)
    return best


def best_of(fn, repeats: int = 3) -> float:
    return max(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="train all 500 steps (no extrapolation)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_spiral()
    readings = [matmul_rates() for _ in range(3)]
    rates = {kernel: max(r[kernel] for r in readings) for kernel in readings[0]}
    rate, bw = max(rates.values()), best_of(bandwidth)
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.1f} (other processes share the cores); "
          f"matmul {rate / 1e9:.1f} GFLOP/s (best kernel; "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items()) + f"); bandwidth {bw / 1e9:.1f} GB/s")
    print(f"{'cell':<24}{'batched s':>10}{'naive s':>10}{'roofline s':>11}{'speedup':>9}{'vs roof':>9}{'naive threads':>15}")
    totals = [0.0, 0.0, 0.0]
    work = [0.0, 0.0]   # matmul FLOPs and optimizer bytes of one step of the whole grid
    replicas = len(LRS) * len(SEEDS)
    for spec_name in SPECS:
        spec = load_spec(SPECS_DIR / f"{spec_name}.mup")
        for width in WIDTHS:
            plan = plan_from_spec(spec, arch="mlp", width=width, depth=DEPTH, d_in=2, d_out=3)
            cfg = lambda steps: TrainConfig(steps=steps, batch=BATCH)
            if args.full:
                start = time.perf_counter()
                train_batched(plan, data, list(LRS), list(SEEDS), cfg(STEPS))
                batched = time.perf_counter() - start
            else:
                step, fixed = per_step(lambda s: train_batched(plan, data, list(LRS), list(SEEDS), cfg(s)), 25, 75)
                batched = fixed + STEPS * step
            naive, naive_threads = naive_time(plan, data, cfg, args.threads)
            flops, bytes_ = cell_cost(plan, replicas)
            work[0], work[1] = work[0] + flops, work[1] + bytes_
            roof = STEPS * (flops / rate + bytes_ / bw)
            for i, v in enumerate((batched, naive, roof)):
                totals[i] += v
            print(f"{spec_name + ' w' + str(width):<24}{batched:>10.1f}{naive:>10.1f}{roof:>11.1f}"
                  f"{naive / batched:>8.1f}x{batched / roof:>8.2f}x{naive_threads:>8}", flush=True)
    rate2, bw2 = best_of(matmul_rate), best_of(bandwidth)
    if rate2 > rate or bw2 > bw:   # the roofline uses the best rates seen (a lower bound on time)
        print(f"re-measured at the end: matmul {rate2 / 1e9:.1f} GFLOP/s; bandwidth {bw2 / 1e9:.1f} GB/s; "
              "roofline recomputed with the best rates")
        rate, bw = max(rate, rate2), max(bw, bw2)
        totals[2] = STEPS * (work[0] / rate + work[1] / bw)
    b, n, r = totals
    print(f"{'TOTAL (' + str(2 * len(WIDTHS) * replicas) + ' runs)':<24}{b:>10.1f}{n:>10.1f}{r:>11.1f}"
          f"{n / b:>8.1f}x{b / r:>8.2f}x")
    print(f"targets: batched >= 3x faster than naive: {'PASS' if n / b >= 3 else 'FAIL'} ({n / b:.1f}x); "
          f"within 2x of roofline: {'PASS' if b / r <= 2 else 'FAIL'} ({b / r:.2f}x)")
    if not args.full:
        print(f"(per-step times extrapolated to {STEPS} steps; run with --full to train every step)")


if __name__ == "__main__":
    main()
