"""Speed of the batched GPT engine against a naive sequential loop, per cell of
a `mupspec experiment transformer` grid (the default grid unless --quick).

For every cell (spec x width x depth, all its LR x seed replicas) it prints,
side by side from one process, interleaved cell by cell:
  - batched: the engine training every replica of the cell (the cells of one
    shape merged, as the study trains them) as its default does: on a CPU
    split into --threads shards side by side, each one computation on one
    thread;
  - naive: one nn.Module + the generated module's torch.optim.AdamW, one
    replica after another, with 1 thread and with --threads; the faster kept;
  - the batched throughput as a fraction of this machine's measured matmul
    rate (a 2048^2 float32 product with --threads), FLOPs per step counted with
    torch.utils.flop_counter on one replica's training step (forward and
    backward) times the replicas;
  - the peak memory (resident set on CPU, allocated memory on CUDA).
Per-step times are steady-state: steps 2..N of a short run (--steps), set-up,
evaluation and coordinate statistics excluded, then extrapolated to the grid's
step count for the totals. Wall-clock times decide (the faster naive thread
count, the speed-up); the CPU seconds this process used per step are printed
beside them, since on a shared machine they move less with the load.

    python benchmarks/bench_lm_engine.py [--quick] [--steps 7] [--threads 2] [--device cpu] [--optimizer]
    python benchmarks/bench_lm_engine.py --estimate [--grid full] [--replicas 2] [--steps 5]

--optimizer times only the engine's AdamW step per cell (CPU seconds), the
torch._foreach form against the same arithmetic one parameter at a time.

--estimate times the engine alone on a few replicas of every shape of a grid
(all three parts: width, depth, transfer) and extrapolates its training time
on this machine: per shape, the wall seconds of one replica step (--replicas
replicas trained as the study trains them, divided by their number) times
the shape's runs and the grid's steps. At large widths a replica step costs
the same whatever the replica count (docs/lm-study.md, section 8); at small
widths more replicas share the overhead, so there the estimate is high.
Shapes that differ only in a hyperparameter's value (the transfer part) are
timed once. It also counts the training FLOPs and the resident memory a
replica adds, which the study needs for all of a shape's runs at once.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import mupspec.empirical  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mupspec.empirical import lm_study  # noqa: E402
from mupspec.empirical.lm_engine import (BatchedAdamW, LMTrainConfig, Shape, build, spec_module,  # noqa: E402
                                         train_runs)
from mupspec.empirical.text import TextConfig, load_text, train_starts, windows  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str) -> float:
    """FLOP/s of a 2048^2 float32 matmul, best of 10."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    best = float("inf")
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 ** 3 / best


