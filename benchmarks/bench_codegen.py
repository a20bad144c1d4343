"""Training-step time of an MLP parametrized by the module `mupspec codegen`
generates from specs/mup_table8.mup, relative to the same architecture in
plain PyTorch SP (one Adam group) and to microsoft/mup (MuReadout + MuAdam).

All variants run interleaved in one process: each round times a block of
steps of every variant, in a fresh random order. Time is the process's CPU
time (one torch thread), which a busy shared machine disturbs far less than
wall time. A ratio is the median over rounds of that round's ratio (paired,
so slow drift cancels). Denormal floats are flushed to zero by default:
muP and SP train different values, and on CPU a step that meets
subnormal numbers (tiny Adam second moments) is slower for reasons that
have nothing to do with the code being compared (--keep-denormals to see
it; "plain, 2 groups" shows the effect without any generated code).
Target: generated <= 1.02x plain.

    .venv/bin/python benchmarks/bench_codegen.py [--rounds 30] [--steps 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mupspec.codegen import load_module  # noqa: E402
from mupspec.resolve import load_spec  # noqa: E402

D_IN, D_OUT, BATCH, DEPTH, BASE = 128, 10, 128, 3, 64


def mlp(width, readout=torch.nn.Linear):
    layers = [torch.nn.Linear(D_IN, width), torch.nn.ReLU()]
    for _ in range(DEPTH - 1):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, readout(width, D_OUT))


def load_mup():
    if importlib.util.find_spec("yaml") is None:  # mup imports PyYAML only for base-shape files
        sys.modules["yaml"] = types.ModuleType("yaml")
    try:
        import mup
    except ImportError:
        return None
    return mup


def variants(width, generated, mup):
    torch.manual_seed(0)
    plain = mlp(width)
    out = {"plain SP": (plain, torch.optim.Adam(plain.parameters(), lr=1e-3))}
    # controls: the noise floor (an identical copy), and what a second param group costs by itself
    twin = mlp(width)
    out["plain SP (copy)"] = (twin, torch.optim.Adam(twin.parameters(), lr=1e-3))
    split = mlp(width)
    matrices = [p for p in split.parameters() if p.dim() == 2 and p.shape[0] == p.shape[1]]
    rest = [p for p in split.parameters() if not (p.dim() == 2 and p.shape[0] == p.shape[1])]
    out["plain, 2 groups"] = (split, torch.optim.Adam([{"params": rest}, {"params": matrices, "lr": 2.5e-4}], lr=1e-3))
    for mode in ("hooks", "fold"):
        model = mlp(width)
        plan = generated.parametrize(model, mlp(BASE), optimizer="adam", multipliers=mode)
        out[f"generated ({mode})"] = (model, generated.make_optimizer(model, plan, lr=1e-3))
    # control: the folded model's weights with a single param group (timing only; not muP training)
    one = mlp(width)
    one.load_state_dict(out["generated (fold)"][0].state_dict())
    out["fold, 1 group"] = (one, torch.optim.Adam(one.parameters(), lr=1e-3))
    if mup is not None:
        model = mlp(width, mup.MuReadout)
        mup.set_base_shapes(model, mlp(BASE, mup.MuReadout))
        out["microsoft/mup"] = (model, mup.MuAdam(model.parameters(), lr=1e-3))
    return out


def block_time(model, opt, x, y, steps):
    start = time.process_time()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.process_time() - start) / steps


def bench(width, generated, mup, rounds, steps):
    runs = variants(width, generated, mup)
    x, y = torch.randn(BATCH, D_IN), torch.randint(0, D_OUT, (BATCH,))
    times = {name: [] for name in runs}
    for name, (model, opt) in runs.items():  # warm-up
        block_time(model, opt, x, y, steps)
    order = list(runs)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            model, opt = runs[name]
            times[name].append(block_time(model, opt, x, y, steps))
    return times


def paired_ratio(times, name, reference):
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: steadiest on a shared machine)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush subnormal floats to zero (see the module docstring)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    flushed = not args.keep_denormals and torch.set_flush_denormal(True)
    generated = load_module(load_spec(ROOT / "specs/mup_table8.mup"), "specs/mup_table8.mup")
    mup = load_mup()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP depth {DEPTH}, batch {BATCH}, "
          f"Adam; {args.rounds} interleaved rounds x {args.steps} steps, CPU time; "
          f"denormals {'flushed' if flushed else 'kept'}")
    for width in args.widths:
        times = bench(width, generated, mup, args.rounds, args.steps)
        print(f"\nwidth {width} (base {BASE})")
        print(f"  {'variant':<18} {'CPU ms/step':>11} {'vs plain':>9} {'vs mup':>8}")
        for name, t in times.items():
            vs_mup = f"{paired_ratio(times, name, 'microsoft/mup'):.3f}x" if "microsoft/mup" in times else "-"
            print(f"  {name:<18} {statistics.median(t) * 1e3:11.3f} {paired_ratio(times, name, 'plain SP'):8.3f}x"
                  f" {vs_mup:>8}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