def step_flops(cell, grid, base, data) -> float:
    """FLOPs of one replica's training step (forward + backward), counted by torch."""
    model, _ = build(cell.spec, Shape(cell.width, cell.depth, grid.heads, grid.context), base, 0)
    x, y = windows(data.train, train_starts(data, 1, grid.batch, 0)[0], grid.context)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    return float(counter.get_total_flops())


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def batched_step_time(cell, grid, base, data, cfg, device, pairs=None) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the engine on the cell's runs (or these
    `pairs` of its shape), steps 2..N-1."""
    stamps = {}

    def on_step(step):
        sync(device)
        stamps[step] = clocks()
    train_runs(cell.spec, lm_study.shape_of(cell, grid), base, data, pairs or cell.runs(), cfg, device=device,
               on_step=on_step, hypers=lm_study.arch_hypers(cell.arch) or None)
    return tuple((b - a) / (cfg.steps - 2) for a, b in zip(stamps[1], stamps[cfg.steps - 1]))


def naive_step_time(cell, grid, base, data, cfg, device) -> tuple[float, float]:
    """(wall, CPU) seconds: the sum over replicas of one plain training step (steps 2..N-1 of each run)."""
    P, total = spec_module(cell.spec), [0.0, 0.0]
    for lr, seed in cell.runs():
        model, plan = build(cell.spec, Shape(cell.width, cell.depth, grid.heads, grid.context), base, seed)
        model.to(device)
        opt = P.make_optimizer(model, plan, lr=lr, weight_decay=cfg.weight_decay, eps=cfg.eps, betas=cfg.betas)
        starts = train_starts(data, cfg.steps, cfg.batch, seed)
        stream = data.train.to(device)
        for t in range(cfg.steps - 1):
            if t == 1:
                sync(device)
                start = clocks()
            x, y = windows(stream, starts[t].to(device), grid.context)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(device)
        for i, (a, b) in enumerate(zip(start, clocks())):
            total[i] += (b - a) / (cfg.steps - 2)
    return tuple(total)


def per_tensor_adamw_step(opt, params: dict, grads: dict, scale: float) -> None:
    """The optimizer step the engine had before torch._foreach: the same AdamW, one
    parameter at a time (for --optimizer's comparison)."""
    opt.t += 1
    b1, b2 = opt.cfg.betas
    bc1, bc2_sqrt = 1 - b1 ** opt.t, (1 - b2 ** opt.t) ** 0.5
    with torch.no_grad():
        for n, p in params.items():
            lr, (_, wd_f, eps_f) = opt.lr[n] * scale, opt.factors[n]
            if opt.cfg.weight_decay * wd_f:
                p.mul_(1 - lr * opt.cfg.weight_decay * wd_f)
            m, v = opt.m[n], opt.v[n]
            m.lerp_(grads[n], 1 - b1)
            v.mul_(b2).addcmul_(grads[n], grads[n], value=1 - b2)
            p.sub_(m / (v.sqrt() / bc2_sqrt).add_(opt.cfg.eps * eps_f) * (lr / bc1))


def optimizer_step_times(cell, grid, base, steps: int = 20) -> tuple[float, float]:
    """CPU seconds of one BatchedAdamW step over the cell's replicas: (foreach, per tensor)."""
    model, plan = build(cell.spec, Shape(cell.width, cell.depth, grid.heads, grid.context), base, 0)
    R = len(cell.runs())
    params = {n: p.detach().expand(R, *p.shape).clone() for n, p in model.named_parameters()}
    grads = {n: 1e-3 * torch.randn_like(p) for n, p in params.items()}
    factors = {r.name: (r.lr_factor, r.wd_factor, r.eps_factor) for r in plan}
    times = []
    for step in (BatchedAdamW.step, per_tensor_adamw_step):
        opt = BatchedAdamW(params, factors, [lr for lr, _ in cell.runs()], LMTrainConfig())
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for _ in range(steps):
                step(opt, params, grads, 0.5)
            best = min(best, (time.process_time() - start) / steps)
        times.append(best)
    return tuple(times)


def estimate(grid, base, data, args) -> None:
    """The grid's training time on this machine, extrapolated shape by shape."""
    from collections import defaultdict

    cells = lm_study.by_shape(lm_study.width_cells(grid) + lm_study.depth_cells(grid)
                              + lm_study.transfer_cells(grid))
    alike = defaultdict(list)   # a hyperparameter's value changes no shape: timed once
    for cell in cells:
        alike[(cell.spec, cell.arch.split("+")[0], cell.width, cell.depth)].append(cell)
    cfg = LMTrainConfig(steps=args.steps, batch=grid.batch, warmup=1, log_every=args.steps)
    print(f"grid: {args.grid}, {len(cells)} shapes, {sum(len(c.runs()) for c in cells)} runs, {grid.steps} steps each, "
          f"batch {grid.batch} x context {grid.context}; device {args.device}, {args.threads} threads; "
          f"{args.replicas} replicas timed per shape")
    print(f"{'shape':<28} {'shapes':>6} {'runs':>5} {'s/replica step':>14} {'TFLOP':>9} {'minutes':>9} "
          f"{'GiB/replica':>11} {'GiB shape':>9}")
    hours = flops = memory = 0.0
    for (spec, arch, width, depth), group in sorted(alike.items(), key=lambda kv: kv[0][2:]):
        cell = group[0]
        pairs = [(lr, seed) for lr in cell.lrs for seed in range(args.replicas)][:args.replicas]
        before = reset_peak_memory(args.device)
        step = batched_step_time(cell, grid, base, data, cfg, args.device, pairs)[0] / len(pairs)
        per_replica = (since_reset_peak_gib(args.device) - before) / len(pairs)
        runs = sum(len(c.runs()) for c in group)
        tflop = step_flops(cell, grid, base, data) * runs * grid.steps / 1e12
        h = step * runs * grid.steps / 3600
        hours, flops = hours + h, flops + tflop
        label = f"{spec}-{arch}-w{width}-d{depth}"
        biggest = max(len(c.runs()) for c in group)   # one shape's runs train at once
        memory = max(memory, before + per_replica * biggest)
        print(f"{label:<28} {len(group):>6} {runs:>5} {step:>14.4f} {tflop:>9.1f} {h * 60:>9.1f} "
              f"{per_replica:>11.3f} {before + per_replica * biggest:>9.2f}", flush=True)
    print(f"total: {hours:.2f} hours of training on this machine ({hours * 60:.1f} min, {hours / 24:.1f} days), "
          f"{flops / 1e3:.3f} PFLOP, "
          f"{flops * 1e12 / (hours * 3600) / 1e9:.0f} GFLOP/s on average")
    print(f"memory: GiB/replica is what the peak grew per timed replica over the memory held before the shape; "
          f"GiB shape, held + that times the runs of one shape (trained at once): at most {memory:.1f} GiB")


def reset_peak_memory(device: str) -> float:
    """Start a new peak; the memory held now, GiB (on Linux, VmHWM is reset by clear_refs 5)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2 ** 30
    Path("/proc/self/clear_refs").write_text("5")
    return _status_gib("VmRSS")


def since_reset_peak_gib(device: str) -> float:
    return peak_memory_gib(device) if device.startswith("cuda") else _status_gib("VmHWM")


def _status_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2 ** 20   # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the --quick grid instead of the default grid")
    ap.add_argument("--grid", choices=("quick", "default", "full"), help="the grid (default: default; --quick: quick)")
    ap.add_argument("--estimate", action="store_true",
                    help="time the engine on --replicas replicas of each shape and extrapolate the grid's time")
    ap.add_argument("--replicas", type=int, default=2, help="replicas timed per shape with --estimate")
    ap.add_argument("--steps", type=int, default=7, help="steps per timed run (>= 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--optimizer", action="store_true",
                    help="only the optimizer step per cell: torch._foreach against one parameter at a time")
    args = ap.parse_args()
    args.grid = args.grid or ("quick" if args.quick else "default")
    grid = {"quick": lm_study.QUICK, "default": lm_study.DEFAULT, "full": lm_study.FULL}[args.grid]
    data = load_text(TextConfig(context=grid.context))
    base = Shape(grid.base_width, grid.base_depth, grid.heads, grid.context)
    cfg = LMTrainConfig(steps=args.steps, batch=grid.batch, warmup=1, log_every=args.steps)
    cells = sorted(lm_study.by_shape(lm_study.width_cells(grid) + lm_study.depth_cells(grid)), key=lm_study._cost)
    torch.set_num_threads(args.threads)
    if args.estimate:
        return estimate(grid, base, data, args)
    if args.optimizer:
        for cell in cells:
            foreach, per_tensor = optimizer_step_times(cell, grid, base)
            print(f"{cell.key:<22} {len(cell.runs()):>4} replicas: AdamW step {foreach * 1e3:.2f} ms CPU (foreach) "
                  f"against {per_tensor * 1e3:.2f} ms (per tensor), {per_tensor / foreach:.2f}x", flush=True)
        return
    rate = matmul_rate(args.device)
    print(f"grid: {'quick' if args.quick else 'default'}, {len(cells)} cells, {grid.steps} steps each; "
          f"device {args.device}, {args.threads} threads; matmul rate {rate / 1e9:.1f} GFLOP/s (2048^2 float32)")
    t = args.threads
    print(f"{'cell':<22} {'reps':>4} {'batched s/step':>14} {'naive 1t':>9} {f'naive {t}t':>9} {'speed-up':>8} "
          f"{'GFLOP/step':>10} {'of matmul':>9} | CPU s/step: {'batched':>8} {'naive 1t':>8} {'ratio':>6}")
    print(f"(batched: {t} shards x 1 thread on a CPU, 1 computation on a GPU)")
    totals = {"batched": 0.0, "naive": 0.0, "batched_cpu": 0.0, "naive_cpu": 0.0}
    for cell in cells:
        flops = step_flops(cell, grid, base, data) * len(cell.runs())
        batched, batched_cpu = batched_step_time(cell, grid, base, data, cfg, args.device)
        naive = {}
        for threads in sorted({1, t}):
            torch.set_num_threads(threads)
            naive[threads] = naive_step_time(cell, grid, base, data, cfg, args.device)
        torch.set_num_threads(t)
        best_naive = min(wall for wall, _ in naive.values())
        totals["batched"] += batched * grid.steps
        totals["naive"] += best_naive * grid.steps
        totals["batched_cpu"] += batched_cpu * grid.steps
        totals["naive_cpu"] += naive[1][1] * grid.steps
        print(f"{cell.key:<22} {len(cell.runs()):>4} {batched:>14.4f} {naive[1][0]:>9.4f} {naive[t][0]:>9.4f} "
              f"{best_naive / batched:>7.2f}x {flops / 1e9:>10.2f} {flops / batched / rate:>8.1%} | "
              f"{'':>11} {batched_cpu:>8.4f} {naive[1][1]:>8.4f} {naive[1][1] / batched_cpu:>5.2f}x", flush=True)
    print(f"total training steps of the grid (extrapolated to {grid.steps} steps per cell): batched "
          f"{totals['batched'] / 60:.1f} min, naive {totals['naive'] / 60:.1f} min, "
          f"speed-up {totals['naive'] / totals['batched']:.2f}x; CPU time: batched "
          f"{totals['batched_cpu'] / 60:.1f} min, naive (1 thread) {totals['naive_cpu'] / 60:.1f} min, "
          f"ratio {totals['naive_cpu'] / totals['batched_cpu']:.2f}x")
    print(f"peak memory: {peak_memory_gib(args.device):.2f} GiB ({'allocated on the GPU' if args.device != 'cpu' else 'resident set of this process'})")


if __name__ == "__main__":
    main()
